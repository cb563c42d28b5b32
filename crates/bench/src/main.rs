//! `callbox-bench`: figures printed by a program, not asserted by timed tests. A program of
//! its own, so the fault lab (network namespaces, nftables; root) and the test CA never ship
//! in the `callbox` binary that goes onto a board. It runs that binary as a child for the
//! server, device and peer roles: the `callbox` next to this program, or `$CALLBOX_BIN`.
//! Login time: from the `login_room` call to its return (Logined), on loopback against an
//! embedded server (or `--server`). Then the media figures of [`media`]: first remote frame,
//! recovery after a server crash, SFU fan-out; and the device daemon's RSS and CPU
//! ([`device`]).

mod calls;
mod congestion;
mod controls;
mod device;
mod faults;
mod hooks;
mod media;
mod repair;
mod sfu;
mod tls;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use callbox::engine::{Auth, Engine, EngineEvent, EngineProfile, RoomConfig, RoomStateReason, UserInfo};
use callbox::server::ServerConfig;
use callbox::server::config::AppConfig;

use callbox::server::DEV_APP_ID as DEMO_APP_ID;

/// Print benchmark figures: login over ws and wss, first remote frame, recovery after a
/// server restart, SFU fan-out, the device daemon's footprint, and (with the fault options)
/// media recovery from network cuts, media paths, congestion and loss repair.
#[derive(clap::Parser)]
#[command(name = "callbox-bench", version = callbox::BUILD, about)]
pub struct BenchArgs {
    /// Logins to time.
    #[arg(long, default_value_t = 200)]
    iterations: usize,
    /// Use this server (ws://host:port, app 1234 with the demo secret) instead of an embedded one.
    #[arg(long)]
    server: Option<String>,
    /// Publish-to-first-remote-frame runs (0: skip).
    #[arg(long, default_value_t = 10)]
    media_iterations: usize,
    /// Server crash-and-restart runs (0: skip).
    #[arg(long, default_value_t = 3)]
    restarts: usize,
    /// Player counts for the SFU fan-out figure (comma-separated; 0: skip).
    #[arg(long, default_value = "1,5,10,20", value_delimiter = ',')]
    fanout: Vec<usize>,
    /// Seconds each fan-out figure is measured over.
    #[arg(long, default_value_t = 10)]
    fanout_secs: u64,
    /// SFU scaling: the server pinned to each of these core counts in turn (0: skip), with
    /// a synthetic publisher and players that count datagrams without decrypting them, and
    /// a plain UDP relay on one core beside it.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    sfu_cores: Vec<usize>,
    /// Players in the SFU scaling figure.
    #[arg(long, default_value_t = 40)]
    sfu_players: usize,
    /// The synthetic publisher's packets per second in the SFU scaling figure.
    #[arg(long, default_value_t = 1000)]
    sfu_pps: u32,
    /// Idle signalling sessions (logged in, no media) for the per-session memory figure (0: skip).
    #[arg(long, default_value_t = 1000)]
    idle_sessions: usize,
    /// Seconds each SFU scaling figure is measured over.
    #[arg(long, default_value_t = 10)]
    sfu_secs: u64,
    /// Seconds each device-daemon footprint figure is measured over (0: skip).
    #[arg(long, default_value_t = 10)]
    device_secs: u64,
    /// Random network cuts of 0.5-10 s (grace 45 s) between two peers in network
    /// namespaces, timing media recovery (0: skip; needs root, ip and nft).
    #[arg(long, default_value_t = 0)]
    fault_cuts: usize,
    /// Cuts of 15 s with a grace of 5 s (a full re-login each), timing media recovery.
    #[arg(long, default_value_t = 0)]
    fault_relogins: usize,
    /// Calls timed to their first frame over each media path, UDP and ICE-TCP (the
    /// publisher's UDP dropped), then 30 s of 1% loss over each, in network namespaces (0:
    /// skip; needs root, ip and nft).
    #[arg(long, default_value_t = 0)]
    paths: usize,
    /// Seconds under a 500 kbit/s cap for the congestion figures (0: none), following the
    /// link and with a fixed rate side by side (root: network namespaces and tc).
    #[arg(long, default_value_t = 0)]
    congestion_secs: u64,
    /// Seconds per loss case for the loss-repair figures (0: none): 20% loss both ways, and
    /// 5% with 50 ms round trip, with repair and without side by side (root: namespaces).
    #[arg(long, default_value_t = 0)]
    repair_secs: u64,
    /// Calls timed from the door's button to the desk's ring and from the answer to both
    /// sides rendering, in network namespaces with no added delay and with 50 ms RTT (0:
    /// skip; needs root, ip and nft).
    #[arg(long, default_value_t = 0)]
    calls: usize,
    /// Seconds per window of the play CPU figure (a device playing one 640x480@30 stream,
    /// video decoded and audio only, alternating twice; 0: skip).
    #[arg(long, default_value_t = 0)]
    play_secs: u64,
    /// Camera off/on cycles timed at the player (0: skip).
    #[arg(long, default_value_t = 0)]
    camera: usize,
    /// Webhook figures: this many events timed to their webhook, then a burst (0: skip).
    #[arg(long, default_value_t = 0)]
    hooks: usize,
    /// Users in the webhook throughput burst (each joins and leaves: two events).
    #[arg(long, default_value_t = 400)]
    hooks_burst: usize,
    /// Snapshot rounds timed to their first byte, ORC as usual and ORC_CODE=backup (0: skip).
    #[arg(long, default_value_t = 0)]
    snapshots: usize,
    /// Make every `--fault-cuts` cut this long (ms) instead of random.
    #[arg(long)]
    fault_cut_ms: Option<u64>,
}

