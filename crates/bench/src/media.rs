//! Media figures: publish-to-first-remote-frame, media recovery after a server crash and
//! restart, and SFU fan-out (packets/s forwarded, server CPU). The server runs as a child
//! process of this binary (`callbox server`), so it can be killed with SIGKILL and its CPU
//! time read from /proc; everything stays on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use callbox::auth::{self, Claims};
use callbox::engine::{Auth, Engine, EngineEvent, EngineProfile, MediaEventKind, PublishChannel, RoomConfig, UserInfo};
use callbox::media::MediaConfig;
use callbox::proto::{ClientMsg, MediaRole, PROTOCOL_VERSION, ServerMsg};
use callbox::rtc::Kind;
use callbox::rtc::client::{ClientConn, RtpSink};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::secret;
use callbox::server::DEV_APP_ID as DEMO_APP_ID;

/// `callbox server` as a child process.
pub struct ServerProc {
    child: Child,
    /// HTTP/WebSocket address.
    pub addr: SocketAddr,
    media: SocketAddr,
    dir: std::path::PathBuf,
}

impl ServerProc {
    /// Starts a server on loopback (`listen` and media `port`, 0 for any).
    pub fn start(listen: &str, media_port: u16) -> anyhow::Result<ServerProc> {
        ServerProc::start_with(listen, media_port, &[])
    }

    /// [`ServerProc::start`] with `env` set for the server process (e.g. `ORC_CODE`).
    pub fn start_with(listen: &str, media_port: u16, env: &[(&str, &str)]) -> anyhow::Result<ServerProc> {
        ServerProc::spawn(listen, media_port, env, None)
    }

    /// [`ServerProc::start`] pinned to `cpus` (`taskset -c`, e.g. "0" or "0-1"); the server
    /// makes one media shard per core it may run on.
    pub fn start_pinned(listen: &str, media_port: u16, cpus: &str) -> anyhow::Result<ServerProc> {
        ServerProc::spawn(listen, media_port, &[], Some(cpus))
    }

    fn spawn(listen: &str, media_port: u16, env: &[(&str, &str)], cpus: Option<&str>) -> anyhow::Result<ServerProc> {
        let dir = std::env::temp_dir().join(format!("callbox-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("server.toml");
        std::fs::write(
            &cfg,
            format!(
                "[[apps]]\napp_id = {DEMO_APP_ID}\nsecret = \"{}\"\n[limits]\nlogins_per_sec = 10000.0\n\
                 login_burst = 10000.0\nmax_users_per_room = 256\n[media]\nbind = \"127.0.0.1\"\nport = {media_port}\n",
                secret()
            ),
        )?;
        let exe = crate::callbox_exe()?;
        let mut cmd = match cpus {
            // taskset execs the server: the child's PID is the server's.
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut child = cmd
            .env_remove("CALLBOX_BIN")
            .args(["server", "--config", cfg.to_str().unwrap_or_default(), "--listen", listen])
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting callbox server")?;
        let mut out = BufReader::new(child.stdout.take().context("server stdout")?);
        let (mut l1, mut l2) = (String::new(), String::new());
        out.read_line(&mut l1)?;
        out.read_line(&mut l2)?;
        let addr = l1.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).context("server address")?;
        let media = l2.split("udp://").nth(1).map(str::trim).context("media address")?;
        Ok(ServerProc { child, addr: addr.parse()?, media: media.parse()?, dir })
    }

    /// The signalling URL.
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// SIGKILL, then start again on the same ports; returns when it listens again.
    pub fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = ServerProc::start(&self.addr.to_string(), self.media.port())?;
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    /// CPU time (user + system) the server has used.
    pub fn cpu(&self) -> Duration {
        proc_cpu(self.child.id())
    }

    /// The server's RSS, MiB.
    pub fn rss_mib(&self) -> f64 {
        crate::device::rss(self.child.id()).0
    }

    /// Each server thread's CPU time so far, by thread ID.
    pub fn threads_cpu(&self) -> Vec<(u32, Duration)> {
        let dir = format!("/proc/{}/task", self.child.id());
        let Ok(tasks) = std::fs::read_dir(dir) else { return vec![] };
        tasks
            .filter_map(|t| {
                let t = t.ok()?;
                let tid = t.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
                Some((tid, stat_cpu(&stat)))
            })
            .collect()
    }
}

/// CPU time (user + system) process `pid` has used, from /proc.
pub fn proc_cpu(pid: u32) -> Duration {
    stat_cpu(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.dir.join("server.toml"));
    }
}

/// User + system time from a /proc `stat` line.
pub fn stat_cpu(stat: &str) -> Duration {
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

type WsTx = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;
type WsRx = futures_util::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// A client message as a WebSocket text frame.
pub(crate) fn send(m: ClientMsg) -> Message {
    Message::Text(serde_json::to_string(&m).unwrap_or_default().into())
}

/// A signalling session logged in to `room` as `name` with `privilege` (and `login`).
pub(crate) async fn login(url: &str, room: &str, name: &str, privilege: &str) -> anyhow::Result<(WsTx, WsRx)> {
    let (ws, _) = tokio_tungstenite::connect_async(format!("{url}/ws/v1")).await?;
    let (mut tx, rx) = ws.split();
    let now = auth::unix_now();
    let claims = Claims {
        app_id: DEMO_APP_ID,
        user_id: name.into(),
        room_id: None,
        privileges: vec!["login".into(), privilege.into()],
        streams: None,
        nbf: None,
        dk: None,
        iat: now,
        exp: now + 3600,
    };
    let token = auth::mint(&auth::parse_secret(secret())?, &claims)?;
    tx.send(send(ClientMsg::Login {
        req: 1,
        version: PROTOCOL_VERSION,
        app_id: DEMO_APP_ID,
        token,
        room_id: room.into(),
        user: user(name),
        user_status_notify: false,
    }))
    .await?;
    Ok((tx, rx))
}

pub(super) fn engine(url: &str, media: MediaConfig) -> anyhow::Result<(Engine, mpsc::Receiver<EngineEvent>)> {
    let mut p = EngineProfile::new(DEMO_APP_ID, Auth::AppSign(secret().into()), url).with_media(media);
    p.reconnect = callbox::engine::ReconnectPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(500),
        give_up_after: None,
        ..Default::default()
    };
    if let Some(m) = &mut p.media {
        m.bind = Some([127, 0, 0, 1].into());
    }
    Ok(Engine::create(p)?)
}

pub(super) fn user(id: &str) -> UserInfo {
    UserInfo::new(id.into(), String::new())
}

async fn until(events: &mut mpsc::Receiver<EngineEvent>, limit: Duration, pred: impl Fn(&EngineEvent) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if pred(&e) {
            return true;
        }
    }
    false
}

