//! The device's call controller as a sans-IO state machine: room and call events, buttons
//! and control commands in; what to ask the server, what to publish and play, LEDs, the
//! chime and the door relay out. Time is an input (`handle_timeout`), so every rule is
//! unit-tested with virtual time.
//!
//! Calls are the server's: the controller asks (ring the callee, answer, decline, hang up)
//! and follows what the server says of the call. States:
//! - `Idle`;
//! - `RingingOut`: the call button rang the configured callee; our stream is published at
//!   once so the callee can see who rings (early video);
//! - `Ringing`: a call rings here (chime, blinking LED); the call button answers, leave (or a
//!   long press) declines, auto-answer answers after its delay;
//! - `InCall`: answered; we publish and play the other side's streams, and only theirs.
//!
//! Another member joining the room or publishing in it rings nothing. Kiosk mode keeps the
//! room call of a reception screen (in a call whenever another member publishes, playing
//! every stream) and answers any ring at once.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

pub use super::io::{Button, LedMode, Output, Press};
use crate::proto::{CallPhase, ErrorCode, RingOrder};

/// How the device takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// A room call whenever another member publishes (reception kiosk, lift screen); rings
    /// are answered at once.
    Kiosk,
    /// Rings on an incoming call; a person answers with the call button.
    Intercom,
    /// Rings, then answers by itself after the delay.
    AutoAnswer(Duration),
}

/// Whom the call button rings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Callees {
    /// User IDs; empty: every other member of the room that can answer.
    pub users: Vec<String>,
    /// Together or in turn.
    pub order: RingOrder,
    /// Seconds each callee rings.
    pub ring_secs: Option<u32>,
}

/// The call state, as `callbox status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// No call.
    Idle,
    /// We ring someone.
    RingingOut,
    /// Someone rings us.
    Ringing,
    /// In a call.
    InCall,
}

impl CallState {
    /// `idle`, `ringing_out`, `ringing` or `in_call`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
            CallState::RingingOut => "ringing_out",
            CallState::Ringing => "ringing",
            CallState::InCall => "in_call",
        }
    }
}

/// What the controller learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// In the room (logged in or reconnected).
    RoomUp,
    /// Not in the room (reconnecting or gone).
    RoomDown,
    /// Another member's stream appeared.
    StreamAdded {
        /// The stream.
        stream: String,
        /// Its publisher.
        user: String,
    },
    /// Another member's stream went away.
    StreamRemoved(String),
    /// A button was pressed.
    Button(Button, Press),
    /// `callbox call join`: as the call button (ring out, or answer).
    Join,
    /// `callbox call leave`: as the leave button (hang up, cancel or decline).
    Leave,
    /// `callbox call mute` / `unmute`.
    SetMute(bool),
    /// `callbox call camera on|off`.
    SetCamera(bool),
    /// `callbox call speaker on|off`.
    SetSpeaker(bool),
    /// The server's answer to [`Action::Call`]: the call's ID, or why it was not placed.
    Placed(Result<u64, ErrorCode>),
    /// A call rings here.
    Incoming {
        /// The call.
        call_id: u64,
        /// Who calls (user ID).
        caller: String,
    },
    /// A step of a call we are in.
    CallUpdate {
        /// The call.
        call_id: u64,
        /// What happened.
        state: CallPhase,
        /// The other side of this step (user ID).
        peer: String,
        /// Why, for `NotAnswered` and `Ended`.
        reason: ErrorCode,
    },
    /// The answer to [`Action::OpenDoor`]: opened, or why not.
    DoorOpened(Result<(), ErrorCode>),
    /// Someone the server allowed asks this station to open its door.
    DoorRequest {
        /// Echo it in the answer.
        request_id: u64,
        /// Who asks (user ID).
        from: String,
    },
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log in to the configured room. The daemon's own (at start and after a failed or
    /// lost login), never the controller's; carried out by the engine worker like the
    /// publish, play, mute and call actions.
    Login,
    /// Publish our stream.
    Publish,
    /// Stop publishing our stream.
    StopPublish,
    /// Play this stream.
    Play(String),
    /// Stop playing this stream.
    StopPlay(String),
    /// Mute (true) or unmute the microphone.
    Mute(bool),
    /// Camera on (true) or off: the switch, and the privacy rule (off outside calls).
    Camera(bool),
    /// Speaker on (true) or off.
    Speaker(bool),
    /// Ring these callees; the answer comes back as [`Input::Placed`].
    Call(Callees),
    /// Answer this call.
    Answer(u64),
    /// Decline this call.
    Decline(u64),
    /// Cancel or hang up this call.
    HangUp(u64),
    /// Start (true) or stop the ring chime.
    Chime(bool),
    /// Set an LED (an [`Output`] other than the door relay): on, off, or blinking.
    Led(Output, LedMode),
    /// Pulse the door relay (the station's own door button).
    DoorPulse,
    /// Ask door station `0` (the other side of our call) to open its door: the door button
    /// of a station without a relay of its own (an indoor unit).
    OpenDoor(String),
    /// Pulse the door relay for door request `request_id` of `from` and answer it with how
    /// that went.
    OpenDoorFor {
        /// The request.
        request_id: u64,
        /// Who asked.
        from: String,
    },
    /// The call state changed (for status, logs and STATUS=); the peer when there is one.
    State(CallState),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Idle,
    /// Our call: its ID once placed.
    RingingOut {
        id: Option<u64>,
    },
    Ringing {
        id: u64,
        caller: String,
    },
    InCall {
        id: u64,
        peer: String,
    },
}

