//! Loss-repair figures: a "door" `callbox peer` and a "flat" `callbox peer` each publish
//! 320x240@15 and play the other, in network namespaces behind a router
//! (`callbox_faultnet`), with random loss on the door's link both ways: 20% (nftables),
//! and 5% with 25 ms added each way on its media (a user-space relay that also drops; the
//! door's ICE-TCP to the media port closed so the media stays on that path). Once with repair and once
//! with `--no-repair`, in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbox_faultnet::Fault;
use serde_json::Value;

use super::faults::{Lines, ServerLab, rendered_after};

/// What one side saw of the other's stream over a window.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seen {
    /// Mean rendered frame rate.
    pub fps: f64,
    /// Video frames whose playout time came in the window.
    pub frames: u64,
    /// ... shown intact (whole, in time, after an intact frame or a keyframe).
    pub intact: u64,
    /// Runs of damaged frames of 200 ms or more that began in the window.
    pub freezes: u64,
    /// Audio frames concealed, as a share of the frames sent in the window (50 a second).
    pub concealed: f64,
}

impl Seen {
    /// The share of frames shown intact.
    pub fn intact_share(&self) -> f64 {
        self.intact as f64 / self.frames.max(1) as f64
    }
}

/// Figures of one run (repair on or off).
#[derive(Debug, Default)]
pub struct Figures {
    /// 20% loss both ways: the flat's view of the door, and the door's view of the flat.
    pub heavy: [Seen; 2],
    /// 5% loss with 50 ms round trip: the flat's view of the door.
    pub light: Seen,
    /// The window's length, s.
    pub secs: u64,
}

/// The frame rate the peers publish at.
pub const FPS: f64 = 15.0;

/// The last `quality` line for `stream` at or before `at`.
fn quality_at(lines: &Lines, stream: &str, at: Instant) -> Option<Value> {
    let l = lines.lock().ok()?;
    l.iter()
        .rev()
        .find(|(t, v)| *t <= at && v["event"] == "quality" && v["stream_id"] == stream)
        .map(|(_, v)| v.clone())
}

/// What `lines` (a player) saw of `stream` between `from` and `to`, from its quality lines.
fn seen(lines: &Lines, stream: &str, from: Instant, to: Instant) -> Seen {
    let (Some(a), Some(b)) = (quality_at(lines, stream, from), quality_at(lines, stream, to)) else {
        return Seen::default();
    };
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let secs = to.duration_since(from).as_secs_f64();
    let d = |k: &str| n(&b, k).saturating_sub(n(&a, k));
    let fps: Vec<f64> = lines
        .lock()
        .map(|l| {
            l.iter()
                .filter(|(t, v)| {
                    *t >= from + Duration::from_millis(3200)
                        && *t <= to
                        && v["event"] == "quality"
                        && v["stream_id"] == stream
                })
                .filter_map(|(_, v)| v["render_fps"].as_f64())
                .collect()
        })
        .unwrap_or_default();
    Seen {
        fps: fps.iter().sum::<f64>() / fps.len().max(1) as f64,
        frames: d("video_frames"),
        intact: d("video_frames_intact"),
        freezes: d("video_freezes"),
        concealed: d("audio_concealed") as f64 / (secs * 50.0),
    }
}

/// One run of both cases, `secs` each.
pub fn run(repair: bool, secs: u64) -> anyhow::Result<Figures> {
    let sl = ServerLab::start(if repair { "repair" } else { "no-repair" }, 45)?;
    let (door, flat): (Lines, Lines) = (Arc::default(), Arc::default());
    let mut args = vec!["--video", "320x240@15", "--bitrate-kbps", "500"];
    if !repair {
        args.push("--no-repair");
    }
    let _flat = sl.peer_with("flat", Some("flat-main"), &args, &flat)?;
    let _door = sl.peer_with("door", Some("door-main"), &args, &door)?;
    let started = Instant::now();
    while rendered_after(&flat, "door-main", started, started).is_none_or(|t| t <= started)
        || rendered_after(&door, "flat-main", started, started).is_none_or(|t| t <= started)
    {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no first frame");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(4));
    let mut f = Figures { secs, ..Default::default() };

    sl.lab.apply("door", Fault::Loss(20))?;
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let to = Instant::now();
    f.heavy = [seen(&flat, "door-main", from, to), seen(&door, "flat-main", from, to)];
    sl.lab.clear("door")?;
    std::thread::sleep(Duration::from_secs(5));

    sl.lab.apply("door", Fault::CutTcpPort(7882))?;
    // The relay drops the 5% itself (its datagrams do not pass the router's forward hook).
    let relay = sl.lab.delay_udp_lossy("door", "server", 7882, Duration::from_millis(25), Duration::ZERO, 5)?;
    // The media moves onto the relayed path at the next consent check.
    std::thread::sleep(Duration::from_secs(4));
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    f.light = seen(&flat, "door-main", from, Instant::now());
    drop(relay);
    sl.lab.clear("door")?;
    Ok(f)
}
