//! The device's call controller as a sans-IO state machine: room events, buttons and
//! control commands in; what to publish and play, LEDs, the chime and the door relay out.
//! Time is an input (`handle_timeout`), so every rule is unit-tested with virtual time.
//!
//! States: `Idle` -> `Ringing` (intercom: someone else started publishing while we were
//! idle) -> `InCall` (publishing our stream, playing every other stream in the room) ->
//! `Idle`. Kiosk mode is in a call whenever another user publishes. Auto-answer answers a
//! ring after a configured delay. An outgoing call (call button while idle) rings out for
//! `ring_out` and ends if nobody answers; an answered call ends when the last other stream
//! goes away or on leave.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

pub use super::io::{Button, LedMode, Output, Press};

/// How the device takes calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallMode {
    /// Always in a call while another user publishes (reception kiosk, lift screen).
    Kiosk,
    /// Rings on an incoming call; a person answers with the call button.
    Intercom,
    /// Rings, then answers by itself after the delay.
    AutoAnswer(Duration),
}

/// The call state, as `callbox status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallState {
    /// No call.
    Idle,
    /// Someone calls; waiting for an answer.
    Ringing,
    /// Publishing our stream and playing the others.
    InCall,
}

impl CallState {
    /// `idle`, `ringing` or `in_call`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallState::Idle => "idle",
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
    /// Another user's stream appeared.
    StreamAdded(String),
    /// Another user's stream went away.
    StreamRemoved(String),
    /// A button was pressed.
    Button(Button, Press),
    /// `callbox call join`.
    Join,
    /// `callbox call leave`.
    Leave,
    /// `callbox call mute` / `unmute`.
    SetMute(bool),
    /// An authorised user asked to open the door (broadcast message).
    OpenDoor,
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log in to the configured room. The daemon's own (at start and after a failed or
    /// lost login), never the controller's; carried out by the engine worker like the
    /// publish, play and mute actions.
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
    /// Start (true) or stop the ring chime.
    Chime(bool),
    /// Set an LED (an [`Output`] other than the door relay): on, off, or blinking.
    Led(Output, LedMode),
    /// Pulse the door relay.
    DoorPulse,
    /// The call state changed (for status, logs and STATUS=).
    State(CallState),
}

/// See the module docs.
pub struct CallController {
    mode: CallMode,
    ring_out: Duration,
    state: CallState,
    room_up: bool,
    remote: BTreeSet<String>,
    answered: bool,
    muted: bool,
    deadline: Option<Instant>,
    out: VecDeque<Action>,
}

impl CallController {
    /// A controller in `mode`; an unanswered outgoing call ends after `ring_out`.
    pub fn new(mode: CallMode, ring_out: Duration) -> Self {
        CallController {
            mode,
            ring_out,
            state: CallState::Idle,
            room_up: false,
            remote: BTreeSet::new(),
            answered: false,
            muted: false,
            deadline: None,
            out: VecDeque::new(),
        }
    }

    /// A new mode and ring-out time from a reloaded config: they apply from the next call;
    /// a call under way goes on as it is.
    pub fn reconfigure(&mut self, mode: CallMode, ring_out: Duration) {
        self.mode = mode;
        self.ring_out = ring_out;
    }

