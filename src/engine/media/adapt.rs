//! Adaptation: a publish stream's video follows its link. Sans-IO, like the supervisor
//! that owns one per published stream: the link's figures and the time in, the rate the
//! pipeline should run at out.
//!
//! The estimate is the lower of the device's own send-side estimate of its uplink (GCC
//! over the server's TWCC feedback) and the cap the server sends (REMB: the lowest
//! estimate among the stream's players' downlinks). The encoder's bitrate is that minus
//! [`AUDIO_KBPS`], with [`HEADROOM`], between `min_bitrate_kbps` and `bitrate_kbps`. Far below the maximum
//! the picture steps down: to half its size below [`HALF_SIZE_BELOW`] of the maximum, and
//! to half its frame rate as well (not below [`MIN_FPS`]) below [`HALF_RATE_BELOW`]; it steps back up, one step at
//! a time, once the target is [`UP_MARGIN`] times above the step's threshold for
//! [`UP_HOLD`].
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
pub(crate) const AUDIO_KBPS: f64 = 50.0;
/// The share of the estimate the encoder aims at: encoders overshoot on keyframes and busy
/// scenes, and retransmissions ride on the same path.
pub(crate) const HEADROOM: f64 = 0.9;
/// Halving the frame rate stops here (or at the configured rate, if lower): below 10 fps a
/// face at the door turns into a slide show.
pub(crate) const MIN_FPS: u32 = 10;
/// Below this fraction of the maximum bitrate the picture is halved in size...
pub(crate) const HALF_SIZE_BELOW: f64 = 0.5;
/// ...and below this fraction its frame rate is halved too.
pub(crate) const HALF_RATE_BELOW: f64 = 0.2;
/// A step back up needs the target this many times its threshold...
pub(crate) const UP_MARGIN: f64 = 1.3;
/// ...for this long (a step costs a keyframe: it must not flap).
pub(crate) const UP_HOLD: Duration = Duration::from_secs(4);
/// A step up undone within this long failed.
pub(crate) const UP_TRIAL: Duration = Duration::from_secs(15);
/// The longest hold before a step up, after failed ones.
pub(crate) const UP_HOLD_MAX: Duration = Duration::from_secs(64);
/// A step down needs the target below its threshold for this long (one dip of the
/// estimate is not a trend).
pub(crate) const DOWN_HOLD: Duration = Duration::from_secs(1);
/// A bitrate change smaller than this fraction of the running one is not applied.
const MIN_CHANGE: f64 = 0.05;

/// How far the picture is stepped down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Step {
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
pub(crate) struct Change {
    pub(crate) rate: VideoRate,
    pub(crate) step: Option<String>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Adapter {
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
    /// The last estimate the link reported (own and cap, the lower), kbit/s.
    pub(crate) estimate_kbps: Option<f64>,
}

impl Adapter {
    /// At full quality until the link says otherwise.
    pub(crate) fn new(cfg: &MediaConfig) -> Adapter {
        let full = VideoRate::full(cfg);
        Adapter {
            full,
            min_kbps: cfg.min_bitrate_kbps.min(cfg.bitrate_kbps),
            step: Step::Full,
            down_since: None,
            up_since: None,
            applied: full,
            stepped_up: None,
            failed_ups: 0,
            estimate_kbps: None,
        }
    }

    /// What the pipeline should run at now (a rebuilt pipeline starts there).
    pub(crate) fn rate(&self) -> VideoRate {
        self.applied
    }

