//! The Yocto layer stays in step with the code: its crate list and its pinned SRCREV match
//! Cargo.lock, the license checksum matches the license line of Cargo.toml, and the GStreamer
//! options the recipe's RDEPENDS need are switched on by the layer's bbappends.

use std::process::Command;

const RECIPE: &str = "yocto/meta-callbox/recipes-multimedia/callbox/callbox_0.1.0.bb";

#[test]
fn the_crate_list_matches_cargo_lock() {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/yocto-crates.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn the_recipe_names_the_license_line_and_the_layer_is_for_scarthgap() {
    let root = env!("CARGO_MANIFEST_DIR");
    let recipe = std::fs::read_to_string(format!("{root}/{RECIPE}")).unwrap();
    let chk = recipe.lines().find(|l| l.starts_with("LIC_FILES_CHKSUM")).unwrap();
    let line: usize = chk.split("beginline=").nth(1).unwrap().split(';').next().unwrap().parse().unwrap();
    let md5 = chk.split("md5=").nth(1).unwrap().trim_end_matches('"');
    let cargo = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    let text = format!("{}\n", cargo.lines().nth(line - 1).unwrap());
    assert!(text.starts_with("license = "), "line {line} of Cargo.toml is {text:?}");
    let out = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let mut child = out;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let sum = String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(sum.split_whitespace().next().unwrap(), md5, "update LIC_FILES_CHKSUM in {RECIPE}");
    for needed in [
        "inherit cargo cargo-update-recipe-crates",
        "SYSTEMD_AUTO_ENABLE:${PN} = \"enable\"",
        "require ${BPN}-crates.inc",
    ] {
        assert!(recipe.contains(needed), "{needed}");
    }
    assert!(!recipe.contains("github.com/callbox"), "a placeholder address in the recipe");
    let layer = std::fs::read_to_string(format!("{root}/yocto/meta-callbox/conf/layer.conf")).unwrap();
    assert!(layer.contains("LAYERSERIES_COMPAT_callbox = \"scarthgap\""));
}

/// Every GStreamer package in RDEPENDS that poky's default PACKAGECONFIG does not build has
/// its option switched on by a bbappend of the layer.
#[test]
fn the_bbappends_build_the_plugins_the_recipe_needs() {
    let root = env!("CARGO_MANIFEST_DIR");
    let recipe = std::fs::read_to_string(format!("{root}/{RECIPE}")).unwrap();
    let dir = format!("{root}/yocto/meta-callbox/recipes-multimedia/gstreamer");
    for (package, recipe_name, option) in [
        ("gstreamer1.0-plugins-base-opus", "gstreamer1.0-plugins-base", "opus"),
        ("gstreamer1.0-plugins-bad-kms", "gstreamer1.0-plugins-bad", "kms"),
        ("gstreamer1.0-plugins-bad-webrtcdsp", "gstreamer1.0-plugins-bad", "webrtcdsp"),
    ] {
        assert!(recipe.contains(package), "{package} not in RDEPENDS");
        let append = std::fs::read_to_string(format!("{dir}/{recipe_name}_%.bbappend")).unwrap();
        let line = append.lines().find(|l| l.starts_with("PACKAGECONFIG:append = ")).unwrap();
        assert!(line.split('"').nth(1).unwrap().split_whitespace().any(|o| o == option), "{option} in {line}");
    }
}
