//! A certificate from ACME: the server obtains one from Debian's `pebble` (a test ACME CA)
//! with TLS-ALPN-01 on its own listen port, then serves it, and a client verifies it against
//! pebble's root.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use callbox::dial::Dialer;
use callbox::engine::{Auth, Engine, EngineProfile};
use callbox::url::ServerUrl;
use common::*;

struct Pebble(Child);

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `N` distinct free ports: every listener is held until all are known (a port released at
/// once can be handed out again by the next bind; CI once gave pebble and the server the
/// same one: "Address already in use").
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_gets_its_certificate_from_acme_and_a_client_verifies_it() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("pebble", &["localhost", "127.0.0.1"], false);
    let [dir_port, mgmt_port, listen_port, http_port] = free_ports();
    // Pebble validates TLS-ALPN-01 by connecting to the name on `tlsPort`: our listen port.
    let config = pki.dir.path().join("pebble.json");
    std::fs::write(
        &config,
        serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{dir_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": cert, "privateKey": key,
            "httpPort": http_port, "tlsPort": listen_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false,
        }})
        .to_string(),
    )
    .unwrap();
    let _pebble = Pebble(
        Command::new("pebble")
            .args(["-config", config.to_str().unwrap()])
            // Without these, validation waits up to 15 s and 5% of nonces are refused.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble (scripts/install-deps.sh installs it)"),
    );
    let ca = pki.ca_file();
    let mgmt = Dialer::new(ServerUrl::parse(&format!("https://localhost:{mgmt_port}/")).unwrap(), Some(&ca)).unwrap();
    let started = tokio::time::Instant::now();
    let root = loop {
        // Pebble makes a new root at every start; it is there once pebble listens.
        match mgmt.request("GET", "/roots/0", &[], Vec::new(), Duration::from_secs(2)).await {
            Ok(a) if a.status == 200 => break a.body,
            r => {
                assert!(started.elapsed() < WAIT, "pebble did not answer within {WAIT:?}: {r:?}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
        }
    };
    let root_file = pki.dir.path().join("pebble-root.pem");
    std::fs::write(&root_file, &root).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let server = Server::start_on(
        &format!(
            "[tls.acme]\ndomains = [\"localhost\"]\ncontact = [\"ops@example.com\"]\n\
             directory = \"https://localhost:{dir_port}/dir\"\ndirectory_ca = \"{}\"\ncache_dir = \"{}\"\n",
            ca.display(),
            cache.path().display()
        ),
        &format!("127.0.0.1:{listen_port}"),
    );
    let url = ServerUrl::parse(&server.wss("localhost")).unwrap();
    let client = Dialer::new(url, Some(&root_file)).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client.request("GET", "/healthz", &[], Vec::new(), Duration::from_secs(3)).await {
            Ok(a) => {
                assert_eq!(a.status, 200);
                break;
            }
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "no ACME certificate within 60 s: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    // An engine logs in over wss, trusting only pebble's root.
    let mut p = EngineProfile::new(APP, Auth::AppSign(SECRET.into()), server.wss("localhost"));
    p.ca_file = Some(root_file);
    let (e, _rx) = Engine::create(p).unwrap();
    tokio::time::timeout(WAIT, e.login_room("lobby", user("door"), notify())).await.unwrap().unwrap();
    e.destroy().await;
    assert!(std::fs::read_dir(cache.path()).unwrap().count() > 0, "the certificate is cached for restarts");
}
