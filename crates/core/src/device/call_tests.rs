//! The call controller's rules in virtual time.

use super::*;

fn drain(c: &mut CallController) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn has(actions: &[Action], a: &Action) -> bool {
    actions.contains(a)
}

fn flat() -> Callees {
    Callees { users: vec!["flat".into()], order: RingOrder::Together, ring_secs: Some(30) }
}

fn added(stream: &str, user: &str) -> Input {
    Input::StreamAdded { stream: stream.into(), user: user.into() }
}

fn update(call_id: u64, state: CallPhase, peer: &str, reason: ErrorCode) -> Input {
    Input::CallUpdate { call_id, state, peer: peer.into(), reason }
}

#[test]
fn another_member_publishing_rings_nothing() {
    let t = Instant::now();
    for mode in [CallMode::Intercom, CallMode::AutoAnswer(Duration::from_secs(1))] {
        let mut c = CallController::new(mode, flat());
        c.handle(t, Input::RoomUp);
        c.handle(t, added("visitor-main", "visitor"));
        c.handle_timeout(t + Duration::from_secs(5));
        let a = drain(&mut c);
        assert_eq!(c.state(), CallState::Idle);
        assert!(!has(&a, &Action::Chime(true)) && !has(&a, &Action::Publish), "{a:?}");
    }
}

