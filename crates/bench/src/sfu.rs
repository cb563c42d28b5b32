//! SFU forwarding figures the clients do not distort: a synthetic publisher (pre-made RTP at
//! a fixed rate, no encoder), players that count their datagrams after the handshake without
//! decrypting them, and the server pinned with `taskset` to one core, then two (its shards
//! follow: one per core it may run on). The server's CPU comes from /proc and is divided by
//! its own forwarded-packet counter (`callbox_media_packets_out_total`). In the same run, a
//! plain UDP relay (one `recv`, then one `sendto` per player, no crypto) on one core gives
//! the limit the figure is compared with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use callbox::proto::{ClientMsg, MediaRole, ServerMsg};
use callbox::rtc::client::{ClientCore, ClientEvent};
use callbox::rtc::{H264_PT, Kind, Transport};
use futures_util::{SinkExt, StreamExt};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use super::media::{ServerProc, login, metric, send};

/// One figure: the server on `cores` cores forwarding to `players`.
pub struct Scaling {
    /// Cores the server was pinned to (and its shards).
    pub cores: usize,
    /// Players of the one stream.
    pub players: usize,
    /// Packets forwarded per second (the server's counter).
    pub forwarded_pps: f64,
    /// Packets received from the publisher per second (the server's counter).
    pub in_pps: f64,
    /// Datagrams the players counted per second.
    pub received_pps: f64,
    /// The server's CPU, in cores.
    pub server_cpu: f64,
    /// The two busiest server threads' CPU, in cores.
    pub busiest_threads: [f64; 2],
    /// The server's RSS growth per player connected, MiB.
    pub rss_per_player_mib: f64,
}

impl Scaling {
    /// Server CPU per forwarded packet, µs.
    pub fn us_per_packet(&self) -> f64 {
        if self.forwarded_pps > 0.0 { self.server_cpu * 1e6 / self.forwarded_pps } else { 0.0 }
    }
}

/// The server pinned to each of `cores` in turn, a `pps` packets/s publisher, `players`.
pub async fn scaling(cores: &[usize], players: usize, pps: u32, window: Duration) -> anyhow::Result<Vec<Scaling>> {
    let mut out = Vec::new();
    for &c in cores {
        let cpus = format!("0-{}", c.saturating_sub(1));
        let server = ServerProc::start_pinned("127.0.0.1:0", 0, &cpus)?;
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = Client::start(&server.url(), "camera", MediaRole::Publish, pps, stop.clone()).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss0 = server.rss_mib();
        let mut counted = Vec::new();
        for i in 0..players {
            counted.push(Client::start(&server.url(), &format!("viewer-{i}"), MediaRole::Play, 0, stop.clone()).await?);
        }
        tokio::time::sleep(Duration::from_secs(2)).await; // every connection settled
        let rss_per_player_mib = (server.rss_mib() - rss0) / players.max(1) as f64;
        let total = || counted.iter().map(|c| c.count.load(Ordering::Relaxed)).sum::<u64>();
        let url = server.url();
        let counter = |name: &'static str| {
            let url = url.clone();
            async move { metric(&url, name).await.unwrap_or(0.0) as u64 }
        };
        let (fwd, inp) = ("callbox_media_packets_out_total", "callbox_media_packets_in_total");
        let (i0, f0) = (counter(inp).await, counter(fwd).await);
        let (r0, c0, th0, t0) = (total(), server.cpu(), server.threads_cpu(), Instant::now());
        tokio::time::sleep(window).await;
        let (r1, c1, th1) = (total(), server.cpu(), server.threads_cpu());
        let secs = t0.elapsed().as_secs_f64();
        let (f1, i1) = (counter(fwd).await, counter(inp).await);
        let mut per_thread: Vec<f64> = th1
            .iter()
            .map(|(tid, t)| {
                let before = th0.iter().find(|(id, _)| id == tid).map_or(Duration::ZERO, |(_, d)| *d);
                t.saturating_sub(before).as_secs_f64() / secs
            })
            .collect();
        per_thread.sort_by(|a, b| b.total_cmp(a));
        stop.store(true, Ordering::Relaxed);
        drop((publisher, counted));
        out.push(Scaling {
            cores: c,
            players,
            forwarded_pps: f1.saturating_sub(f0) as f64 / secs,
            in_pps: i1.saturating_sub(i0) as f64 / secs,
            received_pps: r1.saturating_sub(r0) as f64 / secs,
            server_cpu: (c1.saturating_sub(c0)).as_secs_f64() / secs,
            busiest_threads: [per_thread.first().copied().unwrap_or(0.0), per_thread.get(1).copied().unwrap_or(0.0)],
            rss_per_player_mib,
        });
    }
    Ok(out)
}

