//! `callbox demo`: an embedded server and virtual devices calling each other in room `demo`.
//! Each device publishes a test pattern and a tone (320x240 at 15 fps, x264enc or the board's
//! encoder) and plays every other device's stream; quality lines every 3 s, then a summary.
//! Exits 1 if media did not flow between every pair.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::collections::HashMap;

use callbox::engine::{
    Auth, Engine, EngineEvent, EngineProfile, MediaEventKind, PlayerState, PublishChannel, RoomConfig, UpdateType,
    UserInfo,
};
use callbox::media::MediaConfig;
use callbox::server::ServerConfig;
use callbox::server::config::AppConfig;

/// The demo app. Its secret is public: never use it on a real server.
pub const DEMO_APP_ID: u32 = callbox::server::DEV_APP_ID;
/// The demo app's (public, development-only) secret.
pub const DEMO_SECRET: &str = callbox::server::DEV_SECRET;

/// Arguments of `callbox demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Virtual devices in the room.
    #[arg(long, default_value_t = 2)]
    peers: usize,
    /// Seconds to run (0: until Ctrl-C).
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Server listen address.
    #[arg(long, default_value = "127.0.0.1:7880")]
    listen: String,
}

/// `callbox demo`.
pub fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    if a.peers == 0 || a.peers > 16 {
        anyhow::bail!("--peers must be between 1 and 16");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(demo(a))
}

