//! Adaptation: a publish stream's video follows its link. Sans-IO, like the supervisor
//! that owns one per published stream: the link's figures and the time in, the rate the
//! pipeline should run at out.
//!
//! The estimate is the lower of the device's own send-side estimate of its uplink (GCC
//! over the server's TWCC feedback) and the cap the server sends (REMB: the lowest
//! estimate among the stream's players' downlinks). The encoder's bitrate is that minus
//! [`AUDIO_KBPS`], with [`HEADROOM`], between `min_bitrate_kbps` and `bitrate_kbps`,
//! climbing at most [`RAMP_PER_SEC`] a second and falling at most to [`DOWN_PER_REPORT`]
//! of itself a report; after a collapse of the estimate it climbs only
//! [`NEAR_CEILING_PER_SEC`] near the rate that broke the path. Far below the maximum
//! the picture steps down: to half its size below [`HALF_SIZE_BELOW`] of the maximum, and
//! to half its frame rate as well (not below [`MIN_FPS`]) below [`HALF_RATE_BELOW`]; it
//! steps back up, one step at a time, once the target is [`UP_MARGIN`] times above the
//! step's threshold for [`UP_HOLD`].
//!
//! A step up is also the probe: while the encoder sends less than the path could carry (a
//! small picture), the estimator cannot see the path's limit and its estimate only grows,
//! so only the bigger picture finds out whether the path takes it. A step up that is undone
//! within [`UP_TRIAL`] doubles the hold before the next one (up to [`UP_HOLD_MAX`]), so a
//! path that stays thin costs a short burst of loss a minute, not a sawtooth.

use std::time::{Duration, Instant};

use crate::media::{MediaConfig, VideoRate};

/// Taken off the estimate for audio before video gets the rest, kbit/s: Opus at 32 kbit/s
/// and the RTP, SRTP, UDP and IP headers of 50 audio packets a second.
pub const AUDIO_KBPS: f64 = 50.0;
/// The share of the estimate the encoder aims at: encoders overshoot on keyframes and busy
/// scenes, and retransmissions ride on the same path.
pub const HEADROOM: f64 = 0.9;
/// Halving the frame rate stops here (or at the configured rate, if lower): below 10 fps a
/// face at the door turns into a slide show.
pub const MIN_FPS: u32 = 10;
/// Below this fraction of the maximum bitrate the picture is halved in size...
pub const HALF_SIZE_BELOW: f64 = 0.5;
/// ...and below this fraction its frame rate is halved too.
pub const HALF_RATE_BELOW: f64 = 0.2;
/// A step back up needs the target this many times its threshold...
pub const UP_MARGIN: f64 = 1.3;
/// ...for this long (a step costs a keyframe: it must not flap).
pub const UP_HOLD: Duration = Duration::from_secs(4);
/// A step up undone within this long failed.
pub const UP_TRIAL: Duration = Duration::from_secs(15);
/// The longest hold before a step up, after failed ones.
pub const UP_HOLD_MAX: Duration = Duration::from_secs(64);
/// A step down needs the target below its threshold for this long (one dip of the
/// estimate is not a trend).
pub const DOWN_HOLD: Duration = Duration::from_secs(1);
/// The encoder's bitrate climbs at most this much a second (and 10 kbit/s), however fast
/// the estimate does: the `rtc` GCC's loss half climbs about 28% a second, reaches twice a
/// thin path's capacity before it sees it and then collapses to its floor (measured: a
/// 500 kbit/s uplink went 200 -> 1000 -> 200 kbit/s every 11 s). Climbing at 15%, the
/// encoder meets the path's limit more gently (the delay half may catch it with a queue
/// before a burst of loss does).
pub const RAMP_PER_SEC: f64 = 0.15;
/// The encoder's bitrate falls at most to this share of the running one per report (one a
/// second): the same estimator collapses to its floor on a burst of loss, far below what
/// the path carried a moment before; three reports still take 1500 kbit/s below 330.
pub const DOWN_PER_REPORT: f64 = 0.6;
/// A fall of more than this share in one report is a collapse: the running rate is
/// remembered as what the path did not take...
pub const COLLAPSE: f64 = 0.3;
/// ...for this long.
pub const CEILING_TTL: Duration = Duration::from_secs(30);
/// Above 85% of that rate the bitrate climbs only this much a second.
pub const NEAR_CEILING_PER_SEC: f64 = 0.03;
/// A bitrate change smaller than this fraction of the running one is not applied.
const MIN_CHANGE: f64 = 0.05;

/// How far the picture is stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// Configured size and rate.
    Full,
    /// Half the width and height.
    HalfSize,
    /// Half the width and height, half the frame rate.
    HalfSizeHalfRate,
}

