//! Congestion figures: a "door" `callbox peer` publishes 640x480@30 of `snow` (a scene that
//! does not compress, so the encoder fills whatever it is given) at up to 1.5 Mbit/s to a
//! "flat" player, in network namespaces behind a router (`callbox_faultnet`), with `tc
//! tbf` caps on either side's link; once following the link and once with a fixed rate
//! (`--fixed-rate`), in the same run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbox_faultnet::Direction;
use serde_json::Value;

use super::faults::{Lines, ServerLab, rendered_after};

/// The publisher's maximum bitrate, kbit/s.
pub const MAX_KBPS: f64 = 1500.0;
/// The cap put on a link, kbit/s.
pub const CAP_KBPS: u32 = 500;

/// Figures of one run.
#[derive(Debug, Default)]
pub struct Figures {
    /// Cap on the publisher's uplink to its target at or below 450 kbit/s.
    pub to_target: Option<Duration>,
    /// The player's mean rendered frame rate under that cap.
    pub capped_fps: f64,
    /// The player's stall time under that cap, as a share of it.
    pub stall_share: f64,
    /// Cap lifted to the target back at 90% of the maximum.
    pub to_recover: Option<Duration>,
    /// Cap on the player's downlink only to the publisher's target at or below 450 kbit/s.
    pub to_follow_player: Option<Duration>,
}

/// The first `publish_quality` line after `since` whose target passes `ok`, as time since
/// `since`. Quality lines come every 3 s: the figure is up to 3 s late.
fn target_reached(lines: &Lines, since: Instant, ok: impl Fn(f64) -> bool) -> Option<Duration> {
    let l = lines.lock().ok()?;
    l.iter()
        .find(|(t, v)| *t >= since && v["event"] == "publish_quality" && ok(v["target_kbps"].as_f64().unwrap_or(0.0)))
        .map(|(t, _)| t.saturating_duration_since(since))
}

fn wait_target(lines: &Lines, since: Instant, limit: Duration, ok: impl Fn(f64) -> bool + Copy) -> Option<Duration> {
    while since.elapsed() < limit {
        if let Some(d) = target_reached(lines, since, ok) {
            return Some(d);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// The player's quality lines for `stream` wholly inside [from, to].
fn player_windows(lines: &Lines, stream: &str, from: Instant, to: Instant) -> Vec<Value> {
    let Ok(l) = lines.lock() else { return Vec::new() };
    l.iter()
        .filter(|(t, v)| {
            *t >= from + Duration::from_millis(3200) && *t <= to && v["event"] == "quality" && v["stream_id"] == stream
        })
        .map(|(_, v)| v.clone())
        .collect()
}

/// One run: `secs` under the cap on the publisher's uplink, then lifted, then a cap on the
/// player's downlink only.
pub fn run(adaptive: bool, secs: u64) -> anyhow::Result<Figures> {
    let sl = ServerLab::start(if adaptive { "cc" } else { "cc-fixed" }, 45)?;
    let (door, flat): (Lines, Lines) = (Arc::default(), Arc::default());
    let stream = if adaptive { "door-cc" } else { "door-fixed" };
    let mut args = vec!["--video", "640x480@30", "--bitrate-kbps", "1500", "--pattern", "snow"];
    if !adaptive {
        args.push("--fixed-rate");
    }
    let _flat = sl.peer("flat", None, &flat)?;
    let _door = sl.peer_with("door", Some(stream), &args, &door)?;
    let started = Instant::now();
    while rendered_after(&flat, stream, started, started).is_none_or(|t| t <= started) {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(30), "no first frame");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6));
    let mut f = Figures::default();

    sl.lab.cap("door", Direction::Up, CAP_KBPS)?;
    let capped = Instant::now();
    let stalls_before = player_windows(&flat, stream, started, capped).last().and_then(|v| v["stall_ms"].as_u64());
    std::thread::sleep(Duration::from_secs(secs));
    f.to_target = target_reached(&door, capped, |t| t <= 450.0);
    let windows = player_windows(&flat, stream, capped, Instant::now());
    let fps: Vec<f64> = windows.iter().filter_map(|v| v["render_fps"].as_f64()).collect();
    f.capped_fps = fps.iter().sum::<f64>() / fps.len().max(1) as f64;
    let stalls_after = windows.last().and_then(|v| v["stall_ms"].as_u64()).unwrap_or(0);
    let stalled = stalls_after.saturating_sub(stalls_before.unwrap_or(0));
    f.stall_share = stalled as f64 / (secs as f64 * 1000.0);

    sl.lab.uncap("door", Direction::Up)?;
    let lifted = Instant::now();
    f.to_recover = wait_target(&door, lifted, Duration::from_secs(90), |t| t >= 0.9 * MAX_KBPS);
    std::thread::sleep(Duration::from_secs(5));

    sl.lab.cap("flat", Direction::Down, CAP_KBPS)?;
    let player_capped = Instant::now();
    f.to_follow_player = wait_target(&door, player_capped, Duration::from_secs(30), |t| t <= 450.0);
    sl.lab.uncap("flat", Direction::Down)?;
    Ok(f)
}