    /// The current call state.
    pub fn state(&self) -> CallState {
        self.state
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
                self.room_up = true;
                self.out.push_back(Action::Led(Output::Online, LedMode::On));
            }
            Input::RoomDown => {
                // The engine reconnects by itself and restores what was published and played;
                // the call stays as it is, only the LED tells.
                self.room_up = false;
                self.out.push_back(Action::Led(Output::Online, LedMode::Off));
            }
            Input::StreamAdded(s) => {
                if !self.remote.insert(s.clone()) {
                    return;
                }
                match self.state {
                    CallState::InCall => {
                        self.answered = true;
                        self.deadline = None;
                        self.out.push_back(Action::Play(s));
                    }
                    CallState::Idle => match self.mode {
                        CallMode::Kiosk => self.enter_call(),
                        CallMode::Intercom => self.ring(None),
                        CallMode::AutoAnswer(d) => self.ring(Some(now + d)),
                    },
                    CallState::Ringing => {}
                }
            }
            Input::StreamRemoved(s) => {
                if !self.remote.remove(&s) {
                    return;
                }
                if self.state == CallState::InCall {
                    self.out.push_back(Action::StopPlay(s));
                }
                if self.remote.is_empty() {
                    match self.state {
                        CallState::Ringing => self.end_call(),
                        CallState::InCall if self.answered || self.mode == CallMode::Kiosk => self.end_call(),
                        _ => {}
                    }
                }
            }
            Input::Button(Button::Call, Press::Short) | Input::Join => match self.state {
                CallState::Idle => {
                    self.enter_call();
                    if self.remote.is_empty() {
                        self.deadline = Some(now + self.ring_out);
                    }
                }
                CallState::Ringing => self.enter_call(),
                CallState::InCall => {}
            },
            Input::Button(Button::Call, Press::Long) | Input::Button(Button::Leave, _) | Input::Leave => {
                if self.state != CallState::Idle {
                    self.end_call();
                }
            }
            Input::Button(Button::Mute, _) => self.set_mute(!self.muted),
            Input::SetMute(m) => self.set_mute(m),
            Input::Button(Button::Door, _) | Input::OpenDoor => self.out.push_back(Action::DoorPulse),
        }
    }

    /// Timers: auto-answer, ring-out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| d > now) {
            return;
        }
        self.deadline = None;
        match self.state {
            CallState::Ringing => self.enter_call(),
            CallState::InCall if !self.answered => self.end_call(),
            _ => {}
        }
    }

    fn ring(&mut self, answer_at: Option<Instant>) {
        self.state = CallState::Ringing;
        self.deadline = answer_at;
        self.out.push_back(Action::State(CallState::Ringing));
        self.out.push_back(Action::Chime(true));
        self.out.push_back(Action::Led(Output::Ringing, LedMode::Blink));
    }

    fn enter_call(&mut self) {
        if self.state == CallState::Ringing {
            self.out.push_back(Action::Chime(false));
            self.out.push_back(Action::Led(Output::Ringing, LedMode::Off));
        }
        self.state = CallState::InCall;
        self.deadline = None;
        self.answered = !self.remote.is_empty();
        self.out.push_back(Action::State(CallState::InCall));
        self.out.push_back(Action::Led(Output::InCall, LedMode::On));
        self.out.push_back(Action::Publish);
        let streams: Vec<String> = self.remote.iter().cloned().collect();
        for s in streams {
            self.out.push_back(Action::Play(s));
        }
    }

    fn end_call(&mut self) {
        match self.state {
            CallState::Ringing => {
                self.out.push_back(Action::Chime(false));
                self.out.push_back(Action::Led(Output::Ringing, LedMode::Off));
            }
            CallState::InCall => {
                self.out.push_back(Action::StopPublish);
                let streams: Vec<String> = self.remote.iter().cloned().collect();
                for s in streams {
                    self.out.push_back(Action::StopPlay(s));
                }
                self.out.push_back(Action::Led(Output::InCall, LedMode::Off));
            }
            CallState::Idle => return,
        }
        self.state = CallState::Idle;
        self.deadline = None;
        self.answered = false;
        self.out.push_back(Action::State(CallState::Idle));
    }

    fn set_mute(&mut self, m: bool) {
        if self.muted != m {
            self.muted = m;
            self.out.push_back(Action::Mute(m));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(c: &mut CallController) -> Vec<Action> {
        std::iter::from_fn(|| c.poll_action()).collect()
    }

    fn has(actions: &[Action], a: &Action) -> bool {
        actions.contains(a)
    }

    #[test]
    fn intercom_rings_answers_and_hangs_up_when_the_caller_leaves() {
        let t = Instant::now();
        let mut c = CallController::new(CallMode::Intercom, Duration::from_secs(60));
        c.handle(t, Input::RoomUp);
        c.handle(t, Input::StreamAdded("door-main".into()));
        let a = drain(&mut c);
        assert_eq!(c.state(), CallState::Ringing);
        assert!(has(&a, &Action::Chime(true)) && has(&a, &Action::Led(Output::Ringing, LedMode::Blink)));
        assert!(!has(&a, &Action::Publish), "nothing is sent before answering");
        c.handle(t, Input::Button(Button::Call, Press::Short));
        let a = drain(&mut c);
        assert_eq!(c.state(), CallState::InCall);
        assert!(has(&a, &Action::Chime(false)) && has(&a, &Action::Publish));
        assert!(has(&a, &Action::Play("door-main".into())));
        // A third party joins and leaves during the call.
        c.handle(t, Input::StreamAdded("guard-main".into()));
        assert_eq!(drain(&mut c), vec![Action::Play("guard-main".into())]);
        c.handle(t, Input::StreamRemoved("guard-main".into()));
        assert_eq!(drain(&mut c), vec![Action::StopPlay("guard-main".into())]);
        // The caller hangs up: back to idle, our stream withdrawn.
        c.handle(t, Input::StreamRemoved("door-main".into()));
        let a = drain(&mut c);
        assert_eq!(c.state(), CallState::Idle);
        assert!(has(&a, &Action::StopPublish) && has(&a, &Action::State(CallState::Idle)));
    }

    #[test]
    fn a_ring_stops_when_the_caller_gives_up_and_leave_declines() {
        let t = Instant::now();
        let mut c = CallController::new(CallMode::Intercom, Duration::from_secs(60));
        c.handle(t, Input::StreamAdded("door-main".into()));
        c.handle(t, Input::StreamRemoved("door-main".into()));
        let a = drain(&mut c);
        assert_eq!(c.state(), CallState::Idle);
        assert!(has(&a, &Action::Chime(false)));
        assert!(!has(&a, &Action::StopPublish), "never published");
        c.handle(t, Input::StreamAdded("door-main".into()));
        c.handle(t, Input::Button(Button::Leave, Press::Short));
        assert_eq!(c.state(), CallState::Idle);
    }

    #[test]
    fn kiosk_follows_the_room_and_auto_answer_waits_its_delay() {
        let t = Instant::now();
        let mut k = CallController::new(CallMode::Kiosk, Duration::from_secs(60));
        k.handle(t, Input::StreamAdded("desk-main".into()));
        assert_eq!(k.state(), CallState::InCall);
        assert!(has(&drain(&mut k), &Action::Play("desk-main".into())));
        k.handle(t, Input::StreamRemoved("desk-main".into()));
        assert_eq!(k.state(), CallState::Idle);

        let mut a = CallController::new(CallMode::AutoAnswer(Duration::from_secs(3)), Duration::from_secs(60));
        a.handle(t, Input::StreamAdded("door-main".into()));
        assert_eq!((a.state(), a.poll_timeout()), (CallState::Ringing, Some(t + Duration::from_secs(3))));
        a.handle_timeout(t + Duration::from_secs(2));
        assert_eq!(a.state(), CallState::Ringing);
        a.handle_timeout(t + Duration::from_secs(3));
        assert_eq!(a.state(), CallState::InCall);
        assert!(has(&drain(&mut a), &Action::Publish));
    }

    #[test]
    fn an_outgoing_call_rings_out_unless_answered() {
        let t = Instant::now();
        let mut c = CallController::new(CallMode::Intercom, Duration::from_secs(30));
        c.handle(t, Input::Join);
        assert_eq!(c.state(), CallState::InCall);
        assert!(has(&drain(&mut c), &Action::Publish));
        c.handle_timeout(t + Duration::from_secs(31));
        assert_eq!(c.state(), CallState::Idle, "nobody answered");

        c.handle(t, Input::Button(Button::Call, Press::Short));
        c.handle(t + Duration::from_secs(5), Input::StreamAdded("flat-main".into()));
        assert_eq!(c.poll_timeout(), None, "answered: no ring-out");
        c.handle_timeout(t + Duration::from_secs(60));
        assert_eq!(c.state(), CallState::InCall);
        c.handle(t, Input::Button(Button::Call, Press::Long));
        assert_eq!(c.state(), CallState::Idle, "a long press on call leaves");
    }

    #[test]
    fn mute_door_and_online_led() {
        let t = Instant::now();
        let mut c = CallController::new(CallMode::Intercom, Duration::from_secs(30));
        c.handle(t, Input::RoomUp);
        c.handle(t, Input::Button(Button::Mute, Press::Short));
        c.handle(t, Input::SetMute(true));
        c.handle(t, Input::Button(Button::Door, Press::Short));
        c.handle(t, Input::OpenDoor);
        c.handle(t, Input::RoomDown);
        assert_eq!(
            drain(&mut c),
            vec![
                Action::Led(Output::Online, LedMode::On),
                Action::Mute(true),
                Action::DoorPulse,
                Action::DoorPulse,
                Action::Led(Output::Online, LedMode::Off),
            ]
        );
        assert!(c.muted());
        // A repeated stream add (e.g. after a reconnect snapshot) changes nothing.
        c.handle(t, Input::StreamAdded("a".into()));
        drain(&mut c);
        c.handle(t, Input::StreamAdded("a".into()));
        assert!(drain(&mut c).is_empty());
    }
}