async fn demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    callbox::media::init()?;
    let mut cfg: ServerConfig = toml::from_str("")?;
    cfg.listen = a.listen.clone();
    cfg.apps = vec![AppConfig::new(DEMO_APP_ID, DEMO_SECRET)];
    // Media stays on loopback: the demo is for this machine only.
    cfg.media.bind = "127.0.0.1".into();
    cfg.media.port = 0;
    cfg.validate()?;
    let server = callbox::server::start(cfg).await?;
    let url = format!("ws://{}", server.addr);
    println!(
        "callbox demo: server on http://{} (app {DEMO_APP_ID}), media on udp://{}, room `demo`, {} virtual devices",
        server.addr,
        server.media_addr.map(|m| m.to_string()).unwrap_or_default(),
        a.peers
    );
    println!(
        "  admin: curl -H \"Authorization: Bearer $(callbox token --app-id {DEMO_APP_ID} --secret {DEMO_SECRET} --user '*' --privileges admin)\" http://{}/api/v1/apps/{DEMO_APP_ID}/rooms/demo",
        server.addr
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, EngineEvent)>(1024);
    let mut engines = Vec::new();
    let started = Instant::now();
    for i in 0..a.peers {
        let profile = EngineProfile::new(DEMO_APP_ID, Auth::AppSign(DEMO_SECRET.into()), url.clone())
            .with_media(MediaConfig::small());
        let (engine, mut events) = Engine::create(profile)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((i, e)).await.is_err() {
                    break;
                }
            }
        });
        let user = UserInfo::new(format!("device-{i}"), format!("Virtual device {i}"));
        let t0 = Instant::now();
        engine.login_room("demo", user, RoomConfig { token: None, is_user_status_notify: true }).await?;
        println!("device-{i}: logged in to `demo` in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        engine.start_publishing_stream(&format!("device-{i}-main"), PublishChannel::Main).await?;
        engines.push(engine);
    }
    // Per device and played stream: when Playing started, first-frame time, frames/audio decoded.
    let mut plays: Vec<HashMap<String, PlayStat>> = vec![HashMap::new(); a.peers];
    let deadline = (a.duration > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(a.duration));
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, rx.recv()).await.ok().flatten(),
                None => tokio::select! {
                    e = rx.recv() => e,
                    _ = callbox::server::wait_for_signal() => None,
                },
            }
        };
        let Some((i, e)) = next.await else { break };
        match &e {
            EngineEvent::RoomStreamUpdate { update: UpdateType::Add, streams, .. } => {
                for s in streams {
                    println!("device-{i}: stream {} from {} added; playing it", s.stream_id, s.user.user_id);
                    engines[i].start_playing_stream(&s.stream_id).await?;
                }
            }
            EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, streams, .. } => {
                for s in streams {
                    engines[i].stop_playing_stream(&s.stream_id).await?;
                }
            }
            EngineEvent::PlayerStateUpdate { stream_id, state, error_code } => {
                println!("device-{i}: player {stream_id} -> {state:?} (code {})", error_code.0);
                if *state == PlayerState::Playing {
                    plays[i].entry(stream_id.clone()).or_default().since = Some(Instant::now());
                }
            }
            EngineEvent::PublisherEncoder { stream_id, encoder, hardware, reason } => {
                let kind = if *hardware { "hardware" } else { "software" };
                println!("device-{i}: {stream_id} encodes with {encoder} ({kind}: {reason})");
            }
            EngineEvent::MediaEvent { stream_id, event } => {
                if *event == MediaEventKind::RenderedFirstFrame {
                    let p = plays[i].entry(stream_id.clone()).or_default();
                    p.first_frame = p.since.map(|t| t.elapsed());
                }
                println!("device-{i}: {stream_id}: {event:?}");
            }
            EngineEvent::PublisherQualityUpdate { stream_id, quality: q } => println!(
                "device-{i} -> {stream_id}: capture {:.1} fps, encode {:.1}, send {:.1}, video {:.0} kbps (target {:.0}, estimate {:.0}), audio {:.0} kbps, rtt {:.1} ms, loss {:.1}%, {}",
                q.capture_fps,
                q.encode_fps,
                q.send_fps,
                q.video_kbps,
                q.target_kbps,
                q.estimate_kbps,
                q.audio_kbps,
                q.rtt_ms,
                q.packet_loss * 100.0,
                q.encoder
            ),
            EngineEvent::PublisherVideoAdapted { stream_id, rate, reason } => {
                println!("device-{i} -> {stream_id}: video now {rate}: {reason}")
            }
            EngineEvent::PlayerQualityUpdate { stream_id, quality: q } => {
                println!(
                    "device-{i} <- {stream_id}: receive {:.1} fps, decode {:.1}, render {:.1}, video {:.0} kbps, audio {:.0} kbps, loss {:.1}%, stalls {}, frames {}",
                    q.receive_fps,
                    q.decode_fps,
                    q.render_fps,
                    q.video_kbps,
                    q.audio_kbps,
                    q.packet_loss * 100.0,
                    q.stall_count,
                    q.frames_decoded
                );
                let p = plays[i].entry(stream_id.clone()).or_default();
                p.frames = q.frames_decoded;
                p.audio = q.audio_decoded;
            }
            EngineEvent::NetworkQuality { .. } | EngineEvent::RoomUserUpdate { .. } => {}
            other => println!("device-{i}: {other:?}"),
        }
    }
    println!("summary after {:.1} s:", started.elapsed().as_secs_f64());
    let mut ok = true;
    for (i, streams) in plays.iter().enumerate() {
        let flowing = streams.values().filter(|p| p.frames > 0 && p.audio > 0).count();
        ok &= flowing == a.peers - 1;
        println!("  device-{i}: media flowing from {flowing} of {} other devices", a.peers - 1);
        let mut names: Vec<&String> = streams.keys().collect();
        names.sort();
        for name in names {
            let p = &streams[name];
            let first = p.first_frame.map_or("none".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3));
            println!(
                "    {name}: {} frames decoded, {} audio buffers decoded, first frame {first} after Playing",
                p.frames, p.audio
            );
        }
    }
    for e in engines {
        e.destroy().await;
    }
    server.stop().await?;
    if !ok {
        eprintln!("callbox demo: media did not flow between every pair of devices");
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

#[derive(Debug, Clone, Default)]
struct PlayStat {
    since: Option<Instant>,
    first_frame: Option<Duration>,
    frames: u64,
    audio: u64,
}