impl Step {
    /// The step a target of `fraction` of the maximum calls for, with `margin` on the
    /// thresholds (1 going down, [`UP_MARGIN`] going up).
    fn for_fraction(fraction: f64, margin: f64) -> Step {
        if fraction < HALF_RATE_BELOW * margin {
            Step::HalfSizeHalfRate
        } else if fraction < HALF_SIZE_BELOW * margin {
            Step::HalfSize
        } else {
            Step::Full
        }
    }
}

/// A new rate for the pipeline; `step` says why when the picture's size or rate changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub rate: VideoRate,
    pub step: Option<String>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Adapter {
    full: VideoRate,
    min_kbps: u32,
    step: Step,
    down_since: Option<Instant>,
    up_since: Option<Instant>,
    applied: VideoRate,
    /// The last step up, while it is on trial.
    stepped_up: Option<Instant>,
    /// Step ups undone in a row.
    failed_ups: u32,
    /// When the last estimate came.
    last_update: Option<Instant>,
    /// When the running rate was applied.
    applied_at: Option<Instant>,
    /// The rate the path last did not take, and when.
    ceiling: Option<(f64, Instant)>,
    /// The last estimate the link reported (own and cap, the lower), kbit/s.
    pub estimate_kbps: Option<f64>,
}

impl Adapter {
    /// At full quality until the link says otherwise.
    pub fn new(cfg: &MediaConfig) -> Adapter {
        let full = cfg.full_rate();
        Adapter {
            full,
            min_kbps: cfg.min_bitrate_kbps.min(cfg.bitrate_kbps),
            step: Step::Full,
            down_since: None,
            up_since: None,
            applied: full,
            stepped_up: None,
            failed_ups: 0,
            last_update: None,
            applied_at: None,
            ceiling: None,
            estimate_kbps: None,
        }
    }

    /// What the pipeline should run at now (a rebuilt pipeline starts there).
    pub fn rate(&self) -> VideoRate {
        self.applied
    }

    /// The link's latest estimate (`own`: the device's uplink; `cap`: its players'
    /// lowest, from the server); a change for the pipeline, if one is due.
    pub fn update(&mut self, now: Instant, own: Option<f64>, cap: Option<f64>) -> Option<Change> {
        let estimate = match (own, cap) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.estimate_kbps = Some(estimate);
        let max = f64::from(self.full.kbps);
        // Climbing is measured from the last change applied: small steps that are not worth
        // a reconfiguration add up.
        let dt = self.applied_at.map_or(1.0, |t| now.saturating_duration_since(t).as_secs_f64().min(5.0));
        self.last_update = Some(now);
        let running = f64::from(self.applied.kbps);
        let wanted = estimate * HEADROOM - AUDIO_KBPS;
        self.ceiling = self.ceiling.filter(|(_, at)| now.saturating_duration_since(*at) < CEILING_TTL);
        // The rate that broke the path: the one running when the estimate collapsed, not
        // the lower ones it passes on its way down.
        if wanted < running * (1.0 - COLLAPSE) && self.ceiling.is_none_or(|(c, _)| running >= 0.85 * c) {
            self.ceiling = Some((running, now));
        }
        let near = self.ceiling.is_some_and(|(c, _)| running >= 0.85 * c);
        let per_sec = if near { NEAR_CEILING_PER_SEC } else { RAMP_PER_SEC };
        let mut up = running * (1.0 + per_sec * dt) + 10.0 * dt;
        if let Some((c, _)) = self.ceiling.filter(|_| !near) {
            up = up.min(0.85 * c);
        }
        let down = running * DOWN_PER_REPORT;
        let target = wanted.clamp(down, up.max(down)).clamp(f64::from(self.min_kbps), max);
        let fraction = target / max;
        let (down, up) = (Step::for_fraction(fraction, 1.0), Step::for_fraction(fraction, UP_MARGIN));
        if self.stepped_up.is_some_and(|t| now.saturating_duration_since(t) >= UP_TRIAL) {
            // The last step up held.
            self.stepped_up = None;
            self.failed_ups = 0;
        }
        let mut reason = None;
        if down > self.step {
            let since = *self.down_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= DOWN_HOLD {
                let threshold = if down == Step::HalfSize { HALF_SIZE_BELOW } else { HALF_RATE_BELOW };
                reason = Some(format!(
                    "target {target:.0} kbit/s is below {:.0}% of the maximum {max:.0} kbit/s",
                    threshold * 100.0
                ));
                self.step = down;
                if self.stepped_up.take().is_some() {
                    self.failed_ups += 1;
                }
            }
        } else {
            self.down_since = None;
        }
        if up < self.step && reason.is_none() {
            let since = *self.up_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.up_hold() {
                // One step at a time: each is a probe of the path.
                self.step = if self.step == Step::HalfSizeHalfRate { Step::HalfSize } else { Step::Full };
                let threshold = if self.step == Step::Full { HALF_SIZE_BELOW } else { HALF_RATE_BELOW };
                reason = Some(format!(
                    "target {target:.0} kbit/s has stayed above {:.0}% of the maximum {max:.0} kbit/s",
                    threshold * UP_MARGIN * 100.0
                ));
                self.stepped_up = Some(now);
            }
        } else {
            self.up_since = None;
        }
        if reason.is_some() {
            self.down_since = None;
            self.up_since = None;
        }
        let rate = self.at_step(target.round() as u32);
        let diff = (f64::from(rate.kbps) - f64::from(self.applied.kbps)).abs();
        // Small changes wait, but the range's ends are reached exactly.
        let at_end = rate.kbps != self.applied.kbps && (rate.kbps == self.full.kbps || rate.kbps == self.min_kbps);
        if reason.is_none() && diff < f64::from(self.applied.kbps) * MIN_CHANGE && !at_end {
            return None;
        }
        self.applied = rate;
        self.applied_at = Some(now);
        Some(Change { rate, step: reason })
    }

