//! The command line: `token`, `check-config`, and the server's config errors and SIGTERM.

mod common;

use std::process::Command;

use common::*;

fn callbox(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callbox")).args(args).output().unwrap()
}

#[test]
fn token_command_mints_a_verifiable_token() {
    let out = callbox(&[
        "token",
        "--app-id",
        "1234",
        "--secret",
        SECRET,
        "--user",
        "door",
        "--room",
        "lobby",
        "--ttl",
        "60",
        "--privileges",
        "login,publish",
        "--streams",
        "a,b",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = String::from_utf8(out.stdout).unwrap();
    let key = callbox::auth::parse_secret(SECRET).unwrap();
    let c = callbox::auth::verify_login(Some(&key), 1234, t.trim(), "door", "lobby", callbox::auth::unix_now(), 86_400)
        .unwrap();
    assert_eq!(c.privileges, vec!["login", "publish"]);
    assert_eq!(c.streams, Some(vec!["a".to_string(), "b".to_string()]));
    assert!(c.exp <= callbox::auth::unix_now() + 60);
    let bad = callbox(&["token", "--app-id", "1", "--secret", "abc", "--user", "u"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("64 hex"));
    let bad = callbox(&["token", "--app-id", "1", "--secret", SECRET, "--user", "u", "--privileges", "login,fly"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("fly"));
}

#[test]
fn check_config_names_the_key_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/server.toml");
    let ok = callbox(&["check-config", example]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cases = [
        ("[session]\ngrace_sec = 5\n", "grace_sec"),
        ("[session]\ngrace_secs = \"soon\"\n", "grace_secs"),
        ("[[apps]]\napp_id = 1\nsecret = \"short\"\n", "apps[0].secret"),
        ("listen = \"nowhere\"\n", "listen"),
        ("[limits]\nmessages_per_sec = 0\n", "limits.messages_per_sec"),
    ];
    for (text, key) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let out = callbox(&["check-config", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(78), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
        let out = callbox(&["server", "--config", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(78), "server refuses {text}");
    }
}

#[test]
fn the_public_demo_secret_and_a_reachable_dev_mode_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("demo.toml");
    std::fs::write(&f, format!("[[apps]]\napp_id = 1234\nsecret = \"{}\"\n", callbox::server::DEV_SECRET)).unwrap();
    let out = callbox(&["check-config", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apps[0].secret") && err.contains("openssl rand -hex 32"), "{err}");
    let out = callbox(&["server", "--config", f.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(78), "the server refuses the demo secret without --dev");
    // --dev hands out door tokens: only on loopback, unless forced.
    let out = callbox(&["server", "--dev", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen") && err.contains("--dev-public"), "{err}");
    // The shipped example has no secret at all: the operator makes one.
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/server.toml")).unwrap();
    assert!(!example.contains(callbox::server::DEV_SECRET) && example.contains("openssl rand -hex 32"));
}

#[test]
fn device_example_configs_pass_check_config_and_bad_ones_name_the_key() {
    for name in ["dev.toml", "raspberry-pi.toml", "jetson.toml"] {
        let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = callbox(&["check-config", &path]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let out = callbox(&["check-config", "--kind", "device", &path]);
        assert!(out.status.success(), "{name} as --kind device");
    }
    let dev = std::fs::read_to_string(format!("{}/configs/dev.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, key) in [
        ("mode = \"intercom\"", "mode = \"conference\"", "call.mode"),
        ("source = \"test\"\nwidth", "source = \"usb\"\nwidth", "video.source"),
        ("backend = \"sim\"", "backend = \"wiringpi\"", "gpio.backend"),
        ("fps = 15", "fps = \"fast\"", "fps"),
        ("[display]", "[screen]", "screen"),
    ] {
        assert!(dev.contains(from), "{from}");
        let f = dir.path().join("device.toml");
        std::fs::write(&f, dev.replacen(from, to, 1)).unwrap();
        let out = callbox(&["check-config", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(78), "{to}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[tokio::test]
async fn server_exits_cleanly_on_sigterm_and_tells_clients() {
    let mut server = Server::start("");
    let mut raw = Raw::connect(&server).await;
    assert!(matches!(raw.login("door", "lobby").await, callbox::proto::ServerMsg::LoginOk { .. }));
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    let m = raw.recv().await;
    assert!(
        matches!(m, callbox::proto::ServerMsg::Error { code: callbox::proto::ErrorCode::SERVER_SHUTTING_DOWN, .. }),
        "{m:?}"
    );
}

#[test]
fn demo_runs_two_devices_that_see_and_hear_each_other() {
    let out = callbox(&["demo", "--peers", "2", "--duration", "7", "--listen", "127.0.0.1:0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(text.matches("media flowing from 1 of 1 other devices").count(), 2, "{text}");
    assert!(text.contains("encodes with x264enc"), "{text}");
    assert_eq!(text.matches("first frame").count(), 2, "{text}");
}
