//! The media supervisor in virtual time: no GStreamer, no socket, no clock. The harness
//! plays the runner (it records commands and answers with notes) and the pipelines' meters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::supervisor::{MediaSupervisor, Present};
use super::{Bind, Command, Control, MediaOutput, Meters, Note, PlayCounts, PublishCounts};
use crate::engine::event::PlayerState;
use crate::engine::event::{EngineEvent, MediaEventKind, PublisherState};
use crate::engine::session::StreamChange;
use crate::media::encoder::Encoder;
use crate::media::{Layout, MediaConfig, MediaError, VideoSink, rules};
use crate::proto::{ErrorCode, MediaRole};
use crate::rtc::client::ClientEvent;

const PUB: MediaRole = MediaRole::Publish;
const PLAY: MediaRole = MediaRole::Play;

#[derive(Default)]
struct FakeMeters {
    pubs: HashMap<String, PublishCounts>,
    plays: HashMap<String, (PlayCounts, Option<Instant>)>,
}

impl Meters for FakeMeters {
    fn publisher(&self, stream: &str) -> Option<PublishCounts> {
        self.pubs.get(stream).copied()
    }
    fn encoder_kbps(&self, _: &str) -> Option<u32> {
        None
    }
    fn player(&self, stream: &str) -> Option<(PlayCounts, Option<Instant>)> {
        self.plays.get(stream).copied()
    }
}

struct Harness {
    sup: MediaSupervisor,
    t0: Instant,
    now: Instant,
    /// The room connection works (offers get through).
    fresh: bool,
    meters: FakeMeters,
    /// Outputs read while looking for a stream's event, for the next `outputs()`.
    stash: Vec<MediaOutput>,
}

