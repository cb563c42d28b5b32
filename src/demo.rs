//! `callbox demo`: an embedded server and virtual devices calling each other in room `demo`.
//! Until media lands the devices do the signalling part of a call (login, publish, play) and
//! print their room, stream, player and network-quality events.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use callbox::engine::{
    Auth, Engine, EngineEvent, EngineProfile, PlayerState, PublishChannel, RoomConfig, UpdateType, UserInfo,
};
use callbox::server::ServerConfig;
use callbox::server::config::AppConfig;

/// The demo app. Its secret is public: never use it on a real server.
pub const DEMO_APP_ID: u32 = 1234;
/// The demo app's (public, development-only) secret.
pub const DEMO_SECRET: &str = "6b1c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344";

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
    let mut cfg: ServerConfig = toml::from_str("")?;
    cfg.listen = a.listen.clone();
    cfg.apps = vec![AppConfig { app_id: DEMO_APP_ID, secret: DEMO_SECRET.into() }];
    cfg.validate()?;
    let server = callbox::server::start(cfg).await?;
    let url = format!("ws://{}", server.addr);
    println!(
        "callbox demo: server on http://{} (app {DEMO_APP_ID}), room `demo`, {} virtual devices",
        server.addr, a.peers
    );
    println!(
        "  admin: curl -H \"Authorization: Bearer $(callbox token --app-id {DEMO_APP_ID} --secret {DEMO_SECRET} --user '*' --privileges admin)\" http://{}/api/v1/apps/{DEMO_APP_ID}/rooms/demo",
        server.addr
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(usize, EngineEvent)>(1024);
    let mut engines = Vec::new();
    let started = Instant::now();
    for i in 0..a.peers {
        let profile = EngineProfile::new(DEMO_APP_ID, Auth::AppSign(DEMO_SECRET.into()), url.clone());
        let (engine, mut events) = Engine::create(profile)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                if tx.send((i, e)).await.is_err() {
                    break;
                }
            }
        });
        let user = UserInfo { user_id: format!("device-{i}"), user_name: format!("Virtual device {i}") };
        let t0 = Instant::now();
        engine.login_room("demo", user, RoomConfig { token: None, is_user_status_notify: true }).await?;
        println!("device-{i}: logged in to `demo` in {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        engine.start_publishing_stream(&format!("device-{i}-main"), PublishChannel::Main).await?;
        engines.push(engine);
    }
    let mut playing = vec![0usize; a.peers];
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
                    playing[i] += 1;
                }
            }
            EngineEvent::NetworkQuality { user_id, upstream, is_local, .. } => {
                println!(
                    "device-{i}: network quality of {user_id}{} {upstream:?}",
                    if *is_local { " (self)" } else { "" }
                );
            }
            other => println!("device-{i}: {other:?}"),
        }
    }
    println!("summary after {:.1} s:", started.elapsed().as_secs_f64());
    let mut ok = true;
    for (i, n) in playing.iter().enumerate() {
        println!("  device-{i}: playing {n} of {} other streams", a.peers - 1);
        ok &= *n == a.peers - 1;
    }
    for e in engines {
        e.destroy().await;
    }
    server.stop().await?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
