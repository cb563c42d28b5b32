//! The browser page in Debian's Chromium (headless, fake camera and microphone), driven by
//! playwright-core (tests/browser/call.mjs), inside a network namespace with only `lo` so
//! every ICE candidate is 127.0.0.1: it joins a room with a `callbox peer` engine, each
//! decodes the other (H.264 in the page; video and audio in the engine), the page comes back
//! after the server is killed and restarted, and leaving updates the engine's lists. The
//! screenshots land in target/tmp/browser/ (browser-call.png, browser-call-phone.png).

mod common;

use std::process::Command;

#[test]
fn the_page_calls_an_engine_and_comes_back_after_a_server_restart() {
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let _ = std::fs::remove_file(artifacts.join("browser-call.png"));
    let r = run_page_script("call.mjs", &[&artifacts.display().to_string()]);
    assert!(artifacts.join("browser-call.png").exists(), "screenshot saved");
    println!("browser call: {r}");
}

#[test]
fn the_page_over_https_by_name_publishes_and_plays_a_device() {
    let pki = common::Pki::new();
    let name = "desk.callbox.test";
    pki.leaf("srv", &[name, "localhost"], false);
    let cfg = pki.dir.path().join("server.toml");
    let section = pki.tls_section("srv");
    std::fs::write(&cfg, format!("[media]\nbind = \"127.0.0.1\"\nport = 0\n{section}")).unwrap();
    let (cfg, ca, spki) = (cfg.display().to_string(), pki.ca_file().display().to_string(), pki.spki_sha256("srv"));
    let r = run_page_script("https.mjs", &[&cfg, &ca, name, &spki]);
    println!("browser over https: {r}");
}

/// The page in a namespace whose UDP to the media port is dropped plays a device over
/// ICE-TCP (the server's metrics count the TCP connection).
#[test]
fn the_page_plays_a_device_over_ice_tcp_when_udp_is_dropped() {
    let r = run_page_script("tcp.mjs", &[]);
    assert!(r["connections_tcp"].as_u64().unwrap_or(0) >= 1);
    println!("browser over ICE-TCP: {r}");
}

/// The front desk: a door station rings the page, which answers, opens that door only and
/// rides out a frozen server; a second browser whose user blocks the camera is told what to
/// do. Screenshots of the pre-join screen, an incoming call, a call, a reconnect, the phone
/// layout and the blocked camera land in target/tmp/browser/desk-*.png.
#[test]
fn the_desk_answers_a_door_opens_it_only_and_rides_out_a_stall() {
    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    let dir = tempfile::tempdir().unwrap();
    let password = "front desk 42";
    let server = dir.path().join("server.toml");
    std::fs::write(
        &server,
        format!(
            "[[apps]]\napp_id = {}\nsecret = \"{}\"\n[media]\nbind = \"127.0.0.1\"\nport = 0\n[[desks]]\nuser_id = \"desk\"\nname = \"Front desk\"\napp_id = {}\nroom_id = \"lobby\"\npassword = \"{}\"\n",
            common::APP,
            common::SECRET,
            common::APP,
            callbox::server::desk_password_hash(password)
        ),
    )
    .unwrap();
    let device = |name: &str, user: &str, call: &str| {
        let sock = dir.path().join(format!("{name}.sock"));
        let cfg = dir.path().join(format!("{name}.toml"));
        let text = common::device_config("ws://SERVER", "intercom", &sock, "127.0.0.1")
            .replace("user_id = \"door\"", &format!("user_id = \"{user}\""))
            .replace("[call]\n", call);
        std::fs::write(&cfg, text).unwrap();
        (cfg.display().to_string(), sock.display().to_string())
    };
    let (door, door_sock) = device("door", "door", "[call]\ncallee = \"desk\"\n");
    let (gate, gate_sock) = device("gate", "gate", "[call]\ncallee = \"desk\"\n").clone();
    let gate_text =
        std::fs::read_to_string(&gate).unwrap().replace("user_name = \"Door station\"", "user_name = \"Side gate\"");
    std::fs::write(&gate, gate_text).unwrap();
    let r = run_page_script(
        "desk.mjs",
        &[
            &artifacts.display().to_string(),
            &server.display().to_string(),
            &door,
            &door_sock,
            &gate,
            &gate_sock,
            &format!("'{password}'"),
        ],
    );
    for shot in [
        "desk-prejoin.png",
        "desk-incoming.png",
        "desk-call.png",
        "desk-reconnect.png",
        "desk-phone.png",
        "desk-blocked.png",
    ] {
        assert!(artifacts.join(shot).exists(), "{shot} saved");
    }
    println!("desk: {r}");
}

/// Runs `tests/browser/<script> <callbox binary> <args>` with node in a network namespace of
/// its own (only `lo`); its last stdout line is the JSON result, which must say ok and exit 0.
fn run_page_script(script: &str, args: &[&str]) -> serde_json::Value {
    let script = format!(
        "ip link set lo up && node {}/tests/browser/{script} {} {}",
        env!("CARGO_MANIFEST_DIR"),
        env!("CARGO_BIN_EXE_callbox"),
        args.join(" ")
    );
    let out = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .output()
        .expect("unshare (util-linux) and node; Chromium and playwright-core come from scripts/install-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let r: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|_| panic!("no result line: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["ok"], true, "{r:#}\nstderr tail: {}", tail(&out.stderr));
    assert!(out.status.success());
    r
}

fn tail(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    s.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
}

#[tokio::test]
async fn the_page_is_served_and_dev_tokens_exist_only_in_dev_mode() {
    let server = common::Server::start("");
    let (status, body) = common::http(&server.http(), "GET", "/", None).await;
    assert_eq!(status, 200);
    for id in
        ["room-state", "doors", "incoming", "answer", "decline", "history", "prejoin", "reconnect-banner", "user-list"]
    {
        assert!(body.contains(&format!("data-testid=\"{id}\"")), "{id}");
    }
    // The page may not be framed by another site (it can auto-publish with a token).
    let head = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(server.http()).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).split("\r\n\r\n").next().unwrap().to_lowercase()
    };
    assert!(head.contains("content-security-policy:") && head.contains("frame-ancestors 'none'"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(body.contains("q.delete(\"token\")"), "the page drops the token from the address bar");
    let (status, body) = common::http(&server.http(), "GET", "/desk/info", None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"desks":false,"dev":false}"#));
    let (status, _) = common::http(&server.http(), "GET", "/dev/token?app_id=1234&room=lobby&user=u", None).await;
    assert_eq!(status, 404, "no dev tokens without --dev");
}
