//! Shared helpers for integration tests: the real `callbox server` process, a TCP proxy that
//! can cut connections, a raw WebSocket client, a minimal HTTP client and event waiting.
#![allow(dead_code)]

pub mod mosquitto;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use callbox::auth::{self, Claims};
use callbox::engine::{
    Auth, Engine, EngineEvent, EngineProfile, PlayerState, PublishChannel, ReconnectPolicy, RoomConfig,
    RoomStateReason, UserInfo,
};
use callbox::media::MediaConfig;
use callbox::proto::{ClientMsg, ServerMsg};
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};

pub const APP: u32 = 1234;
/// The test app's secret (not the public demo secret, which the server refuses outside --dev).
pub const SECRET: &str = "5e0c2a7b9d14f3a6c8e1b0d2f4a6c8e0a1b3c5d7e9f1a3b5c7d9e1f3a5b7c9d1";
pub const OTHER_APP: u32 = 99;
pub const OTHER_SECRET: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";
pub const WAIT: Duration = Duration::from_secs(20);

/// The real `callbox server` binary, killed on drop.
pub struct Server {
    pub addr: SocketAddr,
    /// The media relay's UDP address (None when the config disables media).
    pub media: Option<SocketAddr>,
    child: Child,
    dir: tempfile::TempDir,
    extra: String,
}

impl Server {
    /// Starts a server on a free loopback port; `extra` is appended to the config.
    pub fn start(extra: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr, media) = spawn(&dir, extra, "127.0.0.1:0", 0);
        Server { addr, media, child, dir, extra: extra.to_string() }
    }

    /// Starts a server listening on `listen` (e.g. a port a client already waits for).
    pub fn start_on(extra: &str, listen: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (child, addr, media) = spawn(&dir, extra, listen, 0);
        Server { addr, media, child, dir, extra: extra.to_string() }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The server's `wss://` URL by a name its test certificate carries.
    pub fn wss(&self, name: &str) -> String {
        format!("wss://{name}:{}", self.addr.port())
    }

    /// The config directory (for certificate files next to the config).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn http(&self) -> String {
        self.addr.to_string()
    }

    /// The server's configuration file.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("server.toml")
    }

    /// Sends a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(st.success());
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// kill -9, then start again on the same ports (all state is lost).
    pub fn restart(&mut self) {
        self.kill();
        let port = self.media.map_or(0, |m| m.port());
        let (child, addr, media) = spawn(&self.dir, &self.extra, &self.addr.to_string(), port);
        assert_eq!(addr, self.addr);
        assert_eq!(media, self.media);
        self.child = child;
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), 15);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

fn spawn(
    dir: &tempfile::TempDir,
    extra: &str,
    listen: &str,
    media_port: u16,
) -> (Child, SocketAddr, Option<SocketAddr>) {
    let cfg = dir.path().join("server.toml");
    // Media on loopback only, on a free port (kept across restarts).
    let media = if extra.contains("[media]") {
        String::new()
    } else {
        format!("[media]\nbind = \"127.0.0.1\"\nport = {media_port}\n")
    };
    // Top-level keys of `extra` (before its first table) go first, where TOML wants them.
    let at =
        if extra.trim_start().starts_with('[') { 0 } else { extra.find("\n[").map(|i| i + 1).unwrap_or(extra.len()) };
    let (top, tables) = extra.split_at(at);
    // A test that names its own apps (a webhook, say) names them all.
    let apps = if extra.contains("[[apps]]") {
        String::new()
    } else {
        format!(
            "[[apps]]\napp_id = {APP}\nsecret = \"{SECRET}\"\n[[apps]]\napp_id = {OTHER_APP}\nsecret = \"{OTHER_SECRET}\"\n"
        )
    };
    let text = format!("{top}\n{apps}{media}{tables}\n");
    std::fs::write(&cfg, text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["server", "--config", cfg.to_str().unwrap(), "--listen", listen])
        .env("RUST_LOG", "callbox=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let mut media_line = String::new();
    if !extra.contains("enabled = false") {
        reader.read_line(&mut media_line).unwrap();
    }
    let media = media_line.split("udp://").nth(1).and_then(|r| r.trim().parse().ok());
    let addr = line
        .split("://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("server did not start: {line:?}"))
        .parse()
        .unwrap();
    (child, addr, media)
}

pub fn token(app_id: u32, secret: &str, user: &str, room: Option<&str>, privileges: &[&str], ttl: i64) -> String {
    let now = auth::unix_now();
    let claims = Claims {
        app_id,
        user_id: user.into(),
        room_id: room.map(String::from),
        privileges: privileges.iter().map(|s| s.to_string()).collect(),
        streams: None,
        nbf: None,
        dk: None,
        iat: now,
        exp: (now as i64 + ttl) as u64,
    };
    auth::mint(&auth::parse_secret(secret).unwrap(), &claims).unwrap()
}

pub fn fast_policy() -> ReconnectPolicy {
    ReconnectPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        give_up_after: None,
        ..Default::default()
    }
}

/// An engine in AppSign mode with fast retries.
pub fn engine(url: &str) -> (Engine, Events) {
    let mut p = EngineProfile::new(APP, Auth::AppSign(SECRET.into()), url);
    p.reconnect = fast_policy();
    let (e, rx) = Engine::create(p).unwrap();
    (e, Events { rx, seen: Vec::new() })
}

/// An engine with media: test pattern and tone at 320x240@15, sockets on 127.0.0.1.
pub fn media_engine(url: &str) -> (Engine, Events) {
    media_engine_with(url, MediaConfig::small())
}

/// An engine with the given media settings, sockets on 127.0.0.1.
pub fn media_engine_with(url: &str, media: MediaConfig) -> (Engine, Events) {
    // Engine logs in tests only when asked (RUST_LOG=callbox=debug cargo test ...).
    if std::env::var_os("RUST_LOG").is_some() {
        callbox::logging::init("info");
    }
    let mut p = EngineProfile::new(APP, Auth::AppSign(SECRET.into()), url).with_media(media);
    p.reconnect = fast_policy();
    if let Some(m) = &mut p.media {
        m.bind = Some([127, 0, 0, 1].into());
    }
    let (e, rx) = Engine::create(p).unwrap();
    (e, Events { rx, seen: Vec::new() })
}

/// A person who says it can answer calls (a desk, a flat's app).
pub fn answerer(id: &str) -> UserInfo {
    let mut u = user(id);
    u.caps = vec![callbox::proto::Capability::Answer];
    u
}

pub fn user(id: &str) -> UserInfo {
    UserInfo::new(id.into(), format!("{id} name"))
}

pub fn notify() -> RoomConfig {
    RoomConfig { token: None, is_user_status_notify: true }
}

/// Matches the first rendered frame of `stream`.
pub fn rendered(stream: &str) -> impl Fn(&EngineEvent) -> bool + '_ {
    move |e| {
        matches!(e, EngineEvent::MediaEvent { stream_id, event: callbox::engine::MediaEventKind::RenderedFirstFrame }
            if stream_id == stream)
    }
}

