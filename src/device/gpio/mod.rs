//! Buttons, LEDs and the door relay behind one small trait, with three backends picked by
//! `[gpio] backend`: `rppal` (Raspberry Pi), `cdev` (the Linux GPIO character device, for a
//! Jetson and most other boards) and `sim` (no hardware; buttons are pressed over the control
//! socket with `callbox gpio press`).
//!
//! A backend reports raw button levels as [`Edge`]s on a bounded channel (from its own
//! thread, with `try_send`); the daemon debounces them with
//! [`ButtonDetector`](super::buttons::ButtonDetector) and drives outputs with
//! [`GpioBackend::set`].

mod cdev;
mod pi;
mod sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::config::GpioSection;
pub use callbox_core::device::io::{Button, GpioKind, Output, button_by_key, button_key};

pub use sim::SimGpio;

/// A button's level changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edge {
    /// Which button.
    pub button: Button,
    /// Pressed (after any active-low inversion).
    pub pressed: bool,
    /// When it was seen.
    pub at: Instant,
}

/// GPIO failures. The daemon keeps running without the failed lines and lights the fault LED
/// if it can.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The chip or the GPIO block could not be opened.
    #[error("cannot open GPIO {what}: {reason}")]
    Open {
        /// The chip path or "Raspberry Pi GPIO".
        what: String,
        /// Why.
        reason: String,
    },
    /// A line could not be requested (busy, out of range, no permission).
    #[error("cannot request GPIO line {line} ({name}): {reason}")]
    Line {
        /// Line number / BCM pin.
        line: u32,
        /// Config key.
        name: String,
        /// Why.
        reason: String,
    },
    /// Setting an output failed.
    #[error("cannot set GPIO output {name}: {reason}")]
    Set {
        /// Config key.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

/// A GPIO backend.
pub trait GpioBackend: Send {
    /// `rppal`, `cdev` or `sim`.
    fn name(&self) -> &'static str;
    /// Drives an output (`on` = LED lit / relay energised). Outputs not configured are
    /// ignored.
    fn set(&mut self, output: Output, on: bool) -> Result<(), GpioError>;
}

/// The lines of a config, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lines {
    /// Button -> line.
    pub buttons: Vec<(Button, u32)>,
    /// Output -> line.
    pub outputs: Vec<(Output, u32)>,
}

impl Lines {
    /// The lines named in `[gpio.buttons]` and `[gpio.outputs]` (keys already validated).
    pub fn from_config(cfg: &GpioSection) -> Lines {
        let buttons = cfg.buttons.iter().filter_map(|(k, l)| Some((button_by_key(k)?, *l))).collect();
        let outputs = cfg
            .outputs
            .iter()
            .filter_map(|(k, l)| Some((Output::ALL.into_iter().find(|o| o.key() == k)?, *l)))
            .collect();
        Lines { buttons, outputs }
    }
}

/// Opens the configured backend. Edges go to `edges`.
pub fn open(cfg: &GpioSection, edges: mpsc::Sender<Edge>) -> Result<Box<dyn GpioBackend>, GpioError> {
    let lines = Lines::from_config(cfg);
    let debounce = Duration::from_millis(cfg.debounce_ms);
    match cfg.kind() {
        GpioKind::Cdev => Ok(Box::new(cdev::CdevGpio::open(&cfg.chip, &lines, cfg.active_low, debounce, edges)?)),
        GpioKind::Rppal => Ok(Box::new(pi::PiGpio::open(&lines, cfg.active_low, debounce, edges)?)),
        GpioKind::Sim => Ok(Box::new(SimGpio::new())),
    }
}

/// Output levels as the status shows them.
pub type Levels = BTreeMap<Output, bool>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_from_config_and_missing_hardware_errors() {
        let mut cfg = GpioSection::default();
        cfg.buttons.insert("call".into(), 17);
        cfg.buttons.insert("door".into(), 27);
        cfg.outputs.insert("in_call".into(), 22);
        let l = Lines::from_config(&cfg);
        assert_eq!(l.buttons, vec![(Button::Call, 17), (Button::Door, 27)]);
        assert_eq!(l.outputs, vec![(Output::InCall, 22)]);
        assert_eq!(button_by_key("mute"), Some(Button::Mute));
        assert_eq!(button_by_key("bell"), None);

        let (tx, _rx) = mpsc::channel(4);
        cfg.backend = "cdev".into();
        cfg.chip = "/dev/gpiochip-callbox-absent".into();
        let e = open(&cfg, tx.clone()).err().expect("no such chip");
        assert!(e.to_string().contains("/dev/gpiochip-callbox-absent"), "{e}");
        cfg.backend = "rppal".into();
        let e = open(&cfg, tx).err().expect("this machine is not a Raspberry Pi");
        assert!(e.to_string().contains("Raspberry Pi"), "{e}");
    }
}
