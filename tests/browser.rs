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
    for id in ["room-state", "user-list", "stream-list", "frames-decoded", "open-door"] {
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
    let (status, _) = common::http(&server.http(), "GET", "/dev/token?app_id=1234&room=lobby&user=u", None).await;
    assert_eq!(status, 404, "no dev tokens without --dev");
}