/// A signalling session with one media connection, driven by a task: the publisher sends
/// `pps` pre-made packets a second, a player counts RTP datagrams once connected.
struct Client {
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The server's RSS growth per idle signalling session (logged in, no media), KiB: `n`
/// sessions over rooms of 50.
pub async fn idle_sessions(n: usize) -> anyhow::Result<f64> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    // One session first, so what every server has once is not counted.
    let first = login(&server.url(), "idle-warm", "warm", "play").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = server.rss_mib();
    let mut sessions = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, mut rx) = login(&server.url(), &format!("idle-{}", i / 50), &format!("idle-{i}"), "play").await?;
        // Logged in before the next: the server's answer.
        loop {
            let Some(Ok(Message::Text(t))) = rx.next().await else { anyhow::bail!("signalling closed") };
            if matches!(serde_json::from_str::<ServerMsg>(t.as_str()), Ok(ServerMsg::LoginOk { .. })) {
                break;
            }
        }
        sessions.push((tx, rx));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per = (server.rss_mib() - rss0) * 1024.0 / n.max(1) as f64;
    drop((sessions, first));
    Ok(per)
}

impl Client {
    async fn start(url: &str, name: &str, role: MediaRole, pps: u32, stop: Arc<AtomicBool>) -> anyhow::Result<Client> {
        let privilege = if role == MediaRole::Publish { "publish" } else { "play" };
        let (mut tx, mut rx) = login(url, "bench-scaling", name, privilege).await?;
        let stream = "scaling-main";
        let first = match role {
            MediaRole::Publish => ClientMsg::publish(2, stream, ""),
            MediaRole::Play => ClientMsg::Play { req: 2, stream_id: stream.into() },
        };
        tx.send(send(first)).await?;
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        let (mut core, sdp) = ClientCore::new(Instant::now(), role, local, Duration::from_secs(30), None, false, true)?;
        tx.send(send(ClientMsg::MediaOffer { req: 3, stream_id: stream.into(), role, sdp })).await?;
        loop {
            let Some(Ok(Message::Text(t))) = rx.next().await else { anyhow::bail!("signalling closed") };
            match serde_json::from_str::<ServerMsg>(t.as_str())? {
                ServerMsg::MediaAnswer { sdp, .. } => {
                    core.handle_answer(Instant::now(), sdp);
                    break;
                }
                ServerMsg::Error { code, message, .. } => anyhow::bail!("refused: {} {message}", code.0),
                _ => {}
            }
        }
        let count = Arc::new(AtomicU64::new(0));
        let c = count.clone();
        let task = tokio::spawn(async move {
            // Heartbeats keep the session; what the server says is read and dropped.
            let keepalive = async move {
                for seq in 1.. {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if tx.send(send(ClientMsg::ping(seq, callbox::proto::QualityLevel::Excellent))).await.is_err() {
                        return;
                    }
                }
            };
            let drain = async move { while rx.next().await.is_some() {} };
            tokio::select! {
                _ = keepalive => {}
                _ = drain => {}
                _ = drive(core, socket, c, pps, stop) => {}
            }
        });
        Ok(Client { count, task })
    }
}

/// Whether a datagram is RTP (not STUN, DTLS or RTCP: RFC 5761's payload-type split).
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && (128..=191).contains(&d[0]) && !(192..=223).contains(&d[1])
}

/// A pre-made video packet: one whole non-IDR slice.
fn packet(seq: u16, ts: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(1112);
    p.extend_from_slice(&[0x80, 0x80 | H264_PT]);
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x5ca1_ab1eu32.to_be_bytes());
    p.push(0x41);
    p.resize(1112, 0xa5);
    p
}