impl Harness {
    fn new(cfg: MediaConfig, present: &'static [&'static str]) -> Harness {
        let present: Present = Box::new(move |e: &str| present.contains(&e));
        let now = Instant::now();
        Harness {
            sup: MediaSupervisor::new(cfg, None, present),
            t0: now,
            now,
            fresh: true,
            meters: FakeMeters::default(),
            stash: Vec::new(),
        }
    }

    fn software() -> Harness {
        Harness::new(MediaConfig::default(), &["x264enc"])
    }

    /// Virtual time since the start.
    fn at(&self) -> Duration {
        self.now - self.t0
    }

    /// Runs every deadline up to `d` from now, in order.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.sup.poll_timeout().filter(|t| *t <= end) {
            self.timeout(t);
        }
        self.now = end;
    }

    /// Runs the timers at `t`. The next deadline must be later: one that stays due would
    /// make the driver spin.
    fn timeout(&mut self, t: Instant) {
        self.now = self.now.max(t);
        self.sup.handle_timeout(self.now, self.fresh, &self.meters);
        if let Some(next) = self.sup.poll_timeout() {
            assert!(next > self.now, "deadline {:?} not after {:?}", next - self.t0, self.at());
        }
    }

    /// Advances deadline by deadline until a command matches; returns it and when it came.
    fn until(&mut self, limit: Duration, want: impl Fn(&Command) -> bool) -> (Command, Duration) {
        let end = self.now + limit;
        loop {
            if let Some(c) = self.commands().into_iter().find(|c| want(c)) {
                return (c, self.at());
            }
            let t = self.sup.poll_timeout().filter(|t| *t <= end).expect("the command came in time");
            self.timeout(t);
        }
    }

    fn commands(&mut self) -> Vec<Command> {
        std::iter::from_fn(|| self.sup.poll_command()).collect()
    }

    fn outputs(&mut self) -> Vec<MediaOutput> {
        let mut out = std::mem::take(&mut self.stash);
        out.extend(std::iter::from_fn(|| self.sup.poll_output()));
        out
    }

    /// Tells the supervisor a stream's signalling state; the event the application is told
    /// (other outputs stay for [`Harness::outputs`]).
    fn stream(&mut self, change: StreamChange) -> EngineEvent {
        let mut earlier = self.outputs();
        self.sup.handle_stream(self.now, change);
        let mut new: Vec<MediaOutput> = std::iter::from_fn(|| self.sup.poll_output()).collect();
        let i = new.iter().position(|o| matches!(o, MediaOutput::Event(_))).expect("the stream's event");
        let MediaOutput::Event(e) = new.remove(i) else { unreachable!() };
        earlier.extend(new);
        self.stash = earlier;
        e
    }

    fn events(&mut self) -> Vec<EngineEvent> {
        let out = self.outputs();
        out.into_iter().filter_map(|o| if let MediaOutput::Event(e) = o { Some(e) } else { None }).collect()
    }

    fn publish(&mut self, stream: &str) -> EngineEvent {
        let c = StreamChange::Publisher {
            stream_id: stream.into(),
            state: PublisherState::Publishing,
            error_code: ErrorCode::OK,
        };
        self.stream(c)
    }

    fn play(&mut self, stream: &str) -> EngineEvent {
        let c =
            StreamChange::Player { stream_id: stream.into(), state: PlayerState::Playing, error_code: ErrorCode::OK };
        self.stream(c)
    }

    fn stop_play(&mut self, stream: &str) -> EngineEvent {
        let c =
            StreamChange::Player { stream_id: stream.into(), state: PlayerState::NoPlay, error_code: ErrorCode::OK };
        self.stream(c)
    }

    fn control(&mut self, c: Control) {
        self.sup.control(self.now, c);
    }

    fn link(&mut self, role: MediaRole, stream: &str, epoch: u64, ev: ClientEvent) {
        self.sup.handle_note(self.now, Note::Link(role, stream.into(), epoch, ev));
    }

    /// Opens the stream's link as the runner would: the offer comes, is answered, ICE connects.
    fn connect(&mut self, role: MediaRole, stream: &str, epoch: u64) {
        self.sup.handle_note(self.now, Note::Offer(role, stream.into(), epoch, format!("offer {epoch}")));
        assert_eq!(self.offers(), vec![(stream.to_string(), role, format!("offer {epoch}"), epoch)]);
        self.sup.handle_answer(self.now, stream, role, epoch, Ok(format!("answer {epoch}")));
        self.link(role, stream, epoch, ClientEvent::Connected);
    }

    fn offers(&mut self) -> Vec<(String, MediaRole, String, u64)> {
        let out = self.outputs();
        out.into_iter()
            .filter_map(|o| match o {
                MediaOutput::Offer { stream, role, sdp, tag } => Some((stream, role, sdp, tag)),
                _ => None,
            })
            .collect()
    }
}

fn runtime(message: &str) -> MediaError {
    MediaError::Runtime { element: "venc".into(), message: message.into() }
}

fn open_epoch(c: &[Command], role: MediaRole) -> Option<u64> {
    c.iter().find_map(|c| match c {
        Command::OpenLink { role: r, epoch, .. } if *r == role => Some(*epoch),
        _ => None,
    })
}

fn is_open(c: &Command) -> bool {
    matches!(c, Command::OpenLink { .. })
}

fn publisher_state(e: &EngineEvent) -> Option<(PublisherState, ErrorCode)> {
    match e {
        EngineEvent::PublisherStateUpdate { state, error_code, .. } => Some((*state, *error_code)),
        _ => None,
    }
}