/// See the module docs.
pub struct CallController {
    mode: CallMode,
    callees: Callees,
    call: Phase,
    /// Kiosk: in the room call.
    kiosk_in_call: bool,
    /// Our call was hung up before the server gave its ID: hang up when it comes.
    pending_cancel: bool,
    /// This station has a door relay of its own (its door button pulses it).
    own_door: bool,
    /// Other members' streams: stream ID -> user ID.
    remote: BTreeMap<String, String>,
    /// The streams we play now.
    playing: Vec<String>,
    publishing: bool,
    muted: bool,
    /// The camera switch (buttons, `callbox call camera`).
    camera: bool,
    /// Privacy: the camera is off outside calls (it goes on when a call starts ringing).
    privacy: bool,
    /// What the camera was last set to.
    camera_sent: Option<bool>,
    speaker: bool,
    deadline: Option<Instant>,
    out: VecDeque<Action>,
}

impl CallController {
    /// A controller in `mode` whose call button rings `callees`.
    pub fn new(mode: CallMode, callees: Callees) -> Self {
        CallController {
            mode,
            callees,
            call: Phase::Idle,
            kiosk_in_call: false,
            pending_cancel: false,
            own_door: true,
            remote: BTreeMap::new(),
            playing: Vec::new(),
            publishing: false,
            muted: false,
            camera: true,
            privacy: false,
            camera_sent: None,
            speaker: true,
            deadline: None,
            out: VecDeque::new(),
        }
    }

    /// Whether this station has a door relay of its own (default true). Without one, the
    /// door button asks the other side of the call to open its door.
    pub fn with_own_door(mut self, own_door: bool) -> Self {
        self.own_door = own_door;
        self
    }

    /// Privacy: the camera (and its LED) is off outside calls; it goes on when a call
    /// starts ringing, in either direction, and off again when it ends.
    pub fn with_privacy(mut self, privacy: bool) -> Self {
        self.privacy = privacy;
        self.update_camera();
        self
    }

    /// Whether the camera sends now.
    pub fn camera(&self) -> bool {
        self.camera_sent.unwrap_or(self.camera)
    }

    /// Whether the speaker is on.
    pub fn speaker(&self) -> bool {
        self.speaker
    }

    /// A new mode and callees from a reloaded config: they apply from the next call; a call
    /// under way goes on as it is.
    pub fn reconfigure(&mut self, mode: CallMode, callees: Callees) {
        self.mode = mode;
        self.callees = callees;
    }

    /// The current call state.
    pub fn state(&self) -> CallState {
        match &self.call {
            Phase::Idle if self.kiosk_in_call => CallState::InCall,
            Phase::Idle => CallState::Idle,
            Phase::RingingOut { .. } => CallState::RingingOut,
            Phase::Ringing { .. } => CallState::Ringing,
            Phase::InCall { .. } => CallState::InCall,
        }
    }

