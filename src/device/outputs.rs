//! LEDs and the door relay on top of a [`GpioBackend`]: LED modes (on, off, blink at 2 Hz)
//! and a timed door pulse. Time is passed in; the daemon calls `handle_timeout` at
//! `poll_timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::call::LedMode;
use super::gpio::{GpioBackend, GpioError, Output};

/// Half a blink period.
pub const BLINK_HALF: Duration = Duration::from_millis(250);

/// See the module docs.
pub struct Outputs {
    backend: Option<Box<dyn GpioBackend>>,
    modes: BTreeMap<Output, LedMode>,
    blink_on: bool,
    next_blink: Option<Instant>,
    door_off_at: Option<Instant>,
    door_pulse: Duration,
    /// The last error from the backend, if any.
    pub last_error: Option<GpioError>,
}

impl Outputs {
    /// All outputs off. `backend` is `None` when GPIO failed to open.
    pub fn new(backend: Option<Box<dyn GpioBackend>>, door_pulse: Duration) -> Self {
        let mut o = Outputs {
            backend,
            modes: Output::ALL.into_iter().map(|o| (o, LedMode::Off)).collect(),
            blink_on: false,
            next_blink: None,
            door_off_at: None,
            door_pulse,
            last_error: None,
        };
        for out in Output::ALL {
            o.drive(out, false);
        }
        o
    }

    /// The backend's name, or `none`.
    pub fn backend(&self) -> &'static str {
        self.backend.as_ref().map(|b| b.name()).unwrap_or("none")
    }

    /// Sets an LED (or the relay) to a mode.
    pub fn set(&mut self, now: Instant, out: Output, mode: LedMode) {
        if self.modes.get(&out) == Some(&mode) {
            return;
        }
        self.modes.insert(out, mode);
        match mode {
            LedMode::On => self.drive(out, true),
            LedMode::Off => self.drive(out, false),
            LedMode::Blink => {
                self.drive(out, self.blink_on);
                self.next_blink.get_or_insert(now + BLINK_HALF);
            }
        }
    }

    /// Energises the door relay for the configured pulse.
    /// How long the next door pulses last (a pulse under way keeps its end).
    pub fn set_door_pulse_length(&mut self, length: Duration) {
        self.door_pulse = length;
    }

    /// Energises the door relay for the pulse length.
    /// The relay's error if it could not be energised (the door did not open); no backend
    /// (GPIO unavailable) is a fault too.
    pub fn door_pulse(&mut self, now: Instant) -> Result<(), String> {
        self.modes.insert(Output::Door, LedMode::On);
        let result = match &mut self.backend {
            Some(b) => b.set(Output::Door, true).map_err(|e| {
                let m = e.to_string();
                self.last_error = Some(e);
                m
            }),
            None => Err("no GPIO backend (see the gpio error at start)".into()),
        };
        if let Err(e) = &result {
            tracing::warn!(callbox_event = "gpio_error", error = %e, "door relay output failed");
            self.modes.insert(Output::Door, LedMode::Off);
            return result;
        }
        self.door_off_at = Some(now + self.door_pulse);
        result
    }

    /// When to call [`Outputs::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_blink, self.door_off_at].into_iter().flatten().min()
    }

    /// Blinks and ends door pulses.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.door_off_at.is_some_and(|t| t <= now) {
            self.door_off_at = None;
            self.set(now, Output::Door, LedMode::Off);
        }
        if self.next_blink.is_some_and(|t| t <= now) {
            self.blink_on = !self.blink_on;
            let blinking: Vec<Output> =
                self.modes.iter().filter(|(_, m)| **m == LedMode::Blink).map(|(o, _)| *o).collect();
            for o in &blinking {
                self.drive(*o, self.blink_on);
            }
            self.next_blink = (!blinking.is_empty()).then_some(now + BLINK_HALF);
        }
    }

    /// Output key -> `on`, `off`, `blink` for the status.
    pub fn modes(&self) -> BTreeMap<String, String> {
        self.modes
            .iter()
            .map(|(o, m)| {
                let m = match m {
                    LedMode::On => "on",
                    LedMode::Off => "off",
                    LedMode::Blink => "blink",
                };
                (o.key().to_string(), m.to_string())
            })
            .collect()
    }

    /// Turns everything off (at exit).
    pub fn all_off(&mut self, now: Instant) {
        for out in Output::ALL {
            self.set(now, out, LedMode::Off);
        }
    }

    fn drive(&mut self, out: Output, on: bool) {
        if let Some(b) = &mut self.backend
            && let Err(e) = b.set(out, on)
        {
            tracing::warn!(callbox_event = "gpio_error", error = %e, "GPIO output failed");
            self.last_error = Some(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records every level it is driven to.
    struct Probe(Arc<Mutex<Vec<(Output, bool)>>>);

    impl GpioBackend for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn set(&mut self, output: Output, on: bool) -> Result<(), GpioError> {
            self.0.lock().unwrap().push((output, on));
            Ok(())
        }
    }

    #[test]
    fn blink_and_door_pulse_follow_virtual_time() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let t = Instant::now();
        let mut o = Outputs::new(Some(Box::new(Probe(log.clone()))), Duration::from_secs(3));
        log.lock().unwrap().clear();
        o.set(t, Output::Ringing, LedMode::Blink);
        assert_eq!(o.poll_timeout(), Some(t + BLINK_HALF));
        o.handle_timeout(t + BLINK_HALF);
        o.handle_timeout(t + BLINK_HALF * 2);
        o.door_pulse(t + BLINK_HALF * 2).unwrap();
        assert_eq!(o.modes()["door"], "on");
        o.set(t, Output::Ringing, LedMode::Off);
        o.handle_timeout(t + BLINK_HALF * 3);
        assert_eq!(o.poll_timeout(), Some(t + BLINK_HALF * 2 + Duration::from_secs(3)), "blinking stopped");
        o.handle_timeout(t + Duration::from_secs(4));
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                (Output::Ringing, false),
                (Output::Ringing, true),
                (Output::Ringing, false),
                (Output::Door, true),
                (Output::Ringing, false),
                (Output::Door, false),
            ]
        );
        assert_eq!(o.poll_timeout(), None);
    }
}