/// Matches a stream update of `kind` that names `stream`.
pub fn stream_update(stream: &str, kind: callbox::engine::UpdateType) -> impl Fn(&EngineEvent) -> bool + '_ {
    move |e| {
        matches!(e, EngineEvent::RoomStreamUpdate { update, streams, .. }
            if *update == kind && streams.iter().any(|s| s.stream_id == stream))
    }
}

/// Matches a room state change with this reason.
pub fn is_reason(r: RoomStateReason) -> impl Fn(&EngineEvent) -> bool {
    move |e| matches!(e, EngineEvent::RoomStateChanged { reason, .. } if *reason == r)
}

/// `door` (via `url_a`) publishes `door-main` in `lobby`; `flat` (via `url_b`) plays it.
/// Returns once the player reports Playing.
pub async fn door_and_flat(url_a: &str, url_b: &str) -> ((Engine, Events), (Engine, Events)) {
    let (a, ea) = engine(url_a);
    let (b, mut eb) = engine(url_b);
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    a.start_publishing_stream("door-main", PublishChannel::Main).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    b.start_playing_stream("door-main").await.unwrap();
    eb.wait("Playing", |e| matches!(e, EngineEvent::PlayerStateUpdate { state: PlayerState::Playing, .. })).await;
    ((a, ea), (b, eb))
}

/// With media: `door` publishes `door-main` in `lobby`, `flat` plays it; returns once the
/// player rendered its first frame.
pub async fn door_and_flat_media(url: &str) -> ((Engine, Events), (Engine, Events)) {
    let (a, ea) = media_engine(url);
    let (b, mut eb) = media_engine(url);
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    a.start_publishing_stream("door-main", PublishChannel::Main).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    b.start_playing_stream("door-main").await.unwrap();
    eb.wait("first frame", |e| {
        matches!(e, EngineEvent::MediaEvent { event: callbox::engine::MediaEventKind::RenderedFirstFrame, .. })
    })
    .await;
    ((a, ea), (b, eb))
}

/// An engine's event receiver with a log of everything seen.
pub struct Events {
    pub rx: mpsc::Receiver<EngineEvent>,
    pub seen: Vec<EngineEvent>,
}

impl Events {
    /// Waits for an event matching `pred` (up to [`WAIT`]).
    pub async fn wait(&mut self, what: &str, pred: impl Fn(&EngineEvent) -> bool) -> EngineEvent {
        self.wait_within(WAIT, what, pred).await
    }

    /// Waits for an event matching `pred`, up to `limit`.
    pub async fn wait_within(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&EngineEvent) -> bool,
    ) -> EngineEvent {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(e)) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return e;
                    }
                }
                Ok(None) => panic!("event channel closed while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Everything that arrives within `d` (used to check that nothing of a kind happened,
    /// over a window bounded by other awaited events).
    pub async fn drain_for(&mut self, d: Duration) -> Vec<EngineEvent> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(e)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(e.clone());
            got.push(e);
        }
        got
    }
}

/// A raw WebSocket client speaking the protocol by hand.
pub struct Raw {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl Raw {
    pub async fn connect(server: &Server) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/v1", server.addr)).await.unwrap();
        Raw { ws }
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        let t: String = text.into();
        self.ws.send(tokio_tungstenite::tungstenite::Message::Text(t.into())).await.unwrap();
    }

