//! The shipped binary carries no test lab: the fault lab (network namespaces, nftables) and
//! the benchmark program live in crates that `callbox` does not depend on.

#[test]
fn the_callbox_binary_contains_no_fault_lab() {
    let bin = std::fs::read(env!("CARGO_BIN_EXE_callbox")).unwrap();
    // std's substring search (built optimised even in a debug test build): a byte-window scan
    // of a debug binary takes minutes.
    let text = String::from_utf8_lossy(&bin);
    for needle in ["callbox_fault", "netns", "ip_forward", "callbox-bench-turn"] {
        assert!(!text.contains(needle), "`{needle}` is in the callbox binary: the lab is linked in");
    }
}

#[test]
fn the_callbox_binary_has_no_bench_command() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_callbox")).args(["bench", "--help"]).output().unwrap();
    assert!(!out.status.success(), "the callbox binary still has a bench command");
}
