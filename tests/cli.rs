//! The command line: `token`, `check-config`, and the server's config errors and SIGTERM.

mod common;

use std::process::Command;

use common::*;

fn callbox(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_callbox")).args(args).output().unwrap()
}

/// A field report names the exact build: version and commit, in --version and /healthz.
#[tokio::test]
async fn the_build_identity_is_in_version_and_healthz() {
    let out = callbox(&["--version"]);
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(v, format!("callbox {}", callbox::BUILD));
    assert!(v.contains(env!("CARGO_PKG_VERSION")) && v.contains(" (") && v.ends_with(')'), "{v}");
    assert!(!callbox::BUILD.contains("(unknown)"), "built from git here: {v}");
    let server = Server::start("");
    let (status, body) = http(&server.http(), "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(h["version"], callbox::BUILD);
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
        ("[media]\nturn_urls = [\"turns:relay.example.com:443\"]\n", "media.turn_secret"),
        ("[media]\nturn_urls = [\"relay.example.com\"]\nturn_secret = \"s\"\n", "media.turn_urls[0]"),
        ("[media]\nshards = 65\n", "media.shards"),
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
    // Uncommenting the app the way the README (and the virtual board) does gives a valid
    // config: the commented examples of other sections must not turn into keys of theirs.
    let enabled = example
        .lines()
        .map(|l| match l {
            "# [[apps]]" => "[[apps]]".to_string(),
            "# app_id = 1234" => "app_id = 1234".to_string(),
            l if l.starts_with("# secret = ") => format!("secret = \"{}\"", "ab".repeat(32)),
            l => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, enabled).unwrap();
    let out = callbox(&["check-config", "--kind", "server", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn device_example_configs_pass_check_config_and_bad_ones_name_the_key() {
    for name in ["dev.toml", "raspberry-pi.toml", "jetson.toml"] {
        let path = format!("{}/configs/{name}", env!("CARGO_MANIFEST_DIR"));
        let out = callbox(&["check-config", &path]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let out = callbox(&["check-config", "--kind", "device", &path]);
        assert!(out.status.success(), "{name} as --kind device");
        // The board examples' placeholders are WARNs (exit 0), one line each.
        let err = String::from_utf8_lossy(&out.stderr);
        let placeholders = err.lines().filter(|l| l.starts_with("WARN: ") && l.contains("placeholder")).count();
        assert_eq!(placeholders, if name == "dev.toml" { 0 } else { 2 }, "{name}: {err}");
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

/// SIGHUP re-reads the configuration: apps come and go (a removed app's sessions end), a bad
/// file leaves the running configuration in place, and the server never dies of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_apps_and_survives_a_bad_file() {
    use callbox::engine::{Auth, Engine, EngineEvent, EngineProfile, RoomStateReason};
    let mut server = Server::start("");
    let (other, rx) = Engine::create({
        let mut p = EngineProfile::new(OTHER_APP, Auth::AppSign(OTHER_SECRET.into()), server.url());
        p.reconnect = fast_policy();
        p
    })
    .unwrap();
    let mut other_ev = Events { rx, seen: Vec::new() };
    other.login_room("lobby", user("door"), notify()).await.unwrap();

    let new_secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let cfg = std::fs::read_to_string(server.config_path()).unwrap();
    let rewritten = cfg.replace(
        &format!("app_id = {OTHER_APP}\nsecret = \"{OTHER_SECRET}\""),
        &format!("app_id = 77\nsecret = \"{new_secret}\""),
    );
    assert_ne!(rewritten, cfg);
    std::fs::write(server.config_path(), rewritten).unwrap();
    server.signal("HUP");
    // App 99 is gone: its session ends. App 77 is there: a login with its secret works.
    other_ev
        .wait("kicked with the app", |e| {
            matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::KickOut, .. })
        })
        .await;
    let login77 = || async {
        let (e, _rx) = Engine::create(EngineProfile::new(77, Auth::AppSign(new_secret.into()), server.url())).unwrap();
        let r = e.login_room("lobby", user("gate"), notify()).await;
        e.destroy().await;
        r
    };
    login77().await.expect("app 77 after SIGHUP");

    // A broken file: the server keeps running with what it had.
    std::fs::write(server.config_path(), "listen = [this is not toml").unwrap();
    server.signal("HUP");
    server.signal("HUP");
    login77().await.expect("still app 77 after a bad reload");
    assert!(server.alive(), "SIGHUP must not kill the server");
    other.destroy().await;
}

#[test]
fn desk_password_hashes_a_password_from_stdin_and_refuses_a_short_one() {
    use std::io::Write;
    let run = |input: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
            .arg("desk-password")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("front desk 42\n");
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("pbkdf2-sha256$100000$") && line.trim().split('$').count() == 4, "{line}");
    let out = run("short\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 8"));
}