    /// The hold before a step up: doubled by each step up undone in a row.
    fn up_hold(&self) -> Duration {
        UP_HOLD.saturating_mul(1 << self.failed_ups.min(4)).min(UP_HOLD_MAX)
    }

    fn at_step(&self, kbps: u32) -> VideoRate {
        let f = self.full;
        // Even sizes: encoders want 4:2:0 chroma to divide evenly.
        let half = |v: u32| ((v / 2) & !1).max(16);
        match self.step {
            Step::Full => VideoRate { kbps, ..f },
            Step::HalfSize => VideoRate { kbps, width: half(f.width), height: half(f.height), fps: f.fps },
            Step::HalfSizeHalfRate => {
                let fps = (f.fps / 2).max(MIN_FPS.min(f.fps));
                VideoRate { kbps, width: half(f.width), height: half(f.height), fps }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The estimate that gives the encoder `video` kbit/s.
    fn e(video: f64) -> f64 {
        (video + AUDIO_KBPS) / HEADROOM
    }

    fn adapter() -> (Adapter, Instant) {
        let cfg = MediaConfig { width: 640, height: 480, fps: 30, bitrate_kbps: 1500, ..MediaConfig::default() };
        (Adapter::new(&cfg), Instant::now())
    }

    fn secs(t: Instant, s: f64) -> Instant {
        t + Duration::from_secs_f64(s)
    }

    /// Feeds `estimate` once a second over [from, to); the rates it changed to, by second.
    fn feed(a: &mut Adapter, t: Instant, from: u64, to: u64, estimate: f64) -> Vec<(u64, VideoRate)> {
        (from..to).filter_map(|s| a.update(secs(t, s as f64), Some(estimate), None).map(|c| (s, c.rate))).collect()
    }

    /// The second after the adapter's last report.
    fn a_now(a: &Adapter, t: Instant) -> u64 {
        a.last_update.map_or(0, |u| u.duration_since(t).as_secs() + 1)
    }

    /// The second at which the picture first became `width` wide.
    fn when_width(changes: &[(u64, VideoRate)], width: u32) -> Option<u64> {
        changes.iter().find(|(_, r)| r.width == width).map(|(s, _)| *s)
    }

    #[test]
    fn the_bitrate_follows_the_lower_estimate_falling_at_most_to_60_percent_and_climbing_15_percent_a_second() {
        let (mut a, t) = adapter();
        assert_eq!(a.update(t, None, None), None, "no estimate: nothing changes");
        let c = a.update(t, Some(e(1150.0)), None).unwrap();
        assert_eq!((c.rate.kbps, c.rate.width, c.step), (1150, 640, None));
        // The players' cap is lower than the device's own estimate: it wins.
        assert_eq!(a.update(t, Some(e(1150.0)), Some(e(850.0))).unwrap().rate.kbps, 850);
        // A change under 5% is not worth a reconfiguration.
        assert_eq!(a.update(secs(t, 0.1), Some(e(870.0)), None), None);
        // Up: 15% a second and 10 kbit/s, to the configured maximum.
        let up = feed(&mut a, t, 1, 6, e(5000.0));
        let kbps: Vec<u32> = up.iter().map(|(_, r)| r.kbps).collect();
        assert_eq!(kbps, vec![987, 1145, 1327, 1500]);
        // The estimate collapses: down to 60% a report, to the configured minimum.
        let down = feed(&mut a, t, 6, 12, e(10.0));
        let kbps: Vec<u32> = down.iter().map(|(_, r)| r.kbps).collect();
        assert_eq!(kbps, vec![900, 540, 324, 194, 150]);
        // It comes back: up to 85% of the rate that broke the path (1500) at 15% a
        // second, then 3% a second (and 10 kbit/s) while that is remembered.
        let back = feed(&mut a, t, 12, 60, e(5000.0));
        let at = |s: u64| back.iter().rev().find(|(x, _)| *x <= s).map_or(150, |(_, r)| r.kbps);
        assert!(at(25) <= 1275 && at(25) > 1200, "{back:?}");
        assert!(at(29) < 1400, "near the ceiling it climbs slowly: {back:?}");
        assert_eq!(at(59), 1500, "{back:?}");
    }

    #[test]
    fn the_picture_steps_down_after_a_second_below_a_threshold_and_back_up_one_step_at_a_time() {
        let (mut a, t) = adapter();
        // 600 kbit/s of 1500: 40%, below half, for a second: half the size.
        let down = feed(&mut a, t, 0, 8, e(600.0));
        let (at, r) = down.iter().find(|(_, r)| r.width == 320).copied().expect("half size");
        assert_eq!((r.height, r.fps, r.kbps), (240, 30, 600));
        assert!(at >= 2, "not before a second below the threshold: {down:?}");
        // 250 kbit/s: 17%, below a fifth: half the frame rate too.
        let down = feed(&mut a, t, 8, 16, e(250.0));
        assert!(down.iter().any(|(_, r)| (r.width, r.fps, r.kbps) == (320, 15, 250)), "{down:?}");
        // The path recovers: the picture comes back one step at a time, each after 4 s
        // above its threshold times the margin.
        let up = feed(&mut a, t, 16, 120, e(1500.0));
        let half_size = up.iter().find(|(_, r)| r.fps == 30).map(|(s, _)| *s).expect("full rate back");
        let full = when_width(&up, 640).expect("full size back");
        assert!(full >= half_size + 4, "{up:?}");
        assert_eq!(a.rate(), VideoRate { kbps: 1500, width: 640, height: 480, fps: 30 });
    }

    #[test]
    fn a_dip_shorter_than_a_second_does_not_step() {
        let (mut a, t) = adapter();
        // 700 of 1500 (47%) for half a second, then the estimate is back.
        a.update(t, Some(e(700.0)), None);
        let c = a.update(secs(t, 0.5), Some(e(1500.0)), None).unwrap();
        assert_eq!((c.rate.width, c.step), (640, None));
        assert!(feed(&mut a, t, 1, 10, e(1500.0)).iter().all(|(_, r)| r.width == 640));
    }

    #[test]
    fn a_step_up_undone_on_trial_doubles_the_hold_before_the_next_and_one_that_holds_resets_it() {
        let (mut a, t) = adapter();
        // Down to half size (450 kbit/s).
        feed(&mut a, t, 0, 6, e(450.0));
        assert_eq!(a.rate().width, 320);
        // The estimate grows (the small picture does not fill the path): the picture steps
        // up once the bitrate has stayed above 65% of the maximum (975 kbit/s) for the hold.
        let hold = |a: &mut Adapter, from: u64| {
            let mut above = None;
            for s in from..from + 120 {
                let c = a.update(secs(t, s as f64), Some(e(1500.0)), None);
                if above.is_none() && a.rate().kbps >= 975 {
                    above = Some(s);
                }
                if c.is_some_and(|c| c.rate.width == 640) {
                    return s - above.unwrap();
                }
            }
            panic!("no step up");
        };
        let first = hold(&mut a, 6);
        assert_eq!(first, 4);
        // The path did not take it: down again within the trial; the next hold is 8 s.
        let from = a_now(&a, t);
        feed(&mut a, t, from, from + 8, e(450.0));
        assert_eq!(a.rate().width, 320);
        let from = a_now(&a, t);
        let second = hold(&mut a, from);
        assert_eq!(second, 8, "the hold doubled");
        // This one holds past the trial: the hold is back to 4 s.
        let from = a_now(&a, t);
        feed(&mut a, t, from, from + 40, e(1500.0));
        feed(&mut a, t, from + 40, from + 48, e(450.0));
        assert_eq!(a.rate().width, 320);
        let third = hold(&mut a, from + 48);
        assert_eq!(third, first);
    }
}
