//! The device daemon (`callbox device`), being built. So far: its configuration
//! ([`config`], `/etc/callbox/device.toml`); the call controller ([`call`]), the sans-IO
//! state machine that turns room events, buttons and control commands into what to publish
//! and play, LEDs, the chime and the door relay; button debouncing and short/long press
//! detection ([`buttons`]); systemd notifications ([`systemd`]).

pub mod buttons;
pub mod call;
pub mod config;
pub mod systemd;