#[test]
fn publishing_starts_a_pipeline_and_a_link_whose_offer_and_answer_pass_through() {
    let mut h = Harness::software();
    let e = h.publish("door");
    assert_eq!(publisher_state(&e), Some((PublisherState::Publishing, ErrorCode::OK)));
    let c = h.commands();
    assert!(
        matches!(&c[0], Command::StartPipeline { stream, choice, .. } if stream == "door" && choice.encoder == Encoder::X264),
        "{c:?}"
    );
    let epoch = open_epoch(&c, PUB).expect("a link");
    let events = h.events();
    assert!(
        events.iter().any(
            |e| matches!(e, EngineEvent::PublisherEncoder { encoder, hardware: false, .. } if encoder == "x264enc")
        )
    );
    h.connect(PUB, "door", epoch);
    let c = h.commands();
    assert!(matches!(&c[0], Command::Answer { sdp, .. } if sdp == &format!("answer {epoch}")), "{c:?}");
    assert!(c.iter().any(|c| matches!(c, Command::ForceKeyframe { .. })), "a new player needs a keyframe: {c:?}");
    assert!(h.outputs().iter().any(|o| matches!(o, MediaOutput::NetworkBack)));
    // The server asks for a keyframe: the encoder gives one.
    h.link(PUB, "door", epoch, ClientEvent::KeyframeRequested);
    assert!(matches!(&h.commands()[..], [Command::ForceKeyframe { stream }] if stream == "door"));
    // Stopping removes everything, and events of the old link are ignored.
    let stop = StreamChange::Publisher {
        stream_id: "door".into(),
        state: PublisherState::NoPublish,
        error_code: ErrorCode::OK,
    };
    assert_eq!(publisher_state(&h.stream(stop)), Some((PublisherState::NoPublish, ErrorCode::OK)));
    assert!(matches!(&h.commands()[..], [Command::Remove { role: PUB, .. }]));
    h.link(PUB, "door", epoch, ClientEvent::Failed);
    assert!(h.commands().is_empty() && h.outputs().is_empty());
    assert_eq!(h.sup.poll_timeout(), None, "no stream, no deadline");
}

#[test]
fn a_cut_link_hides_publishing_until_it_comes_back_by_itself() {
    let mut h = Harness::software();
    h.publish("door");
    let epoch = open_epoch(&h.commands(), PUB).unwrap();
    h.connect(PUB, "door", epoch);
    h.outputs();
    h.link(PUB, "door", epoch, ClientEvent::Disconnected);
    let ev = h.events();
    assert_eq!(
        ev.iter().filter_map(publisher_state).collect::<Vec<_>>(),
        vec![(PublisherState::PublishRequesting, ErrorCode::PUBLISH_MEDIA_RECOVERING)]
    );
    // The session says Publishing again (a resume): still hidden while the link is down.
    let e = h.publish("door");
    assert_eq!(publisher_state(&e), Some((PublisherState::PublishRequesting, ErrorCode::PUBLISH_MEDIA_RECOVERING)));
    // While the room connection is down too, the kept connection is not replaced.
    h.fresh = false;
    h.advance(Duration::from_secs(10));
    assert!(!h.commands().iter().any(is_open), "a link that may come back is kept");
    h.link(PUB, "door", epoch, ClientEvent::Connected);
    let ev = h.events();
    assert_eq!(
        ev.iter().filter_map(publisher_state).collect::<Vec<_>>(),
        vec![(PublisherState::Publishing, ErrorCode::OK)]
    );
}

#[test]
fn a_link_that_stays_cut_is_replaced_once_signalling_works() {
    let mut h = Harness::software();
    h.publish("door");
    let epoch = open_epoch(&h.commands(), PUB).unwrap();
    h.connect(PUB, "door", epoch);
    h.commands();
    let cut = h.at();
    h.link(PUB, "door", epoch, ClientEvent::Disconnected);
    let (c, at) = h.until(Duration::from_secs(10), is_open);
    // The silence limit (3 s by default) after the cut.
    assert_eq!(at - cut, Duration::from_millis(3000));
    let Command::OpenLink { epoch: new, .. } = c else { unreachable!() };
    assert!(new > epoch);
}

