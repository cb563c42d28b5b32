//! The device's sans-IO parts: [`call`] (the call controller), [`buttons`] (debounce and
//! press detection) and [`io`] (buttons, outputs and LED modes by name).

pub mod buttons;
pub mod call;
pub mod io;
