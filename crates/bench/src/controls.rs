//! The media controls' figures: the CPU of a `callbox device` playing one 640x480@30 stream
//! with its video decoded and with audio only (`[display] sink = "none"`), side by side in
//! one run; and how long a player takes to see a publisher's camera go off and on (the
//! notification, and its decoded frames stopping and coming back).

use std::path::Path;
use std::time::{Duration, Instant};

use callbox::engine::{EngineEvent, PublishChannel, TrackState};
use callbox::media::MediaConfig;
use callbox::server::DEV_APP_ID;

use super::media::{ServerProc, engine, proc_cpu, user};
use super::secret;

/// A daemon's CPU while it plays, one window.
pub struct PlayCpu {
    /// `video` or `audio only`.
    pub mode: &'static str,
    /// Fraction of one core.
    pub cpu: f64,
}

/// Camera off/on as a player sees it.
pub struct CameraTimes {
    /// Camera off to the player's RemoteCameraStateUpdate Off.
    pub off_told: Duration,
    /// Camera on to the player's RemoteCameraStateUpdate On.
    pub on_told: Duration,
    /// Camera on to the player's first decoded frame after it.
    pub on_decoded: Duration,
}

fn the_640x480() -> MediaConfig {
    let mut m = MediaConfig::small();
    (m.width, m.height, m.fps, m.bitrate_kbps) = (640, 480, 30, 1000);
    m
}

/// `rounds` of each mode, alternating, `window` each, with the publisher's test `pattern`
/// (`ball`: a mostly still picture; `snow`: every pixel changes, the bitrate is full).
pub async fn play_cpu(pattern: &str, rounds: usize, window: Duration) -> anyhow::Result<Vec<PlayCpu>> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    let (door, _events) = engine(&server.url(), MediaConfig { test_pattern: pattern.into(), ..the_640x480() })?;
    door.login_room("bench-play", user("door"), Default::default()).await?;
    door.start_publishing_stream("door-main", PublishChannel::Main).await?;
    let dir = std::env::temp_dir().join(format!("callbox-bench-play-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for _ in 0..rounds {
        for (mode, sink) in [("video decoded", "fake"), ("audio only", "none")] {
            out.push(PlayCpu { mode, cpu: one_daemon(&server.url(), &dir, sink, window).await? });
        }
    }
    door.destroy().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// A kiosk daemon without a camera (it publishes audio only, so what it costs is mostly
/// playing) with display `sink`; its CPU over `window` once it plays.
async fn one_daemon(url: &str, dir: &Path, sink: &str, window: Duration) -> anyhow::Result<f64> {
    let socket = dir.join(format!("{sink}.sock"));
    let cfg = dir.join(format!("{sink}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nurl = \"{url}\"\napp_id = {DEV_APP_ID}\napp_sign = \"{}\"\n[room]\nroom_id = \"bench-play\"\n\
             user_id = \"kiosk-{sink}\"\n[call]\nmode = \"kiosk\"\n[video]\nsource = \"none\"\n[audio]\nsource = \"test\"\n\
             sink = \"fake\"\n[display]\nsink = \"{sink}\"\n[media]\nbind = \"127.0.0.1\"\n[gpio]\nbackend = \"sim\"\n\
             [control]\nsocket = \"{}\"\n",
            secret(),
            socket.display()
        ),
    )?;
    let daemon = super::device::spawn(&cfg)?;
    let pid = daemon.0.id();
    let playing = |s: &callbox::device::status::Status| {
        // Its first quality report: the play pipeline runs and media has flowed for 3 s.
        s.playing.iter().any(|p| p.stream_id == "door-main" && p.quality.is_some())
    };
    let r = async {
        super::device::wait_status(&socket, "playing the door", playing).await?;
        let c0 = proc_cpu(pid);
        let t0 = Instant::now();
        tokio::time::sleep(window).await;
        anyhow::Ok((proc_cpu(pid) - c0).as_secs_f64() / t0.elapsed().as_secs_f64())
    }
    .await;
    drop(daemon);
    r
}

/// `n` camera off/on cycles between two engines (640x480@30), each timed at the player.
pub async fn camera_times(n: usize) -> anyhow::Result<Vec<CameraTimes>> {
    let server = ServerProc::start("127.0.0.1:0", 0)?;
    let (door, _de) = engine(&server.url(), the_640x480())?;
    let (flat, mut fe) = engine(&server.url(), MediaConfig::small())?;
    door.login_room("bench-camera", user("door"), Default::default()).await?;
    door.start_publishing_stream("door-main", PublishChannel::Main).await?;
    flat.login_room("bench-camera", user("flat"), Default::default()).await?;
    flat.start_playing_stream("door-main").await?;
    let decoded = async |flat: &callbox::engine::Engine| flat.play_counts("door-main").await.map_or(0, |c| c.decoded);
    let deadline = Instant::now() + Duration::from_secs(20);
    while decoded(&flat).await < 30 {
        anyhow::ensure!(Instant::now() < deadline, "the player decoded nothing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let told = async |fe: &mut tokio::sync::mpsc::Receiver<EngineEvent>, want: TrackState| {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, fe.recv()).await {
                Ok(Some(EngineEvent::RemoteCameraStateUpdate { state, .. })) if state == want => return Ok(()),
                Ok(Some(_)) => {}
                _ => anyhow::bail!("the player was not told the camera is {}", want.as_str()),
            }
        }
    };
    let mut out = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        door.enable_camera(false).await?;
        told(&mut fe, TrackState::Off).await?;
        let off_told = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = decoded(&flat).await;
        let t1 = Instant::now();
        door.enable_camera(true).await?;
        told(&mut fe, TrackState::On).await?;
        let on_told = t1.elapsed();
        while decoded(&flat).await <= before {
            anyhow::ensure!(t1.elapsed() < Duration::from_secs(10), "no frame after camera on");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out.push(CameraTimes { off_told, on_told, on_decoded: t1.elapsed() });
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    door.destroy().await;
    flat.destroy().await;
    Ok(out)
}