#[test]
fn failed_links_back_off_doubling_up_to_ten_seconds() {
    let mut h = Harness::software();
    h.play("hall");
    let mut epoch = open_epoch(&h.commands(), PLAY).unwrap();
    let mut waits = Vec::new();
    for _ in 0..7 {
        let failed_at = h.at();
        h.link(PLAY, "hall", epoch, ClientEvent::Failed);
        assert!(h.commands().iter().any(|c| matches!(c, Command::CloseLink { role: PLAY, .. })));
        let (c, at) = h.until(Duration::from_secs(20), is_open);
        waits.push((at - failed_at).as_millis() as u64);
        let Command::OpenLink { epoch: e, .. } = c else { unreachable!() };
        epoch = e;
    }
    assert_eq!(waits, vec![500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    // Media flowing again resets the back-off.
    h.connect(PLAY, "hall", epoch);
    let failed_at = h.at();
    h.link(PLAY, "hall", epoch, ClientEvent::Failed);
    let (_, at) = h.until(Duration::from_secs(20), is_open);
    assert_eq!(at - failed_at, Duration::from_millis(500));
}

#[test]
fn a_link_that_cannot_open_is_retried_with_back_off() {
    let mut h = Harness::software();
    h.play("hall");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.sup.handle_note(h.now, Note::OpenFailed(PLAY, "hall".into(), epoch, "no address".into()));
    let (_, at) = h.until(Duration::from_secs(5), is_open);
    assert_eq!(at, Duration::from_millis(500));
}

#[test]
fn a_hardware_encoder_gives_way_after_three_failures() {
    let mut h = Harness::new(MediaConfig::default(), &["v4l2h264enc", "x264enc"]);
    h.publish("door");
    let mut chosen = Vec::new();
    let mut waits = Vec::new();
    let mut failed_at = h.at();
    for _ in 0..5 {
        let (c, at) = h.until(Duration::from_secs(20), |c| matches!(c, Command::StartPipeline { .. }));
        let Command::StartPipeline { epoch, choice, .. } = c else { unreachable!() };
        chosen.push(choice.encoder);
        waits.push((at - failed_at).as_millis() as u64);
        failed_at = at;
        let err = runtime("encoder error");
        h.sup.handle_note(h.now, Note::Pipeline(PUB, "door".into(), epoch, err));
        let ev = h.events();
        assert!(
            ev.iter().any(|e| matches!(e, EngineEvent::PublisherMediaError { error_code, .. } if *error_code == ErrorCode::MEDIA_PIPELINE_FAILED)),
            "{ev:?}"
        );
        assert!(h.commands().iter().any(|c| matches!(c, Command::StopPipeline { .. })));
    }
    use Encoder::*;
    assert_eq!(chosen, vec![V4l2, V4l2, V4l2, X264, X264]);
    assert_eq!(waits, vec![0, 500, 1000, 500, 500], "back-off per pipeline, reset by the fallback");
    // A failure of a pipeline that was already replaced is not counted.
    let (c, _) = h.until(Duration::from_secs(20), |c| matches!(c, Command::StartPipeline { .. }));
    let Command::StartPipeline { epoch, .. } = c else { unreachable!() };
    h.events();
    h.sup.handle_note(h.now, Note::Pipeline(PUB, "door".into(), epoch - 1, runtime("old")));
    assert!(h.events().is_empty());
}

#[test]
fn the_fallback_is_told_with_its_reason_and_no_encoder_is_an_error() {
    let mut h = Harness::new(MediaConfig::default(), &["v4l2h264enc"]);
    h.publish("door");
    for _ in 0..3 {
        let (c, _) = h.until(Duration::from_secs(20), |c| matches!(c, Command::StartPipeline { .. }));
        let Command::StartPipeline { epoch, .. } = c else { unreachable!() };
        h.sup.handle_note(h.now, Note::Pipeline(PUB, "door".into(), epoch, runtime("x")));
    }
    h.advance(Duration::from_secs(1));
    let ev = h.events();
    let told: Vec<&EngineEvent> = ev.iter().filter(|e| matches!(e, EngineEvent::PublisherMediaError { .. })).collect();
    assert_eq!(told.len(), 4, "three failures, then no encoder left: {ev:?}");
    assert!(!h.commands().iter().any(|c| matches!(c, Command::StartPipeline { .. })));
}

#[test]
fn an_encoder_that_stops_producing_is_rebuilt() {
    let mut h = Harness::software();
    h.publish("door");
    h.commands();
    h.meters.pubs.insert("door".into(), PublishCounts { captured: 10, encoded: 10, audio: 10 });
    h.advance(Duration::from_millis(200));
    let ev = h.events();
    assert!(ev.iter().any(|e| matches!(e, EngineEvent::MediaEvent { event: MediaEventKind::CapturedFirstFrame, .. })));
    // Encoded frames stop at 10: a stall after stall_secs (5).
    let (_, at) = h.until(Duration::from_secs(10), |c| matches!(c, Command::StopPipeline { .. }));
    assert!(at > Duration::from_secs(5) && at <= Duration::from_millis(5400), "{at:?}");
    let ev = h.events();
    assert!(ev.iter().any(|e| matches!(e, EngineEvent::PublisherMediaError { error_code, .. } if *error_code == ErrorCode::MEDIA_ENCODER_STALLED)), "{ev:?}");
    h.meters.pubs.clear();
    let (_, again) = h.until(Duration::from_secs(5), |c| matches!(c, Command::StartPipeline { .. }));
    assert_eq!(again - at, Duration::from_millis(500));
}

#[test]
fn a_pipeline_slow_to_start_is_not_called_stalled_and_its_stall_clock_starts_when_it_runs() {
    let mut h = Harness::software();
    h.publish("door");
    h.commands();
    // Built off the driver's task for 8 s (a board loading its plugins): no meters yet.
    h.advance(Duration::from_secs(8));
    assert!(!h.commands().iter().any(|c| matches!(c, Command::StopPipeline { .. })), "stalled while being built");
    // It runs, and never encodes: stalled 5 s after it started running, not before.
    h.meters.pubs.insert("door".into(), PublishCounts { captured: 0, encoded: 0, audio: 0 });
    let (_, at) = h.until(Duration::from_secs(10), |c| matches!(c, Command::StopPipeline { .. }));
    assert!(at > Duration::from_secs(13) && at <= Duration::from_millis(13_400), "{at:?}");
}

#[test]
fn an_unanswered_offer_is_renegotiated_and_a_late_answer_ignored() {
    let mut h = Harness::software();
    h.play("hall");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.sup.handle_note(h.now, Note::Offer(PLAY, "hall".into(), epoch, "o1".into()));
    assert_eq!(h.offers().len(), 1);
    let (c, at) = h.until(Duration::from_secs(10), is_open);
    assert_eq!(at, Duration::from_secs(5), "the offer timeout");
    let Command::OpenLink { epoch: new, .. } = c else { unreachable!() };
    // The first offer's answer arrives late: it names the old connection's ICE credentials.
    h.sup.handle_answer(h.now, "hall", PLAY, epoch, Ok("late".into()));
    assert!(h.commands().is_empty(), "a late answer is not applied");
    h.connect(PLAY, "hall", new);
    assert!(matches!(&h.commands()[..], [Command::Answer { sdp, .. }] if sdp == &format!("answer {new}")));
}

#[test]
fn an_offer_lost_with_the_room_connection_is_sent_again_once_in_the_room() {
    let mut h = Harness::software();
    h.play("hall");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.sup.handle_note(h.now, Note::Offer(PLAY, "hall".into(), epoch, "o1".into()));
    h.offers();
    h.sup.handle_answer(h.now, "hall", PLAY, epoch, Err(ErrorCode::NETWORK_INTERRUPTED));
    // Not timed out while it waits for the room: nothing renegotiated.
    h.advance(Duration::from_secs(8));
    assert!(!h.commands().iter().any(is_open));
    h.sup.handle_joined(h.now, false);
    assert_eq!(h.offers(), vec![("hall".into(), PLAY, "o1".into(), epoch)]);
    // An offer the driver could not send waits for the join the same way.
    h.sup.handle_unsent("hall", PLAY, epoch);
    h.advance(Duration::from_secs(8));
    assert!(h.offers().is_empty() && !h.commands().iter().any(is_open));
    h.sup.handle_joined(h.now, false);
    assert_eq!(h.offers().len(), 1);
}

#[test]
fn a_fresh_login_renegotiates_every_stream_and_a_refused_offer_backs_off() {
    let mut h = Harness::software();
    h.publish("door");
    h.play("hall");
    let c = h.commands();
    let (p, q) = (open_epoch(&c, PUB).unwrap(), open_epoch(&c, PLAY).unwrap());
    h.connect(PUB, "door", p);
    h.connect(PLAY, "hall", q);
    h.commands();
    h.sup.handle_joined(h.now, true);
    let c = h.commands();
    assert!(open_epoch(&c, PUB).unwrap() > p && open_epoch(&c, PLAY).unwrap() > q, "{c:?}");
    let q2 = open_epoch(&c, PLAY).unwrap();
    h.sup.handle_note(h.now, Note::Offer(PLAY, "hall".into(), q2, "o".into()));
    h.sup.handle_answer(h.now, "hall", PLAY, q2, Err(ErrorCode::STREAM_NOT_FOUND));
    assert!(h.commands().iter().any(|c| matches!(c, Command::CloseLink { role: PLAY, .. })));
    let start = h.at();
    let (_, at) = h.until(Duration::from_secs(5), is_open);
    assert_eq!(at - start, Duration::from_millis(500));
}

#[test]
fn a_player_reports_first_frames_stalls_and_asks_for_a_keyframe_when_back() {
    let mut h = Harness::software();
    h.play("hall");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.connect(PLAY, "hall", epoch);
    h.commands();
    h.link(PLAY, "hall", epoch, ClientEvent::FirstVideoFrame);
    h.link(PLAY, "hall", epoch, ClientEvent::FirstVideoFrame);
    h.meters
        .plays
        .insert("hall".into(), (PlayCounts { decoded: 5, rendered: 5, audio: 5, ..Default::default() }, Some(h.now)));
    h.advance(Duration::from_millis(100));
    let kinds = |ev: Vec<EngineEvent>| -> Vec<MediaEventKind> {
        ev.into_iter()
            .filter_map(|e| if let EngineEvent::MediaEvent { event, .. } = e { Some(event) } else { None })
            .collect()
    };
    assert_eq!(kinds(h.events()), vec![MediaEventKind::ReceivedFirstFrame, MediaEventKind::RenderedFirstFrame]);
    // No frame, no audio for a while: both stall once.
    h.advance(Duration::from_millis(700));
    let k = kinds(h.events());
    assert!(k.contains(&MediaEventKind::VideoStall) && k.contains(&MediaEventKind::AudioStall), "{k:?}");
    // The path was cut and came back: a keyframe is asked for, and media resumes.
    h.link(PLAY, "hall", epoch, ClientEvent::Disconnected);
    h.link(PLAY, "hall", epoch, ClientEvent::Connected);
    assert!(h.commands().iter().any(|c| matches!(c, Command::RequestKeyframe { stream } if stream == "hall")));
    h.meters
        .plays
        .insert("hall".into(), (PlayCounts { decoded: 9, rendered: 9, audio: 9, ..Default::default() }, Some(h.now)));
    h.advance(Duration::from_millis(100));
    let k = kinds(h.events());
    assert!(k.contains(&MediaEventKind::VideoResume) && k.contains(&MediaEventKind::AudioResume), "{k:?}");
    // Quality comes every 3 s with the player's counters.
    h.advance(Duration::from_secs(3));
    let q = h.events().into_iter().find_map(|e| match e {
        EngineEvent::PlayerQualityUpdate { quality, .. } => Some(quality),
        _ => None,
    });
    let q = q.expect("a quality update");
    // The fake pipeline rendered nothing after the resume: a second stall.
    assert_eq!((q.frames_decoded, q.stall_count), (9, 2));
}

#[test]
fn a_player_whose_video_does_not_render_asks_for_a_keyframe_every_second() {
    let mut h = Harness::software();
    h.play("desk");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.connect(PLAY, "desk", epoch);
    h.commands();
    // Packets arrive, but the decoder has no keyframe: nothing renders.
    h.meters
        .plays
        .insert("desk".into(), (PlayCounts { decoded: 0, rendered: 0, audio: 3, ..Default::default() }, None));
    let key = |c: &Command| matches!(c, Command::RequestKeyframe { stream } if stream == "desk");
    let (_, first) = h.until(Duration::from_secs(5), key);
    assert!(first >= Duration::from_secs(1) && first <= Duration::from_millis(1300), "first request at {first:?}");
    let (_, second) = h.until(Duration::from_secs(5), key);
    assert!(second - first >= Duration::from_secs(1), "at most every second: {first:?} then {second:?}");
    // Video renders: no more requests.
    h.meters
        .plays
        .insert("desk".into(), (PlayCounts { decoded: 5, rendered: 5, audio: 5, ..Default::default() }, Some(h.now)));
    h.advance(Duration::from_millis(100));
    for _ in 0..30 {
        h.meters.plays.insert(
            "desk".into(),
            (PlayCounts { decoded: 5, rendered: 5, audio: 5, ..Default::default() }, Some(h.now)),
        );
        h.advance(Duration::from_millis(100));
        assert!(!h.commands().iter().any(key), "rendering: no keyframe request at {:?}", h.at());
    }
}

#[test]
fn a_failed_play_pipeline_gets_a_new_link_and_pipeline() {
    let mut h = Harness::software();
    h.play("hall");
    let epoch = open_epoch(&h.commands(), PLAY).unwrap();
    h.sup.handle_note(h.now, Note::Pipeline(PLAY, "hall".into(), epoch, runtime("decoder")));
    let new = open_epoch(&h.commands(), PLAY).expect("rebuilt at once");
    assert!(new > epoch);
    // The old pipeline's late error does not rebuild the new one.
    h.sup.handle_note(h.now, Note::Pipeline(PLAY, "hall".into(), epoch, runtime("decoder")));
    assert!(h.commands().is_empty());
}

#[test]
fn the_grid_follows_the_preview_and_the_played_streams() {
    let cfg = MediaConfig { layout: Layout::Grid, ..MediaConfig::default() };
    let mut h = Harness::new(cfg, &["x264enc"]);
    h.play("b");
    h.play("a");
    let grids: Vec<Vec<String>> =
        h.commands().into_iter().filter_map(|c| if let Command::Grid(g) = c { Some(g) } else { None }).collect();
    assert_eq!(grids.last().unwrap(), &vec![rules::play_channel("a"), rules::play_channel("b")]);
    h.publish("door");
    let grids: Vec<Vec<String>> =
        h.commands().into_iter().filter_map(|c| if let Command::Grid(g) = c { Some(g) } else { None }).collect();
    assert_eq!(grids[0][0], rules::PREVIEW_CHANNEL);
    h.publish("door");
    assert!(!h.commands().iter().any(|c| matches!(c, Command::Grid(_))), "unchanged: not rebuilt");
}

/// Preview switched at run time in the grid; in the single layout on a real display, the
/// preview has the screen while nothing is played, the oldest played stream has it then,
/// and the others play audio only until it is free (never two full-screen sinks).
#[test]
fn the_preview_switches_and_one_played_stream_has_the_single_screen() {
    let grids = |h: &mut Harness| -> Vec<Vec<String>> {
        h.commands().into_iter().filter_map(|c| if let Command::Grid(g) = c { Some(g) } else { None }).collect()
    };
    let mut h = Harness::new(MediaConfig { layout: Layout::Grid, ..MediaConfig::default() }, &["x264enc"]);
    h.publish("door");
    assert_eq!(grids(&mut h).last().unwrap(), &vec![rules::PREVIEW_CHANNEL.to_string()]);
    h.control(Control::Preview(false));
    assert_eq!(grids(&mut h).last().unwrap(), &Vec::<String>::new());
    h.control(Control::Preview(true));
    assert_eq!(grids(&mut h).last().unwrap(), &vec![rules::PREVIEW_CHANNEL.to_string()]);

    let mut h = Harness::new(MediaConfig { video_sink: VideoSink::Kms, ..MediaConfig::default() }, &["x264enc"]);
    h.publish("door");
    assert_eq!(
        grids(&mut h).last().unwrap(),
        &vec![rules::PREVIEW_CHANNEL.to_string()],
        "the screen shows the preview"
    );
    h.play("flat");
    h.play("desk");
    let cmds = h.commands();
    let opens: Vec<(String, bool)> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::OpenLink { role: MediaRole::Play, stream, decode_video, .. } => {
                Some((stream.clone(), *decode_video))
            }
            _ => None,
        })
        .collect();
    assert_eq!(opens, vec![("flat".to_string(), true), ("desk".to_string(), false)], "one stream has the screen");
    let last_grid = cmds.iter().rev().find_map(|c| if let Command::Grid(g) = c { Some(g.clone()) } else { None });
    assert_eq!(last_grid, Some(Vec::new()), "the preview gives the screen up");
    h.stop_play("flat");
    let reopened = h.commands().into_iter().any(
        |c| matches!(c, Command::OpenLink { role: MediaRole::Play, ref stream, decode_video: true, .. } if stream == "desk"),
    );
    assert!(reopened, "the screen passes to the next stream, rebuilt with a decoder");
}

