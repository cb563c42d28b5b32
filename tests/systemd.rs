//! The shipped systemd units pass `systemd-analyze verify` (with ExecStart pointed at the
//! binary under test, since /usr/bin/callbox is not installed here).

use std::process::Command;

#[test]
fn server_unit_verifies_clean_and_can_read_its_config_and_keep_state() {
    let unit = verify("callbox-server.service");
    for line in [
        "ExecStart=/usr/bin/callbox server --config /etc/callbox/server.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "DynamicUser=yes",
        // /etc/callbox is 0750 root:callbox (tmpfiles): the group is what lets it read.
        "SupplementaryGroups=callbox",
        "StateDirectory=callbox-server",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
}

/// `systemd-analyze security --offline` scores the server unit 2.5 or better (lower is
/// safer; it was 6.5 before the sandboxing keys).
#[test]
fn the_server_unit_is_sandboxed() {
    let score = exposure("callbox-server.service");
    assert!(score <= 2.5, "exposure {score}");
}

/// The device unit too (it was 7.0): closed device policy with the classes it opens, no
/// capabilities, the system-service syscall set.
#[test]
fn the_device_unit_is_sandboxed_and_allows_only_its_device_classes() {
    let score = exposure("callbox.service");
    assert!(score <= 2.5, "exposure {score}");
    let unit = std::fs::read_to_string(format!("{}/systemd/callbox.service", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let allowed: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("DeviceAllow=")).collect();
    for class in ["char-video4linux rw", "char-alsa rw", "char-gpiochip rw", "char-drm rw"] {
        assert!(allowed.contains(&class), "{class} not allowed: {allowed:?}");
    }
    assert!(unit.lines().any(|l| l == "DevicePolicy=closed"));
}

/// The per-board drop-ins hold only a [Service] section with DeviceAllow lines (they are
/// installed as /etc/systemd/system/callbox.service.d/board.conf).
#[test]
fn the_board_drop_ins_only_add_device_nodes() {
    for board in ["raspberry-pi", "jetson"] {
        let path = format!("{}/systemd/boards/{board}.conf", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let keys: Vec<&str> = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
        assert_eq!(keys[0], "[Service]", "{path}");
        for k in &keys[1..] {
            let node = k.strip_prefix("DeviceAllow=").unwrap_or_else(|| panic!("{path}: {k}"));
            assert!(node.ends_with(" rw") && (node.starts_with("/dev/") || node.starts_with("char-")), "{path}: {k}");
        }
    }
}

/// The unit's overall exposure from `systemd-analyze security --offline`.
fn exposure(name: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit.replace("/usr/bin/callbox", env!("CARGO_BIN_EXE_callbox"))).unwrap();
    let out = Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.split(&format!("Overall exposure level for {name}: ")).nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in {text}"))
}

fn verify(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(format!("{}/systemd/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, unit.replace("/usr/bin/callbox", env!("CARGO_BIN_EXE_callbox"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains(name), "warnings about the unit: {stderr}");
    unit
}

#[test]
fn device_unit_verifies_clean_with_notify_watchdog_and_hardening() {
    let unit = verify("callbox.service");
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/callbox device --config /etc/callbox/device.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "Restart=always",
        "RestartPreventExitStatus=78",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "SupplementaryGroups=video audio gpio",
        "RuntimeDirectory=callbox",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(line)), "missing {line}");
    }
    assert!(!unit.lines().any(|l| l.starts_with("PrivateDevices=yes")), "the daemon needs its devices");
}

#[test]
fn sysusers_and_tmpfiles_snippets_create_the_user_and_directories() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let dir = env!("CARGO_MANIFEST_DIR");
    let st = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.path().display()))
        .arg(format!("{dir}/systemd/callbox.sysusers"))
        .status()
        .unwrap();
    assert!(st.success());
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("callbox:")), "{passwd}");
    for g in ["video", "audio", "gpio"] {
        let line = group.lines().find(|l| l.starts_with(&format!("{g}:"))).unwrap_or_else(|| panic!("{group}"));
        assert!(line.ends_with("callbox") || line.contains("callbox,") || line.contains(",callbox"), "{line}");
    }
    let st = Command::new("systemd-tmpfiles")
        .args(["--create", &format!("--root={}", root.path().display())])
        .arg(format!("{dir}/systemd/callbox.tmpfile"))
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::PermissionsExt;
    for d in ["etc/callbox", "run/callbox", "var/lib/callbox"] {
        let mode = std::fs::metadata(root.path().join(d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o750, "{d}");
    }
}