fn main() -> ExitCode {
    let a = <BenchArgs as clap::Parser>::parse();
    // The program prints its own lines; logs stay quiet unless RUST_LOG asks.
    callbox::logging::init("warn");
    let run = || -> anyhow::Result<ExitCode> {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        rt.block_on(bench(a))
    };
    match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("callbox-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The `callbox` binary the benchmarks run as server, device and peer: `$CALLBOX_BIN`, or the
/// one built next to this program (same target directory and profile). Every child is started without `CALLBOX_BIN` in its environment: callbox reads `CALLBOX_*`
/// variables as config overrides and would refuse the unknown key.
pub(crate) fn callbox_exe() -> anyhow::Result<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CALLBOX_BIN") {
        return Ok(p.into());
    }
    let me = std::env::current_exe()?;
    let exe = me.with_file_name("callbox");
    anyhow::ensure!(
        exe.is_file(),
        "no callbox binary at {} (build it: cargo build --release; or set CALLBOX_BIN)",
        exe.display()
    );
    Ok(exe)
}

async fn bench(a: BenchArgs) -> anyhow::Result<ExitCode> {
    // Plain ws and, with an embedded server, wss (a test CA made here) side by side: each
    // iteration logs in over both, so the ratio is not a matter of when each ran.
    let mut targets: Vec<(&str, String, Option<std::path::PathBuf>)> = Vec::new();
    let mut servers = Vec::new();
    let pki = tls::TestPki::new()?;
    match &a.server {
        Some(u) => targets.push(("", u.clone(), None)),
        None => {
            for with_tls in [false, true] {
                let mut cfg: ServerConfig = toml::from_str("")?;
                cfg.listen = "127.0.0.1:0".into();
                cfg.apps = vec![AppConfig::new(DEMO_APP_ID, secret())];
                cfg.limits.logins_per_sec = 10_000.0;
                cfg.limits.login_burst = 10_000.0;
                cfg.state_dir = pki.dir.display().to_string();
                cfg.media.bind = "127.0.0.1".into();
                cfg.media.port = 0;
                if with_tls {
                    cfg.tls.cert = pki.cert.display().to_string();
                    cfg.tls.key = pki.key.display().to_string();
                }
                let s = callbox::server::start(cfg).await?;
                if with_tls {
                    targets.push((" over wss", format!("wss://localhost:{}", s.addr.port()), Some(pki.ca.clone())));
                } else {
                    targets.push((" over ws", format!("ws://{}", s.addr), None));
                }
                servers.push(s);
            }
        }
    }
    let mut login: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let mut resume: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    for i in 0..a.iterations.max(1) {
        for (t, (_, url, ca)) in targets.iter().enumerate() {
            let mut profile = EngineProfile::new(DEMO_APP_ID, Auth::AppSign(secret().into()), url.clone());
            profile.ca_file = ca.clone();
            let (engine, mut events) = Engine::create(profile)?;
            let user = UserInfo::new(format!("bench-{i}-{t}"), String::new());
            let t0 = Instant::now();
            engine.login_room("bench", user, RoomConfig::default()).await?;
            login[t].push(t0.elapsed());
            // Logined is the event the application sees; it is queued before the call returns.
            while let Some(e) = events.recv().await {
                if matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::Logined, .. }) {
                    break;
                }
            }
            let t1 = Instant::now();
            engine.logout_room().await?;
            resume[t].push(t1.elapsed());
            engine.destroy().await;
        }
    }
    for (t, (label, _, _)) in targets.iter().enumerate() {
        print_stats(&format!("login{label} (login_room call -> Logined)"), &mut login[t]);
        print_stats(&format!("logout{label} (logout_room call -> confirmed)"), &mut resume[t]);
    }
    for s in servers {
        s.stop().await?;
    }
    drop(pki);
    callbox::media::init()?;
    if a.hooks > 0 {
        hooks::run(a.hooks, a.hooks_burst).await?;
    }
    if a.snapshots > 0 {
        hooks::snapshot_ttfb(a.snapshots).await?;
    }
    let mut ff = if a.media_iterations > 0 { media::first_frame(a.media_iterations).await? } else { Vec::new() };
    if !ff.is_empty() {
        print_stats("first remote frame (start_publishing_stream call -> player rendered, 640x480@30)", &mut ff);
    }
    if a.media_iterations > 0 {
        let (mut late, gops) = media::late_join(a.media_iterations).await?;
        print_stats(
            "first frame, late joiner (start_playing_stream call -> rendered, stream running, 640x480@30)",
            &mut late,
        );
        println!("  joining players sent the kept GOP by the server: {gops} of {}", a.media_iterations);
    }
    if a.restarts > 0 {
        let mut rs = media::restart_recovery(a.restarts).await?;
        if !rs.is_empty() {
            print_stats("media back after server kill -9 + restart (server listening -> player rendered)", &mut rs);
        }
    }
    let counts: Vec<usize> = a.fanout.iter().copied().filter(|n| *n > 0).collect();
    if !counts.is_empty() {
        for f in media::fanout(&counts, Duration::from_secs(a.fanout_secs)).await? {
            let per_10k = if f.packets_per_sec > 0.0 { f.server_cpu * 10_000.0 / f.packets_per_sec } else { 0.0 };
            println!(
                "SFU fan-out, 720p30 publisher at {:.0} kbps to {} players: {:.0} packets/s forwarded, server CPU {:.1}% of a core, {:.1}% of a core per 10k packets/s",
                f.publisher_kbps,
                f.players,
                f.packets_per_sec,
                f.server_cpu * 100.0,
                per_10k * 100.0
            );
        }
    }
    let cores: Vec<usize> = a.sfu_cores.iter().copied().filter(|n| *n > 0).collect();
    if !cores.is_empty() {
        let window = Duration::from_secs(a.sfu_secs);
        let (players, pps) = (a.sfu_players, a.sfu_pps);
        let limit = tokio::task::spawn_blocking(move || sfu::plain_relay(players, pps, window)).await??;
        let figures = sfu::scaling(&cores, players, pps, window).await?;
        for f in &figures {
            println!(
                "SFU on {} core(s), {} players, {} packets/s sent ({:.0} received): {:.0} packets/s forwarded ({:.0} counted by the players), server CPU {:.2} cores (busiest threads {:.2}, {:.2}), {:.2} us per forwarded packet ({:.1}x a plain UDP relay's {:.2} us)",
                f.cores,
                f.players,
                pps,
                f.in_pps,
                f.forwarded_pps,
                f.received_pps,
                f.server_cpu,
                f.busiest_threads[0],
                f.busiest_threads[1],
                f.us_per_packet(),
                f.us_per_packet() / limit,
                limit,
            );
            println!("SFU on {} core(s): server RSS {:.3} MiB per player connected", f.cores, f.rss_per_player_mib);
        }
    }
    if a.idle_sessions > 0 {
        let kib = sfu::idle_sessions(a.idle_sessions).await?;
        println!(
            "idle signalling sessions: server RSS {kib:.1} KiB per session ({} logged in, no media)",
            a.idle_sessions
        );
    }
    for (n, grace, fixed, what) in [
        (a.fault_cuts, 45, a.fault_cut_ms.map(Duration::from_millis), "network cuts of 0.5-10 s within grace"),
        (a.fault_relogins, 5, Some(Duration::from_secs(15)), "network cuts of 15 s, beyond a 5 s grace (re-login)"),
    ] {
        if n == 0 {
            continue;
        }
        println!("{what}:");
        let mut f = tokio::task::spawn_blocking(move || faults::run(n, grace, fixed)).await??;
        if !f.recovered.is_empty() {
            print_stats(
                &format!("media rendered again both ways after {what} (restore -> both render)"),
                &mut f.recovered,
            );
        }
        println!("{what}: {} of {n} cuts left a stream stuck for 30 s", f.stuck);
    }
    if a.paths > 0 {
        println!("first frame by media path:");
        let n = a.paths;
        for (path, mut times) in tokio::task::spawn_blocking(move || faults::first_frame_by_path(n)).await?? {
            if times.is_empty() {
                println!("first frame over {path}: none of {n} calls rendered");
                continue;
            }
            print_stats(&format!("first frame over {path} (player learns of the stream -> renders)"), &mut times);
        }
        for (path, fps, stalls) in tokio::task::spawn_blocking(|| faults::loss_by_path(30)).await?? {
            println!(
                "1% loss on the publisher's link for 30 s over {path}: player renders {fps:.1} fps (of 15), {stalls} video stalls"
            );
        }
    }
    if a.congestion_secs > 0 {
        let secs = a.congestion_secs;
        println!("congestion: 640x480@30 snow, max 1500 kbit/s, caps of {} kbit/s:", congestion::CAP_KBPS);
        for adaptive in [true, false] {
            let f = tokio::task::spawn_blocking(move || congestion::run(adaptive, secs)).await??;
            let ms = |d: Option<Duration>| d.map_or("never".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
            let label = if adaptive { "following the link" } else { "fixed rate (baseline)" };
            println!(
                "  {label}: uplink cap -> target <= 450 kbit/s: {}; player renders {:.1} fps (of 30), stalled {:.1}% of {secs} s; cap lifted -> target >= 90% of max: {}; player's downlink capped -> target <= 450 kbit/s: {}",
                ms(f.to_target),
                f.capped_fps,
                f.stall_share * 100.0,
                ms(f.to_recover),
                ms(f.to_follow_player)
            );
        }
    }
    if a.repair_secs > 0 {
        let secs = a.repair_secs;
        println!("loss repair: two peers, 320x240@15 each way, loss on the door's link both ways, {secs} s per case:");
        for on in [true, false] {
            let f = tokio::task::spawn_blocking(move || repair::run(on, secs)).await??;
            let label = if on { "repair" } else { "no repair (baseline)" };
            let [flat_sees, door_sees] = f.heavy;
            println!(
                "  {label}: 20% loss: flat renders the door at {:.1} fps, the door renders the flat at {:.1} fps (of {}), frames intact {:.1}% / {:.1}%; audio concealed {:.1}% (flat) / {:.1}% (door); \
                 5% loss + 50 ms RTT: flat shows {} of {} frames intact ({:.1}%), {:.1} freezes a minute",
                flat_sees.fps,
                door_sees.fps,
                repair::FPS,
                flat_sees.intact_share() * 100.0,
                door_sees.intact_share() * 100.0,
                flat_sees.concealed * 100.0,
                door_sees.concealed * 100.0,
                f.light.intact,
                f.light.frames,
                f.light.intact_share() * 100.0,
                f.light.freezes as f64 * 60.0 / f.secs as f64,
            );
        }
    }
    if a.calls > 0 {
        let n = a.calls;
        println!("calls: a door station (callbox device) rings a desk (callbox peer --answer) {n} times:");
        for rtt in [0u64, 50] {
            let mut f = tokio::task::spawn_blocking(move || calls::run(n, rtt)).await??;
            let net = if rtt == 0 { "no added delay".to_string() } else { format!("{rtt} ms RTT to the server") };
            print_stats(
                &format!(
                    "  {net}: button press to the desk ringing (includes the {} ms simulated press)",
                    calls::HOLD_MS
                ),
                &mut f.ring,
            );
            if f.both.is_empty() {
                println!("  {net}: no call rendered on both sides");
            } else {
                print_stats(&format!("  {net}: answer to both sides rendering video"), &mut f.both);
            }
        }
    }
    if a.play_secs > 0 {
        println!(
            "play CPU: a callbox device (no camera, fake audio sink) playing one 640x480@30 stream (1000 kbit/s at most):"
        );
        for pattern in ["ball", "snow"] {
            let runs = controls::play_cpu(pattern, 2, Duration::from_secs(a.play_secs)).await?;
            for r in &runs {
                println!("  {pattern}: {:<14} {:.1}% of a core", r.mode, r.cpu * 100.0);
            }
            let avg = |m: &str| {
                let v: Vec<f64> = runs.iter().filter(|r| r.mode == m).map(|r| r.cpu).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            let (video, audio) = (avg("video decoded"), avg("audio only"));
            println!(
                "  {pattern}: mean video decoded {:.1}%, audio only {:.1}% ({:.1} points of a core saved, {:.0}% of the cost)",
                video * 100.0,
                audio * 100.0,
                (video - audio) * 100.0,
                (1.0 - audio / video.max(1e-6)) * 100.0
            );
        }
    }
    if a.camera > 0 {
        let t = controls::camera_times(a.camera).await?;
        println!("camera off/on at the player ({} cycles, 640x480@30):", t.len());
        print_stats("  camera off -> player told", &mut t.iter().map(|c| c.off_told).collect::<Vec<_>>());
        print_stats("  camera on -> player told", &mut t.iter().map(|c| c.on_told).collect::<Vec<_>>());
        print_stats("  camera on -> player decodes a frame", &mut t.iter().map(|c| c.on_decoded).collect::<Vec<_>>());
    }
    if a.device_secs > 0 {
        for f in device::footprint(Duration::from_secs(a.device_secs)).await? {
            println!(
                "device daemon, {}: RSS {:.1} MiB (peak {:.1} MiB), CPU {:.1}% of a core",
                f.phase,
                f.rss_mib,
                f.peak_mib,
                f.cpu * 100.0
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The app secret of this run's servers: made up per process, so no bench relies on the
/// public demo secret.
pub(crate) fn secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| hex::encode(rand::random::<[u8; 32]>()))
}

fn print_stats(what: &str, v: &mut [Duration]) {
    v.sort();
    let pick = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    println!(
        "{what}: n={} min={:.2} ms median={:.2} ms p95={:.2} ms max={:.2} ms",
        v.len(),
        pick(0.0),
        pick(0.5),
        pick(0.95),
        pick(1.0)
    );
}