    pub async fn send(&mut self, m: &ClientMsg) {
        self.send_text(serde_json::to_string(m).unwrap()).await;
    }

    pub async fn send_binary(&mut self, b: Vec<u8>) {
        self.ws.send(tokio_tungstenite::tungstenite::Message::Binary(b.into())).await.unwrap();
    }

    /// The next protocol message (skipping pongs and quality pushes).
    pub async fn recv(&mut self) -> ServerMsg {
        loop {
            let f = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out").expect("closed").unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = f {
                let m: ServerMsg = serde_json::from_str(t.as_str()).unwrap();
                if !matches!(m, ServerMsg::Pong { .. } | ServerMsg::NetworkQuality { .. }) {
                    return m;
                }
            }
        }
    }

    pub async fn login(&mut self, user_id: &str, room: &str) -> ServerMsg {
        let t = token(APP, SECRET, user_id, None, &["login", "publish", "play"], 3600);
        self.send(&ClientMsg::Login {
            req: 1,
            version: 1,
            app_id: APP,
            token: t,
            room_id: room.into(),
            user: user(user_id),
            user_status_notify: true,
        })
        .await;
        self.recv().await
    }
}

/// A TCP proxy in front of the server whose connections can be cut and refused.
pub struct Proxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: broadcast::Sender<()>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = broadcast::channel(4);
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    let _ = client.shutdown().await;
                    continue; // refused: closed before the WebSocket handshake
                }
                let mut stop = cut2.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = stop.recv() => {}
                    }
                });
            }
        });
        Proxy { addr, up, cut }
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// Drops every live connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.cut.send(());
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A minimal HTTP/1.1 request; returns (status, body).
pub async fn http(addr: &str, method: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    http_json(addr, method, path, bearer, "").await
}

/// [`http`] with a JSON body (none when empty).
pub async fn http_json(addr: &str, method: &str, path: &str, bearer: Option<&str>, body: &str) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let kind = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{kind}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, dechunk(&body))
}

fn dechunk(body: &str) -> String {
    // axum answers small bodies with Content-Length, but handle chunked just in case.
    if !body.contains("\r\n") {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// A `callbox device` config for tests: test sources, fake sinks, simulated GPIO with every
/// button and output, the test app's AppSign; `media_bind` empty means the address that
/// routes to the server.
pub fn device_config(url: &str, mode: &str, socket: &std::path::Path, media_bind: &str) -> String {
    format!(
        r#"[server]
url = "{url}"
app_id = {APP}
app_sign = "{SECRET}"
[room]
room_id = "lobby"
user_id = "door"
user_name = "Door station"
[call]
mode = "{mode}"
answer_delay_secs = 1
ring_out_secs = 60
[video]
source = "test"
width = 320
height = 240
fps = 15
bitrate_kbps = 300
[audio]
source = "test"
sink = "fake"
[display]
sink = "fake"
[media]
bind = "{media_bind}"
[gpio]
backend = "sim"
debounce_ms = 20
long_press_ms = 400
door_pulse_ms = 300
[gpio.buttons]
call = 1
leave = 2
mute = 3
door = 4
[gpio.outputs]
online = 10
ringing = 11
in_call = 12
fault = 13
door = 14
[control]
socket = "{}"
"#,
        socket.display()
    )
}

/// A test CA and certificates made inside the test (rcgen), written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("callbox test CA {}", rand::random::<u32>()));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca }
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Writes `<name>.crt` and `<name>.key` for `names`, valid now (or expired), and returns
    /// their paths.
    pub fn leaf(&self, file: &str, names: &[&str], expired: bool) -> (std::path::PathBuf, std::path::PathBuf) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let (c, k) = (self.dir.path().join(format!("{file}.crt")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        use rcgen::PublicKeyData;
        std::fs::write(self.dir.path().join(format!("{file}.spki")), key.subject_public_key_info()).unwrap();
        (c, k)
    }

    /// base64(SHA-256(SubjectPublicKeyInfo)) of `<file>`'s key: what Chromium's
    /// --ignore-certificate-errors-spki-list trusts.
    pub fn spki_sha256(&self, file: &str) -> String {
        use base64::Engine as _;
        use sha2::Digest as _;
        let spki = std::fs::read(self.dir.path().join(format!("{file}.spki"))).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&spki))
    }

    /// The `[tls]` section serving `<file>.crt`/`.key`, checked every second.
    pub fn tls_section(&self, file: &str) -> String {
        let d = self.dir.path();
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nreload_secs = 1\n",
            d.join(format!("{file}.crt")).display(),
            d.join(format!("{file}.key")).display()
        )
    }
}

/// The DER of the certificate a TLS server presents at `addr` for `name`, trusting `ca`.
pub async fn presented_cert(addr: SocketAddr, name: &str, ca: &std::path::Path) -> Vec<u8> {
    let cfg = callbox::tls::client::config(Some(ca), &[b"http/1.1"]).unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = callbox::tls::client::connect(cfg, name, tcp).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