/// The media connection's loop: the core's datagrams out, the socket's in (RTP counted, not
/// handed to the core, once connected), its timers, and the publisher's packets on a 1 ms
/// tick.
async fn drive(mut core: ClientCore, socket: UdpSocket, count: Arc<AtomicU64>, pps: u32, stop: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let (start, mut sent) = (Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed) {
        while let Some(t) = core.poll_transmit() {
            let _ = socket.try_send_to(&t.data, t.to);
        }
        while let Some(e) = core.poll_event() {
            connected |= matches!(e, ClientEvent::Connected);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { return };
                let take = |d: &[u8], from: SocketAddr, core: &mut ClientCore| {
                    if connected && is_rtp(d) {
                        count.fetch_add(1, Ordering::Relaxed);
                    } else {
                        core.handle_datagram(Instant::now(), from, Transport::Udp, d);
                    }
                };
                take(&buf[..n], from, &mut core);
                while let Ok((n, from)) = socket.try_recv_from(&mut buf) {
                    take(&buf[..n], from, &mut core);
                }
            }
            _ = tick.tick(), if pps > 0 && connected => {
                let due = (start.elapsed().as_secs_f64() * f64::from(pps)) as u64;
                // A task held up skips what it missed rather than burst it (the rate is the figure).
                sent = sent.max(due.saturating_sub(u64::from(pps / 100)));
                let now = Instant::now();
                while sent < due {
                    sent += 1;
                    core.send_rtp(now, Kind::Video, &packet(sent as u16, (sent * 3000) as u32));
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
        }
    }
}

/// The limit: a plain UDP relay on one core (pinned), `players` sinks, `pps` packets a
/// second in; CPU per datagram sent, µs, read from the relay thread's own /proc entry.
pub fn plain_relay(players: usize, pps: u32, window: Duration) -> anyhow::Result<f64> {
    let relay = std::net::UdpSocket::bind("127.0.0.1:0")?;
    relay.set_read_timeout(Some(Duration::from_millis(100)))?;
    let relay_addr = relay.local_addr()?;
    let sinks: Vec<std::net::UdpSocket> =
        (0..players).map(|_| std::net::UdpSocket::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    let targets: Vec<SocketAddr> = sinks.iter().map(|s| s.local_addr()).collect::<Result<_, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    // Sinks drained, so the relay's sends are delivered as a player's would be.
    let drain = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for s in &sinks {
                let _ = s.set_nonblocking(true);
            }
            while !stop.load(Ordering::Relaxed) {
                let mut any = false;
                for s in &sinks {
                    while s.recv(&mut buf).is_ok() {
                        any = true;
                    }
                }
                if !any {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        })
    };
    let feed = {
        let stop = stop.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
            let (start, mut sent) = (Instant::now(), 0u64);
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * f64::from(pps)) as u64;
                sent = sent.max(due.saturating_sub(u64::from(pps / 100)));
                while sent < due {
                    sent += 1;
                    s.send_to(&packet(sent as u16, 0), relay_addr)?;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(())
        })
    };
    let stop2 = stop.clone();
    let run = std::thread::spawn(move || -> anyhow::Result<(Duration, u64)> {
        pin_this_thread("0")?;
        let mut buf = [0u8; 2048];
        let mut sends = 0u64;
        let (t0, c0) = (Instant::now(), thread_cpu());
        while t0.elapsed() < window && !stop2.load(Ordering::Relaxed) {
            if let Ok(n) = relay.recv(&mut buf) {
                for t in &targets {
                    if relay.send_to(&buf[..n], t).is_ok() {
                        sends += 1;
                    }
                }
            }
        }
        Ok((thread_cpu().saturating_sub(c0), sends))
    });
    let (cpu, sends) = run.join().map_err(|_| anyhow::anyhow!("relay thread panicked"))??;
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    feed.join().map_err(|_| anyhow::anyhow!("feed thread panicked"))??;
    anyhow::ensure!(sends > 0, "the plain relay sent nothing");
    Ok(cpu.as_secs_f64() * 1e6 / sends as f64)
}

/// Pins the calling thread to `cpus` (`taskset -p`, with the thread's ID from /proc).
fn pin_this_thread(cpus: &str) -> anyhow::Result<()> {
    let me = std::fs::read_link("/proc/thread-self").context("/proc/thread-self")?;
    let tid = me.file_name().and_then(|t| t.to_str()).context("thread id")?.to_string();
    let ok = std::process::Command::new("taskset")
        .args(["-p", "-c", cpus, &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .context("taskset")?
        .success();
    anyhow::ensure!(ok, "taskset -p -c {cpus} {tid} failed");
    Ok(())
}

/// The calling thread's CPU time (user + system), from /proc.
fn thread_cpu() -> Duration {
    super::media::stat_cpu(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}
