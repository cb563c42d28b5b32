//! The device daemon (`callbox device`), being built. So far: systemd notifications
//! ([`systemd`]), its configuration
//! ([`config`], `/etc/callbox/device.toml`) and the call controller ([`call`]), the sans-IO
//! state machine that turns room events, buttons and control commands into what to publish
//! and play, LEDs, the chime and the door relay.

pub mod call;
pub mod config;
pub mod systemd;
