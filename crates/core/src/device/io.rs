//! The device's physical vocabulary: buttons, presses, outputs and LED modes, with their
//! config keys. A leaf: the call controller, the button detector, the GPIO backends and the
//! config all speak it, and it imports none of them.

use serde::Serialize;

/// The device's buttons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    /// Call or answer.
    Call,
    /// Leave the call (or decline a ring).
    Leave,
    /// Toggle the microphone.
    Mute,
    /// Open the door.
    Door,
    /// Toggle the camera (a privacy switch).
    Camera,
    /// Toggle the speaker.
    Speaker,
}

/// Short or long press (a long press of Call is the same as Leave, for one-button stations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    /// Released before the long-press time.
    Short,
    /// Held for the long-press time.
    Long,
}

/// An LED's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedMode {
    /// Off.
    Off,
    /// On.
    On,
    /// Blinking.
    Blink,
}

/// The device's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// LED: in the room.
    Online,
    /// LED: an incoming call (blinks).
    Ringing,
    /// LED: in a call.
    InCall,
    /// LED: something needs attention.
    Fault,
    /// The door relay.
    Door,
    /// LED: the camera sends (a privacy light: off whenever the camera is off).
    Camera,
}

impl Output {
    /// Every output, in status order.
    pub const ALL: [Output; 6] =
        [Output::Online, Output::Ringing, Output::InCall, Output::Fault, Output::Door, Output::Camera];

    /// The config key: `online`, `ringing`, `in_call`, `fault`, `door`, `camera`.
    pub fn key(self) -> &'static str {
        match self {
            Output::Online => "online",
            Output::Ringing => "ringing",
            Output::InCall => "in_call",
            Output::Fault => "fault",
            Output::Door => "door",
            Output::Camera => "camera",
        }
    }
}

impl Button {
    /// Every button.
    pub const ALL: [Button; 6] =
        [Button::Call, Button::Leave, Button::Mute, Button::Door, Button::Camera, Button::Speaker];
}

/// The config key of a button: `call`, `leave`, `mute`, `door`.
pub fn button_key(b: Button) -> &'static str {
    match b {
        Button::Call => "call",
        Button::Leave => "leave",
        Button::Mute => "mute",
        Button::Door => "door",
        Button::Camera => "camera",
        Button::Speaker => "speaker",
    }
}

/// A button by its config key.
pub fn button_by_key(key: &str) -> Option<Button> {
    Button::ALL.into_iter().find(|b| button_key(*b) == key)
}

/// Which GPIO backend drives the buttons and outputs (`[gpio] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpioKind {
    /// The Raspberry Pi's GPIO through rppal.
    Rppal,
    /// A Linux GPIO character device (`/dev/gpiochipN`).
    Cdev,
    /// Simulated: buttons pressed with `callbox gpio press`, outputs only shown.
    Sim,
}

impl GpioKind {
    /// Every backend, in the order the config error lists them.
    pub const ALL: [GpioKind; 3] = [GpioKind::Rppal, GpioKind::Cdev, GpioKind::Sim];

    /// The config's name: `rppal`, `cdev` or `sim`.
    pub fn as_str(self) -> &'static str {
        match self {
            GpioKind::Rppal => "rppal",
            GpioKind::Cdev => "cdev",
            GpioKind::Sim => "sim",
        }
    }

    /// The backend of a config name.
    pub fn parse(name: &str) -> Option<GpioKind> {
        GpioKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}
