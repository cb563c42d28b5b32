//! The device daemon (`callbox device`): what runs on the board.
//!
//! - [`config`]: `/etc/callbox/device.toml`, validated with the key named;
//! - [`call`]: the call controller, a sans-IO state machine that turns room events, buttons
//!   and control commands into what to publish and play, LEDs, the chime and the door relay;
//! - [`buttons`]: debouncing and short/long press detection;
//! - [`gpio`]: the hardware trait and its rppal, cdev and sim backends; [`outputs`]: LED
//!   modes and the door pulse on top of it;
//! - [`daemon`]: the supervisor loop that ties them to the engine;
//! - [`control`] and [`status`]: the control socket and what `callbox status` shows;
//! - [`systemd`]: READY/STATUS/WATCHDOG/STOPPING (logging, shared with the server: [`crate::logging`]);
//! - [`doctor`]: `callbox doctor`, the field check.

pub mod config;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod doctor;
pub mod gpio;
pub mod mqtt;
pub mod outputs;
pub mod status;
pub mod systemd;

pub use callbox_core::device::{buttons, call, io};