fn rendered(e: &EngineEvent) -> bool {
    matches!(e, EngineEvent::MediaEvent { event: MediaEventKind::RenderedFirstFrame, .. })
}

/// Publish call to first frame rendered by a player that was already waiting (640x480@30).
pub async fn first_frame(iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    let mut out = Vec::new();
    for i in 0..iterations {
        let stream = format!("ff-{i}");
        let (b, mut eb) = engine(&server.url(), MediaConfig::default())?;
        b.login_room("bench-ff", user(&format!("player-{i}")), RoomConfig::default()).await?;
        b.start_playing_stream(&stream).await?;
        let (a, _ea) = engine(&server.url(), MediaConfig::default())?;
        a.login_room("bench-ff", user(&format!("pub-{i}")), RoomConfig::default()).await?;
        let t0 = Instant::now();
        a.start_publishing_stream(&stream, PublishChannel::Main).await?;
        if until(&mut eb, Duration::from_secs(10), rendered).await {
            out.push(t0.elapsed());
        } else {
            eprintln!("first frame {i}: none within 10 s");
        }
        a.destroy().await;
        b.destroy().await;
    }
    Ok(out)
}

/// A player that joins a running stream: its `start_playing_stream` call to its first
/// rendered frame, at a random point of the publisher's 2 s GOP. Also how many joins the
/// server served from its kept GOP (read from `/metrics`).
pub async fn late_join(iterations: usize) -> anyhow::Result<(Vec<Duration>, u64)> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    let (a, mut ea) = engine(&server.url(), MediaConfig::default())?;
    a.login_room("bench-late", user("door"), RoomConfig::default()).await?;
    a.start_publishing_stream("late-main", PublishChannel::Main).await?;
    until(&mut ea, Duration::from_secs(10), |e| matches!(e, EngineEvent::PublisherQualityUpdate { .. })).await;
    let mut out = Vec::new();
    for i in 0..iterations {
        // Spread over the GOP: 0.1 s to 2.0 s after the last join's.
        tokio::time::sleep(Duration::from_millis(100 + (i as u64 * 677) % 1900)).await;
        let (b, mut eb) = engine(&server.url(), MediaConfig::default())?;
        b.login_room("bench-late", user(&format!("late-{i}")), RoomConfig::default()).await?;
        let t0 = Instant::now();
        b.start_playing_stream("late-main").await?;
        if until(&mut eb, Duration::from_secs(10), rendered).await {
            out.push(t0.elapsed());
            if std::env::var_os("BENCH_EACH").is_some() {
                eprintln!("late joiner {i}: {:?}", t0.elapsed());
            }
        } else {
            eprintln!("late joiner {i}: no frame within 10 s");
        }
        b.destroy().await;
    }
    let gops = metric(&server.url(), "callbox_media_gops_sent_total").await.unwrap_or(0.0) as u64;
    a.destroy().await;
    Ok((out, gops))
}

