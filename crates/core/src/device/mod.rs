//! The device's sans-IO parts: [`call`] (the call controller), [`buttons`] (debounce and
//! press detection) [`io`] (buttons, outputs and LED modes by name) and [`mqtt`] (the Home Assistant topics).

pub mod buttons;
pub mod call;
pub mod io;
pub mod mqtt;