    /// The other side: who rings us, or who we are in a call with.
    pub fn peer(&self) -> Option<&str> {
        match &self.call {
            Phase::Ringing { caller, .. } => Some(caller),
            Phase::InCall { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// The call's ID, once the server gave one.
    pub fn call_id(&self) -> Option<u64> {
        match &self.call {
            Phase::RingingOut { id, .. } => *id,
            Phase::Ringing { id, .. } | Phase::InCall { id, .. } => Some(*id),
            Phase::Idle => None,
        }
    }

    /// Whether the microphone is muted.
    pub fn muted(&self) -> bool {
        self.muted
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When to call [`CallController::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        match input {
            Input::RoomUp => {
                self.out.push_back(Action::Led(Output::Online, LedMode::On));
            }
            Input::RoomDown => {
                // The engine reconnects by itself and the server keeps the call for the
                // grace period; only the LED tells.
                self.out.push_back(Action::Led(Output::Online, LedMode::Off));
            }
            Input::StreamAdded { stream, user } => {
                if self.remote.insert(stream.clone(), user.clone()).is_some() {
                    return;
                }
                if self.mode == CallMode::Kiosk {
                    return self.kiosk_stream_added(stream);
                }
                if matches!(&self.call, Phase::InCall { peer, .. } if *peer == user) {
                    self.play(stream);
                }
            }
            Input::StreamRemoved(stream) => {
                if self.remote.remove(&stream).is_none() {
                    return;
                }
                self.stop_play(&stream);
                if self.mode == CallMode::Kiosk && self.kiosk_in_call && self.remote.is_empty() {
                    self.kiosk_leave();
                }
            }
            Input::Button(Button::Call, Press::Short) | Input::Join => self.call_button(),
            Input::Button(Button::Call, Press::Long) | Input::Button(Button::Leave, _) | Input::Leave => {
                self.leave_button()
            }
            Input::Button(Button::Mute, _) => self.set_mute(!self.muted),
            Input::SetMute(m) => self.set_mute(m),
            Input::Button(Button::Camera, _) => self.set_camera(!self.camera),
            Input::SetCamera(on) => self.set_camera(on),
            Input::Button(Button::Speaker, _) => self.set_speaker(!self.speaker),
            Input::SetSpeaker(on) => self.set_speaker(on),
            Input::Button(Button::Door, _) => match &self.call {
                _ if self.own_door => self.out.push_back(Action::DoorPulse),
                Phase::InCall { peer, .. } => self.out.push_back(Action::OpenDoor(peer.clone())),
                _ => tracing::info!("door button: no door of our own and no call whose door to open"),
            },
            Input::DoorOpened(result) => match result {
                Ok(()) => tracing::info!(callbox_event = "door_opened", "the door confirmed it opened"),
                Err(code) => tracing::warn!(
                    callbox_event = "door_not_opened",
                    error_code = code.0,
                    "the door did not open: {}",
                    code.name()
                ),
            },
            Input::DoorRequest { request_id, from } => self.out.push_back(Action::OpenDoorFor { request_id, from }),
            Input::Placed(result) => self.placed(result),
            Input::Incoming { call_id, caller } => self.incoming(now, call_id, caller),
            Input::CallUpdate { call_id, state, peer, reason } => self.call_update(call_id, state, peer, reason),
        }
    }

    /// Timers: auto-answer.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.deadline = None;
        if let Phase::Ringing { id, caller } = self.call.clone() {
            tracing::info!(call_id = id, "auto-answer");
            self.answer(id, caller);
        }
    }

    // ------------------------------------------------------------ steps

    fn call_button(&mut self) {
        match self.call.clone() {
            Phase::Idle if self.mode == CallMode::Kiosk => self.kiosk_join(),
            Phase::Idle => {
                self.call = Phase::RingingOut { id: None };
                self.out.push_back(Action::Call(self.callees.clone()));
                self.state_changed();
                self.out.push_back(Action::Led(Output::Ringing, LedMode::Blink));
                self.publish();
            }
            Phase::Ringing { id, caller } => self.answer(id, caller),
            Phase::RingingOut { .. } | Phase::InCall { .. } => {}
        }
    }

    fn leave_button(&mut self) {
        match self.call.clone() {
            Phase::Idle => {
                if self.kiosk_in_call {
                    self.kiosk_leave();
                }
            }
            Phase::RingingOut { id: Some(id), .. } | Phase::InCall { id, .. } => {
                self.out.push_back(Action::HangUp(id));
                self.back_to_idle();
            }
            Phase::RingingOut { id: None, .. } => {
                // Hung up before the server placed it: hang up once the ID comes.
                self.back_to_idle();
                self.pending_cancel = true;
            }
            Phase::Ringing { id, .. } => {
                self.out.push_back(Action::Decline(id));
                self.back_to_idle();
            }
        }
    }

    fn placed(&mut self, result: Result<u64, ErrorCode>) {
        match (&mut self.call, result) {
            (Phase::RingingOut { id, .. }, Ok(call_id)) if id.is_none() => *id = Some(call_id),
            (_, Err(code)) if std::mem::take(&mut self.pending_cancel) => {
                tracing::debug!(error_code = code.0, "a call hung up before it was placed was not placed");
            }
            (Phase::RingingOut { .. }, Err(code)) => {
                tracing::warn!(callbox_event = "call_failed", error_code = code.0, "call not placed: {}", code.name());
                self.back_to_idle();
            }
            (_, Ok(call_id)) if std::mem::take(&mut self.pending_cancel) => {
                self.out.push_back(Action::HangUp(call_id));
            }
            _ => {}
        }
    }

    fn incoming(&mut self, now: Instant, id: u64, caller: String) {
        if self.call_id() == Some(id) {
            return;
        }
        if self.call != Phase::Idle {
            // The server rings only members in no call; a late ring after our own call
            // started is declined rather than left to time out.
            self.out.push_back(Action::Decline(id));
            return;
        }
        if self.mode == CallMode::Kiosk {
            self.out.push_back(Action::Answer(id));
            self.call = Phase::InCall { id, peer: caller };
            self.state_changed();
            return self.kiosk_join();
        }
        self.call = Phase::Ringing { id, caller };
        self.deadline = match self.mode {
            CallMode::AutoAnswer(d) => Some(now + d),
            _ => None,
        };
        self.state_changed();
        self.out.push_back(Action::Chime(true));
        self.out.push_back(Action::Led(Output::Ringing, LedMode::Blink));
    }

    fn call_update(&mut self, call_id: u64, state: CallPhase, peer: String, reason: ErrorCode) {
        // Our call before its ID came back: its first update names it.
        if let Phase::RingingOut { id: id @ None, .. } = &mut self.call {
            *id = Some(call_id);
        }
        if self.call_id() != Some(call_id) {
            // A call of ours we gave up on (its placing failed while the server placed it
            // all the same, seen on a resume): ended rather than left ringing.
            if self.call == Phase::Idle && state != CallPhase::Ended && !self.pending_cancel {
                self.out.push_back(Action::HangUp(call_id));
            }
            return;
        }
        match state {
            CallPhase::Ringing | CallPhase::NotAnswered => {
                tracing::info!(callbox_event = "call_step", call_id, peer = %peer, error_code = reason.0,
                    "call {call_id}: {} {}", peer, if state == CallPhase::Ringing { "rings" } else { reason.name() });
            }
            CallPhase::Answered => {
                if let Phase::RingingOut { .. } = self.call {
                    self.call = Phase::InCall { id: call_id, peer: peer.clone() };
                    self.out.push_back(Action::Led(Output::Ringing, LedMode::Off));
                    self.enter_call(&peer);
                }
            }
            CallPhase::Ended => {
                tracing::info!(callbox_event = "call_ended", call_id, peer = %peer, error_code = reason.0,
                    "call {call_id} ended: {}", reason.name());
                self.back_to_idle();
            }
        }
    }

    fn answer(&mut self, id: u64, caller: String) {
        self.out.push_back(Action::Answer(id));
        self.deadline = None;
        self.out.push_back(Action::Chime(false));
        self.out.push_back(Action::Led(Output::Ringing, LedMode::Off));
        self.call = Phase::InCall { id, peer: caller.clone() };
        self.publish();
        self.enter_call(&caller);
    }

    /// In the call with `peer`: the LED, our stream, theirs.
    fn enter_call(&mut self, peer: &str) {
        self.state_changed();
        self.out.push_back(Action::Led(Output::InCall, LedMode::On));
        self.publish();
        let theirs: Vec<String> = self.remote.iter().filter(|(_, u)| *u == peer).map(|(s, _)| s.clone()).collect();
        for s in theirs {
            self.play(s);
        }
    }

    /// Back to idle from any state, undoing what the state did.
    fn back_to_idle(&mut self) {
        match self.call {
            Phase::Idle => return,
            Phase::Ringing { .. } => self.out.push_back(Action::Chime(false)),
            Phase::RingingOut { .. } => {}
            Phase::InCall { .. } => self.out.push_back(Action::Led(Output::InCall, LedMode::Off)),
        }
        self.out.push_back(Action::Led(Output::Ringing, LedMode::Off));
        self.call = Phase::Idle;
        self.deadline = None;
        if self.mode != CallMode::Kiosk || !self.kiosk_in_call {
            self.stop_media();
        }
        self.state_changed();
    }

    // ------------------------------------------------------------ kiosk

    fn kiosk_stream_added(&mut self, stream: String) {
        if self.kiosk_in_call {
            self.play(stream);
        } else {
            self.kiosk_join();
        }
    }

    fn kiosk_join(&mut self) {
        if self.kiosk_in_call {
            return;
        }
        self.kiosk_in_call = true;
        self.state_changed();
        self.out.push_back(Action::Led(Output::InCall, LedMode::On));
        self.publish();
        let all: Vec<String> = self.remote.keys().cloned().collect();
        for s in all {
            self.play(s);
        }
    }

    fn kiosk_leave(&mut self) {
        self.kiosk_in_call = false;
        if let Some(id) = self.call_id() {
            self.out.push_back(Action::HangUp(id));
            self.call = Phase::Idle;
        }
        self.stop_media();
        self.out.push_back(Action::Led(Output::InCall, LedMode::Off));
        self.state_changed();
    }

    // ------------------------------------------------------------ media

    fn publish(&mut self) {
        if !self.publishing {
            self.publishing = true;
            // The camera goes on (privacy) before the stream is announced.
            self.update_camera();
            self.out.push_back(Action::Publish);
        }
    }

    fn play(&mut self, stream: String) {
        if !self.playing.contains(&stream) {
            self.playing.push(stream.clone());
            self.out.push_back(Action::Play(stream));
        }
    }

    fn stop_play(&mut self, stream: &str) {
        if let Some(i) = self.playing.iter().position(|s| s == stream) {
            self.playing.remove(i);
            self.out.push_back(Action::StopPlay(stream.to_string()));
        }
    }

    fn stop_media(&mut self) {
        if std::mem::take(&mut self.publishing) {
            self.out.push_back(Action::StopPublish);
        }
        for s in std::mem::take(&mut self.playing) {
            self.out.push_back(Action::StopPlay(s));
        }
    }

    fn state_changed(&mut self) {
        self.update_camera();
        self.out.push_back(Action::State(self.state()));
    }

    fn set_camera(&mut self, on: bool) {
        self.camera = on;
        self.update_camera();
    }

    fn set_speaker(&mut self, on: bool) {
        if self.speaker != on {
            self.speaker = on;
            self.out.push_back(Action::Speaker(on));
        }
    }

    /// The camera sends when switched on and, with privacy, only while a call is under way
    /// (or our stream is up for one); its LED says so.
    fn update_camera(&mut self) {
        let on = self.camera && (!self.privacy || self.publishing || self.state() != CallState::Idle);
        if self.camera_sent != Some(on) {
            self.camera_sent = Some(on);
            self.out.push_back(Action::Camera(on));
            self.out.push_back(Action::Led(Output::Camera, if on { LedMode::On } else { LedMode::Off }));
        }
    }

    fn set_mute(&mut self, m: bool) {
        if self.muted != m {
            self.muted = m;
            self.out.push_back(Action::Mute(m));
        }
    }
}

#[cfg(test)]
#[path = "call_tests.rs"]
mod tests;