    /// The link's latest estimate (`own`: the device's uplink; `cap`: its players'
    /// lowest, from the server); a change for the pipeline, if one is due.
    pub(crate) fn update(&mut self, now: Instant, own: Option<f64>, cap: Option<f64>) -> Option<Change> {
        let estimate = match (own, cap) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        self.estimate_kbps = Some(estimate);
        let max = f64::from(self.full.kbps);
        let target = (estimate * HEADROOM - AUDIO_KBPS).clamp(f64::from(self.min_kbps), max);
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
        let moved =
            (f64::from(rate.kbps) - f64::from(self.applied.kbps)).abs() >= f64::from(self.applied.kbps) * MIN_CHANGE;
        if reason.is_none() && !moved {
            return None;
        }
        self.applied = rate;
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
    pub(super) fn e(video: f64) -> f64 {
        (video + AUDIO_KBPS) / HEADROOM
    }

    fn adapter() -> (Adapter, Instant) {
        let cfg = MediaConfig { width: 640, height: 480, fps: 30, bitrate_kbps: 1500, ..MediaConfig::default() };
        (Adapter::new(&cfg), Instant::now())
    }

    fn secs(t: Instant, s: f64) -> Instant {
        t + Duration::from_secs_f64(s)
    }

    #[test]
    fn the_bitrate_follows_the_lower_estimate_minus_audio_within_the_configured_range() {
        let (mut a, t) = adapter();
        assert_eq!(a.update(t, None, None), None, "no estimate: nothing changes");
        let c = a.update(t, Some(e(1150.0)), None).unwrap();
        assert_eq!((c.rate.kbps, c.rate.width, c.step), (1150, 640, None));
        // The players' cap is lower than the device's own estimate: it wins.
        assert_eq!(a.update(t, Some(e(1150.0)), Some(e(850.0))).unwrap().rate.kbps, 850);
        // A change under 5% is not worth a reconfiguration.
        assert_eq!(a.update(t, Some(e(870.0)), None), None);
        // Clamped to the configured maximum and minimum.
        assert_eq!(a.update(t, Some(e(4950.0)), None).unwrap().rate.kbps, 1500);
        assert_eq!(a.update(secs(t, 0.5), Some(e(10.0)), None).unwrap().rate.kbps, 150);
    }

    #[test]
    fn the_picture_steps_down_after_a_second_below_a_threshold_and_back_up_after_four_above() {
        let (mut a, t) = adapter();
        // 600 kbit/s of 1500: 37%, below half. The first report only starts the clock.
        let c = a.update(t, Some(e(600.0)), None).unwrap();
        assert_eq!((c.rate.width, c.step.is_none()), (640, true));
        let c = a.update(secs(t, 1.0), Some(e(590.0)), None).unwrap();
        assert_eq!((c.rate.width, c.rate.height, c.rate.fps), (320, 240, 30));
        assert!(c.step.unwrap().contains("below 50% of the maximum 1500"));
        // 250 kbit/s: 17%, below a fifth: half the frame rate too.
        a.update(secs(t, 2.0), Some(e(250.0)), None);
        let c = a.update(secs(t, 3.0), Some(e(250.0)), None).unwrap();
        assert_eq!((c.rate.width, c.rate.fps, c.rate.kbps), (320, 15, 250));
        // Recovered to 1400: 65% would do for full size only with the 1.3 margin (65%), and
        // only after four seconds; meanwhile the bitrate follows.
        let c = a.update(secs(t, 4.0), Some(e(1000.0)), None).unwrap();
        assert_eq!((c.rate.fps, c.rate.kbps, c.step), (15, 1000, None));
        assert_eq!(a.update(secs(t, 7.0), Some(e(1000.0)), None), None);
        let c = a.update(secs(t, 8.0), Some(e(1000.0)), None).unwrap();
        assert_eq!((c.rate.width, c.rate.fps), (320, 30), "one step at a time");
        assert!(c.step.unwrap().contains("stayed above 26%"));
        // The next step's hold starts with the next report.
        assert_eq!(a.update(secs(t, 9.0), Some(e(1000.0)), None), None);
        assert_eq!(a.update(secs(t, 12.0), Some(e(1000.0)), None), None);
        let c = a.update(secs(t, 13.0), Some(e(1000.0)), None).unwrap();
        assert_eq!((c.rate.width, c.rate.fps), (640, 30));
        assert!(c.step.unwrap().contains("stayed above 65%"));
        assert_eq!(a.rate().width, 640);
    }

    #[test]
    fn a_dip_shorter_than_a_second_or_a_recovery_shorter_than_four_does_not_step() {
        let (mut a, t) = adapter();
        a.update(t, Some(e(450.0)), None);
        let c = a.update(secs(t, 0.5), Some(e(1350.0)), None).unwrap();
        assert_eq!((c.rate.width, c.step), (640, None));
        // Down, then up for 3 s, then down again: the up clock restarts.
        a.update(secs(t, 1.0), Some(e(450.0)), None);
        assert_eq!(a.update(secs(t, 2.0), Some(e(450.0)), None).unwrap().rate.width, 320);
        a.update(secs(t, 3.0), Some(e(1350.0)), None);
        a.update(secs(t, 6.0), Some(e(1350.0)), None);
        a.update(secs(t, 6.5), Some(e(450.0)), None);
        a.update(secs(t, 7.0), Some(e(1350.0)), None);
        assert_eq!(a.update(secs(t, 10.0), Some(e(1350.0)), None).map(|c| c.rate.width), None);
        assert_eq!(a.update(secs(t, 11.0), Some(e(1350.0)), None).unwrap().rate.width, 640);
    }
}

#[cfg(test)]
mod trial_tests {
    use super::tests::e;
    use super::*;

    #[test]
    fn a_step_up_undone_on_trial_doubles_the_hold_before_the_next_and_one_that_holds_resets_it() {
        let cfg = MediaConfig { width: 640, height: 480, fps: 30, bitrate_kbps: 1500, ..MediaConfig::default() };
        let mut a = Adapter::new(&cfg);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Down to half size (500 kbit/s), then the estimate grows (the small picture does
        // not fill the path) and the picture steps up after 4 s.
        a.update(at(0), Some(e(450.0)), None);
        a.update(at(1), Some(e(450.0)), None);
        assert_eq!(a.rate().width, 320);
        a.update(at(2), Some(e(1350.0)), None);
        a.update(at(6), Some(e(1350.0)), None);
        assert_eq!(a.rate().width, 640, "stepped up after 4 s");
        // The path did not take it: down again within the trial. The next try waits 8 s.
        a.update(at(8), Some(e(450.0)), None);
        a.update(at(9), Some(e(450.0)), None);
        assert_eq!(a.rate().width, 320);
        a.update(at(10), Some(e(1350.0)), None);
        a.update(at(17), Some(e(1350.0)), None);
        assert_eq!(a.rate().width, 320, "the hold is 8 s after one failed step up");
        a.update(at(18), Some(e(1350.0)), None);
        assert_eq!(a.rate().width, 640);
        // This one holds past the trial: the hold is back to 4 s.
        a.update(at(34), Some(e(1350.0)), None);
        a.update(at(35), Some(e(450.0)), None);
        a.update(at(36), Some(e(450.0)), None);
        assert_eq!(a.rate().width, 320);
        a.update(at(37), Some(e(1350.0)), None);
        a.update(at(41), Some(e(1350.0)), None);
        assert_eq!(a.rate().width, 640);
    }
}