#[test]
fn the_call_button_rings_the_callee_and_the_answer_starts_media_with_it_only() {
    let t = Instant::now();
    let mut c = CallController::new(CallMode::Intercom, flat());
    c.handle(t, added("flat-main", "flat"));
    c.handle(t, added("guard-main", "guard"));
    c.handle(t, Input::Button(Button::Call, Press::Short));
    let a = drain(&mut c);
    assert_eq!(c.state(), CallState::RingingOut);
    assert!(has(&a, &Action::Call(flat())), "{a:?}");
    assert!(has(&a, &Action::Publish), "early video: published while ringing out");
    assert!(!a.iter().any(|x| matches!(x, Action::Play(_))), "nothing plays before the answer");
    c.handle(t, Input::Placed(Ok(7)));
    c.handle(t, update(7, CallPhase::Ringing, "flat", ErrorCode::OK));
    assert_eq!(c.state(), CallState::RingingOut);
    c.handle(t, update(7, CallPhase::Answered, "flat", ErrorCode::OK));
    let a = drain(&mut c);
    assert_eq!((c.state(), c.peer()), (CallState::InCall, Some("flat")));
    assert!(has(&a, &Action::Play("flat-main".into())));
    assert!(!has(&a, &Action::Play("guard-main".into())), "only the call's member is played");
    // The guard stops and starts publishing: nothing changes.
    c.handle(t, Input::StreamRemoved("guard-main".into()));
    c.handle(t, added("guard-main", "guard"));
    assert!(drain(&mut c).is_empty());
    // The long press hangs up.
    c.handle(t, Input::Button(Button::Call, Press::Long));
    let a = drain(&mut c);
    assert_eq!(c.state(), CallState::Idle);
    assert!(
        has(&a, &Action::HangUp(7)) && has(&a, &Action::StopPublish) && has(&a, &Action::StopPlay("flat-main".into()))
    );
    // The server's Ended for the call we hung up changes nothing.
    c.handle(t, update(7, CallPhase::Ended, "flat", ErrorCode::CALL_HUNG_UP));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn a_ring_chimes_until_answered_declined_or_ended_by_the_server() {
    let t = Instant::now();
    let mut c = CallController::new(CallMode::Intercom, flat());
    c.handle(t, added("door-main", "door"));
    c.handle(t, Input::Incoming { call_id: 3, caller: "door".into() });
    let a = drain(&mut c);
    assert_eq!((c.state(), c.peer()), (CallState::Ringing, Some("door")));
    assert!(has(&a, &Action::Chime(true)) && has(&a, &Action::Led(Output::Ringing, LedMode::Blink)));
    assert!(!has(&a, &Action::Publish), "nothing is sent before answering");
    c.handle(t, Input::Button(Button::Call, Press::Short));
    let a = drain(&mut c);
    assert_eq!(c.state(), CallState::InCall);
    assert!(has(&a, &Action::Answer(3)) && has(&a, &Action::Chime(false)) && has(&a, &Action::Publish));
    assert!(has(&a, &Action::Play("door-main".into())));
    // The door hangs up: the server says so.
    c.handle(t, update(3, CallPhase::Ended, "door", ErrorCode::CALL_HUNG_UP));
    let a = drain(&mut c);
    assert_eq!(c.state(), CallState::Idle);
    assert!(has(&a, &Action::StopPublish) && has(&a, &Action::StopPlay("door-main".into())));

    // Declined with the leave button.
    c.handle(t, Input::Incoming { call_id: 4, caller: "door".into() });
    c.handle(t, Input::Button(Button::Leave, Press::Short));
    let a = drain(&mut c);
    assert!(has(&a, &Action::Decline(4)) && has(&a, &Action::Chime(false)));
    assert_eq!(c.state(), CallState::Idle);
    // Cancelled by the caller: the chime stops.
    c.handle(t, Input::Incoming { call_id: 5, caller: "door".into() });
    c.handle(t, update(5, CallPhase::Ended, "door", ErrorCode::CALL_CANCELLED));
    assert!(has(&drain(&mut c), &Action::Chime(false)));
    assert_eq!(c.state(), CallState::Idle);
}

#[test]
fn auto_answer_waits_its_delay_and_kiosk_answers_at_once() {
    let t = Instant::now();
    let mut a = CallController::new(CallMode::AutoAnswer(Duration::from_secs(3)), flat());
    a.handle(t, Input::Incoming { call_id: 1, caller: "desk".into() });
    assert_eq!((a.state(), a.poll_timeout()), (CallState::Ringing, Some(t + Duration::from_secs(3))));
    a.handle_timeout(t + Duration::from_secs(2));
    assert_eq!(a.state(), CallState::Ringing);
    a.handle_timeout(t + Duration::from_secs(3));
    assert_eq!(a.state(), CallState::InCall);
    assert!(has(&drain(&mut a), &Action::Answer(1)));

    let mut k = CallController::new(CallMode::Kiosk, Callees::default());
    k.handle(t, added("desk-main", "desk"));
    assert_eq!(k.state(), CallState::InCall, "the kiosk's room call");
    assert!(has(&drain(&mut k), &Action::Play("desk-main".into())));
    k.handle(t, Input::Incoming { call_id: 2, caller: "door".into() });
    assert!(has(&drain(&mut k), &Action::Answer(2)));
    k.handle(t, Input::StreamRemoved("desk-main".into()));
    assert_eq!(k.state(), CallState::Idle);
}

#[test]
fn a_call_that_is_not_placed_or_not_answered_goes_back_to_idle() {
    let t = Instant::now();
    let mut c = CallController::new(CallMode::Intercom, Callees::default());
    c.handle(t, Input::Join);
    drain(&mut c);
    c.handle(t, Input::Placed(Err(ErrorCode::CALL_NO_CALLEE)));
    assert!(has(&drain(&mut c), &Action::StopPublish));
    assert_eq!(c.state(), CallState::Idle);
    c.handle(t, Input::Join);
    // The server's first update can come before the placed answer: it names the call.
    c.handle(t, update(9, CallPhase::NotAnswered, "flat", ErrorCode::CALL_BUSY));
    c.handle(t, Input::Placed(Ok(9)));
    c.handle(t, update(9, CallPhase::Ended, "flat", ErrorCode::CALL_BUSY));
    assert_eq!(c.state(), CallState::Idle);
    // Hung up before the ID came: hung up on the server once it does.
    c.handle(t, Input::Join);
    c.handle(t, Input::Leave);
    assert_eq!(c.state(), CallState::Idle);
    drain(&mut c);
    c.handle(t, Input::Placed(Ok(10)));
    assert_eq!(drain(&mut c), vec![Action::HangUp(10)]);
}

#[test]
fn mute_door_button_door_requests_and_online_led() {
    let t = Instant::now();
    let mut c = CallController::new(CallMode::Intercom, flat());
    c.handle(t, Input::RoomUp);
    c.handle(t, Input::Button(Button::Mute, Press::Short));
    c.handle(t, Input::SetMute(true));
    c.handle(t, Input::Button(Button::Door, Press::Short));
    c.handle(t, Input::DoorRequest { request_id: 4, from: "desk".into() });
    c.handle(t, Input::RoomDown);
    assert_eq!(
        drain(&mut c),
        vec![
            Action::Led(Output::Online, LedMode::On),
            Action::Mute(true),
            Action::DoorPulse,
            Action::OpenDoorFor { request_id: 4, from: "desk".into() },
            Action::Led(Output::Online, LedMode::Off),
        ]
    );
    assert!(c.muted());
    // A repeated stream add (e.g. after a reconnect snapshot) changes nothing.
    c.handle(t, added("a", "x"));
    drain(&mut c);
    c.handle(t, added("a", "x"));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn an_indoor_units_door_button_opens_the_door_of_its_call() {
    let t = Instant::now();
    let mut c = CallController::new(CallMode::Intercom, flat()).with_own_door(false);
    c.handle(t, Input::Button(Button::Door, Press::Short));
    assert!(drain(&mut c).is_empty(), "no call, no door to open");
    c.handle(t, Input::Incoming { call_id: 1, caller: "door".into() });
    c.handle(t, Input::Join);
    drain(&mut c);
    c.handle(t, Input::Button(Button::Door, Press::Short));
    assert_eq!(drain(&mut c), vec![Action::OpenDoor("door".into())]);
}

/// Privacy: the camera and its LED are off outside calls, on from the first ring out (before
/// the stream is announced) to the hang-up; the switch and the speaker follow their buttons.
#[test]
fn privacy_keeps_the_camera_off_outside_calls_and_the_switches_follow_their_buttons() {
    let t = Instant::now();
    let callees = Callees { users: vec!["flat".into()], order: RingOrder::Together, ring_secs: None };
    let mut c = CallController::new(CallMode::Intercom, callees).with_privacy(true);
    let first: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
    assert_eq!(first, vec![Action::Camera(false), Action::Led(Output::Camera, LedMode::Off)]);
    assert!(!c.camera());
    c.handle(t, Input::RoomUp);
    c.handle(t, Input::Button(Button::Call, Press::Short));
    let ring: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
    let on = ring.iter().position(|a| *a == Action::Camera(true)).expect("camera on for the call");
    let publish = ring.iter().position(|a| *a == Action::Publish).expect("publish");
    assert!(on < publish, "the camera goes on before the stream is announced: {ring:?}");
    assert!(ring.contains(&Action::Led(Output::Camera, LedMode::On)));
    // The switch turns it off even in a call, and on again.
    let drain = |c: &mut CallController| std::iter::from_fn(|| c.poll_action()).collect::<Vec<_>>();
    c.handle(t, Input::Button(Button::Camera, Press::Short));
    assert!(drain(&mut c).contains(&Action::Camera(false)));
    c.handle(t, Input::SetCamera(true));
    assert!(drain(&mut c).contains(&Action::Camera(true)));
    // Hang up: off again, LED with it.
    c.handle(t, Input::Leave);
    let hung = drain(&mut c);
    assert!(hung.contains(&Action::Camera(false)) && hung.contains(&Action::Led(Output::Camera, LedMode::Off)));
    assert!(!c.camera());
    // The speaker toggles; setting what it is does nothing.
    c.handle(t, Input::Button(Button::Speaker, Press::Short));
    c.handle(t, Input::SetSpeaker(false));
    let sp: Vec<Action> = std::iter::from_fn(|| c.poll_action()).collect();
    assert_eq!(sp, vec![Action::Speaker(false)]);
    assert!(!c.speaker());
    // Without privacy the camera is simply on.
    let mut plain = CallController::new(CallMode::Intercom, Callees::default()).with_privacy(false);
    assert_eq!(plain.poll_action(), Some(Action::Camera(true)));
}