/// Media binds where the signalling connection runs (no lookup of the server's name on
/// the engine's task), the configured IP first.
#[test]
fn media_binds_on_the_signalling_route() {
    let none: Present = Box::new(|_: &str| false);
    let mut m = MediaSupervisor::new(MediaConfig::default(), None, none);
    assert_eq!(m.bind(), Bind::Unknown, "before any connection: no silent loopback");
    let server = "127.0.0.1:7880".parse().unwrap();
    m.set_route(crate::net::Route { local: "192.0.2.10:40000".parse().unwrap(), server });
    assert_eq!(m.bind(), Bind::Ip(IpAddr::from([192, 0, 2, 10])));
    m.set_route(crate::net::Route { local: "0.0.0.0:40000".parse().unwrap(), server });
    assert_eq!(m.bind(), Bind::Towards(server), "unspecified: the route to the server");
    assert_eq!(
        m.bind().resolve(|_| Some(IpAddr::from([10, 1, 1, 1]))),
        Ok("10.1.1.1:0".parse::<std::net::SocketAddr>().unwrap())
    );
    let no_route = m.bind().resolve(|_| None).unwrap_err();
    assert!(no_route.contains("no local address routes to the server's 127.0.0.1:7880"), "{no_route}");
    assert!(Bind::Unknown.resolve(|_| None).unwrap_err().contains("no signalling connection"));
    let none: Present = Box::new(|_: &str| false);
    let mut fixed = MediaSupervisor::new(MediaConfig::default(), Some([10, 0, 0, 7].into()), none);
    fixed.set_route(crate::net::Route { local: "192.0.2.10:40000".parse().unwrap(), server });
    assert_eq!(fixed.bind(), Bind::Ip(IpAddr::from([10, 0, 0, 7])));
}

#[test]
fn a_test_fault_goes_to_the_runner_only_for_a_running_publish_pipeline() {
    let mut h = Harness::software();
    assert!(!h.sup.inject_fault("door"), "nothing published");
    h.publish("door");
    h.commands();
    assert!(h.sup.inject_fault("door"));
    assert!(matches!(&h.commands()[..], [Command::InjectFault { stream }] if stream == "door"));
    assert!(!h.sup.inject_fault("other"));
    assert!(h.commands().is_empty());
}
