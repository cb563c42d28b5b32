//! The shipped systemd units pass `systemd-analyze verify` (with ExecStart pointed at the
//! binary under test, since /usr/bin/callbox is not installed here).

use std::process::Command;

#[test]
fn server_unit_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/callbox-server.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/callbox server"));
    let path = dir.path().join("callbox-server.service");
    std::fs::write(&path, unit.replace("/usr/bin/callbox", env!("CARGO_BIN_EXE_callbox"))).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (package systemd, installed by scripts/install-deps.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("callbox-server.service"), "warnings about the unit: {stderr}");
}