/// One un-labelled series of the server's `/metrics`.
pub async fn metric(url: &str, name: &str) -> Option<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.strip_prefix("ws://")?.trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.ok()?;
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Server SIGKILLed and restarted mid-call: from the restarted server listening to the
/// player rendering again (320x240@15).
pub async fn restart_recovery(iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let mut server = ServerProc::start("127.0.0.1:0", 0)?;
    let (a, _ea) = engine(&server.url(), MediaConfig::small())?;
    let (b, mut eb) = engine(&server.url(), MediaConfig::small())?;
    a.login_room("bench-rs", user("door"), RoomConfig::default()).await?;
    a.start_publishing_stream("rs-main", PublishChannel::Main).await?;
    b.login_room("bench-rs", user("flat"), RoomConfig::default()).await?;
    b.start_playing_stream("rs-main").await?;
    anyhow::ensure!(until(&mut eb, Duration::from_secs(10), rendered).await, "no first frame before the restart");
    let mut out = Vec::new();
    for i in 0..iterations {
        server.crash_and_restart()?;
        let t0 = Instant::now();
        if until(&mut eb, Duration::from_secs(20), rendered).await {
            out.push(t0.elapsed());
        } else {
            eprintln!("restart {i}: media not back within 20 s");
        }
    }
    a.destroy().await;
    b.destroy().await;
    Ok(out)
}

/// Counts what a raw player receives.
struct Counter(Arc<AtomicU64>);

impl RtpSink for Counter {
    fn rtp(&mut self, _: Kind, _: &[u8]) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A player without decoding: signalling by hand, one play connection, a packet counter.
async fn raw_player(url: &str, i: usize, stream: &str, count: Arc<AtomicU64>) -> anyhow::Result<RawPlayer> {
    let (mut tx, mut rx) = login(url, "bench-fanout", &format!("viewer-{i}"), "play").await?;
    tx.send(send(ClientMsg::Play { req: 2, stream_id: stream.into() })).await?;
    // Counted frames are the figure: the connection's events are not needed.
    let (conn, sdp) = ClientConn::start(
        MediaRole::Play,
        "127.0.0.1:0".parse()?,
        Default::default(),
        Some(Box::new(Counter(count))),
        |_| {},
    )?;
    tx.send(send(ClientMsg::MediaOffer { req: 3, stream_id: stream.into(), role: MediaRole::Play, sdp })).await?;
    loop {
        let Some(Ok(Message::Text(t))) = rx.next().await else { anyhow::bail!("signalling closed") };
        match serde_json::from_str::<ServerMsg>(t.as_str())? {
            ServerMsg::MediaAnswer { sdp, .. } => {
                anyhow::ensure!(conn.answer(sdp), "the play connection did not take the answer");
                break;
            }
            ServerMsg::Error { code, message, .. } => anyhow::bail!("refused: {} {message}", code.0),
            _ => {}
        }
    }
    // Keep the session alive: answer nothing, but ping so the server keeps us.
    let keepalive = tokio::spawn(async move {
        let mut seq = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            seq += 1;
            let ping = ClientMsg::ping(seq, callbox::proto::QualityLevel::Excellent);
            if tx.send(send(ping)).await.is_err() {
                return;
            }
            while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1), rx.next()).await {}
        }
    });
    Ok(RawPlayer { _conn: conn, keepalive })
}

struct RawPlayer {
    _conn: ClientConn,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Drop for RawPlayer {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}

/// One fan-out figure.
pub struct Fanout {
    /// Players.
    pub players: usize,
    /// RTP packets/s delivered to the players (sum).
    pub packets_per_sec: f64,
    /// Server CPU, fraction of one core.
    pub server_cpu: f64,
    /// The publisher's video bitrate, kbit/s (last quality report).
    pub publisher_kbps: f64,
}

/// One 720p30 ~1.5 Mbps publisher to `players` raw players, measured over `window`.
pub async fn fanout(counts: &[usize], window: Duration) -> anyhow::Result<Vec<Fanout>> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    // Snow does not compress: the encoder runs at its target rate, as a busy camera scene would.
    let hd = MediaConfig {
        width: 1280,
        height: 720,
        fps: 30,
        bitrate_kbps: 1500,
        test_pattern: "snow".into(),
        ..MediaConfig::default()
    };
    let (a, mut ea) = engine(&server.url(), hd)?;
    a.login_room("bench-fanout", user("camera"), RoomConfig::default()).await?;
    a.start_publishing_stream("fanout-main", PublishChannel::Main).await?;
    until(&mut ea, Duration::from_secs(5), |e| matches!(e, EngineEvent::PublisherQualityUpdate { .. })).await;
    let mut players = Vec::new();
    let mut counters = Vec::new();
    let mut out = Vec::new();
    for &n in counts {
        while players.len() < n {
            let c = Arc::new(AtomicU64::new(0));
            players.push(raw_player(&server.url(), players.len(), "fanout-main", c.clone()).await?);
            counters.push(c);
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // let every new connection settle
        let total = || counters.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
        let (p0, c0, t0) = (total(), server.cpu(), Instant::now());
        tokio::time::sleep(window).await;
        let secs = t0.elapsed().as_secs_f64();
        let mut publisher_kbps = 0.0;
        while let Ok(e) = ea.try_recv() {
            if let EngineEvent::PublisherQualityUpdate { quality, .. } = e {
                publisher_kbps = quality.video_kbps;
            }
        }
        out.push(Fanout {
            players: n,
            packets_per_sec: (total() - p0) as f64 / secs,
            server_cpu: (server.cpu() - c0).as_secs_f64() / secs,
            publisher_kbps,
        });
    }
    drop(players);
    a.destroy().await;
    Ok(out)
}
