//! A whole call in memory and in virtual time: a door station (an engine core driven by the
//! device's call controller) and a flat (an engine core as an app drives it), the real room
//! registry and the SFU core, on an in-memory network with the real WebRTC cores
//! (`ClientCore` on the devices, `SfuCore` on the server: ICE, DTLS, SRTP, RTCP all run).
//! Media pipelines are fakes that make and count RTP, behind the same `Meters` and `Command`
//! seam the GStreamer runner serves.
//!
//! This is the template for every rule that spans the device, the engine and the server (a
//! ring, a door, a placement): add a case here as well as a real-process test.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::core::{CoreOutput, EngineCore, Input};
use super::event::{EngineEvent, PublishChannel, RoomState};
use super::media::MediaSupervisor;
use super::media::{Command, Control, Meters, Note, PlayCounts, PublishCounts};
use super::session::{APP_SIGN_TTL, CallStep, CmdId, Reply, Session, SessionConfig};
use crate::device::call::{Action, Button, CallController, CallMode, CallState, Callees, Input as CallInput, Press};
use crate::media::MediaConfig;
use crate::proto::{Capability, ErrorCode, MediaRole, RingOrder, ServerMsg, TrackState, UpdateType, UserInfo};
use crate::rtc::client::ClientCore;
use crate::rtc::sfu::SfuCore;
use crate::rtc::sfu::shard::{self, Shards};
use crate::rtc::test_rtp;
use crate::rtc::{Kind, Transport};
use crate::server::config::{AppConfig, RegistryConfig};
use crate::server::registry::{ConnId, MediaOut, Now, OfferFailure, Output as SrvOut, Registry};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const STEP: Duration = Duration::from_millis(5);
const SFU: &str = "10.0.0.1:7882";
const SIGNALLING: &str = "10.0.0.1:7880";
/// The fake camera's frame interval (15 fps) and the fake microphone's (Opus, 20 ms).
const FRAME: Duration = Duration::from_millis(66);
const AUDIO: Duration = Duration::from_millis(20);

/// One media connection of a device, with its real WebRTC core.
struct Link {
    epoch: u64,
    core: ClientCore,
    addr: SocketAddr,
}

/// A running fake publish pipeline.
struct Pipe {
    counts: PublishCounts,
    next_frame: Instant,
    next_audio: Instant,
    seq: u16,
    /// The audio's own sequence numbers (a repeated one is dropped as a duplicate).
    audio_seq: u16,
}

/// What a device's media runner would own: connections and pipelines, faked where GStreamer
/// would be, real where WebRTC is.
struct Media {
    ip: IpAddr,
    next_port: u16,
    links: HashMap<(MediaRole, String), Link>,
    pubs: HashMap<String, Pipe>,
    plays: HashMap<String, (PlayCounts, Option<Instant>)>,
    muted: bool,
    repair: bool,
    /// The device has a camera (`VideoSource::None`: audio only), switched on.
    has_camera: bool,
    camera: bool,
    /// Each play pipeline: it decodes video (built with a decoder, not muted), its gain.
    play_video: HashMap<String, (bool, bool)>,
    gains: HashMap<String, f64>,
    /// Video RTP packets that reached each play link at all (decoded or not).
    video_rtp: HashMap<String, u64>,
}

impl Meters for Media {
    fn publisher(&self, stream: &str) -> Option<PublishCounts> {
        self.pubs.get(stream).map(|p| p.counts)
    }
    fn encoder_kbps(&self, _: &str) -> Option<u32> {
        None
    }
    fn player(&self, stream: &str) -> Option<(PlayCounts, Option<Instant>)> {
        self.plays.get(stream).copied()
    }
}

impl Media {
    /// Carries out one supervisor command, as the GStreamer runner does; an offer comes back
    /// at once.
    fn execute(&mut self, now: Instant, cmd: Command) -> Option<Note> {
        match cmd {
            Command::OpenLink { role, stream, epoch, bind, silence, send_rate, decode_video, settings, .. } => {
                // What the runner offers: video only where it is sent or decoded.
                let video = if role == MediaRole::Play { decode_video } else { self.has_camera };
                let ip = self.ip;
                let mut addr = bind.resolve(|_| Some(ip)).expect("a route");
                addr.set_port(self.next_port);
                self.next_port += 1;
                let (core, offer) = ClientCore::new(now, role, addr, silence, send_rate, self.repair, video).unwrap();
                self.links.insert((role, stream.clone()), Link { epoch, core, addr });
                if role == MediaRole::Play {
                    // A new play pipeline comes with each play link.
                    self.plays.insert(stream.clone(), Default::default());
                    self.play_video.insert(stream.clone(), (decode_video, settings.video));
                    self.gains.insert(stream.clone(), settings.gain);
                }
                Some(Note::Offer(role, stream, epoch, offer))
            }
            Command::CloseLink { role, stream } => {
                self.links.remove(&(role, stream));
                None
            }
            Command::Answer { role, stream, sdp } => {
                if let Some(l) = self.links.get_mut(&(role, stream)) {
                    l.core.handle_answer(now, sdp);
                }
                None
            }
            Command::RequestKeyframe { stream } => {
                if let Some(l) = self.links.get_mut(&(MediaRole::Play, stream)) {
                    l.core.request_keyframe(now);
                }
                None
            }
            Command::StartPipeline { stream, .. } => {
                let pipe =
                    Pipe { counts: PublishCounts::default(), next_frame: now, next_audio: now, seq: 0, audio_seq: 0 };
                self.pubs.insert(stream, pipe);
                None
            }
            Command::StopPipeline { stream } => {
                self.pubs.remove(&stream);
                None
            }
            Command::Remove { role, stream } => {
                self.links.remove(&(role, stream.clone()));
                match role {
                    MediaRole::Publish => self.pubs.remove(&stream).map(|_| ()),
                    MediaRole::Play => self.plays.remove(&stream).map(|_| ()),
                };
                None
            }
            Command::Mute(muted) => {
                self.muted = muted;
                None
            }
            Command::Camera(on) => {
                self.camera = on;
                None
            }
            Command::PlayControls { stream, settings } => {
                if let Some(v) = self.play_video.get_mut(&stream) {
                    v.1 = settings.video;
                }
                self.gains.insert(stream, settings.gain);
                None
            }
            // Every fake frame decodes on its own; rates and the grid change nothing here.
            Command::ForceKeyframe { .. }
            | Command::SetRate { .. }
            | Command::SetAudioLoss { .. }
            | Command::Grid(_) => None,
            Command::InjectFault { .. } => None,
        }
    }

    /// The fake pipelines: frames and audio into the publish connections, what the play
    /// connections received counted as decoded and rendered.
    fn run_pipelines(&mut self, now: Instant) {
        for (stream, p) in &mut self.pubs {
            let link = self.links.get_mut(&(MediaRole::Publish, stream.clone()));
            let Some(link) = link else { continue };
            while p.next_frame <= now {
                p.seq = p.seq.wrapping_add(1);
                // No camera, or switched off: no frame reaches the encoder, nothing is sent.
                if self.has_camera && self.camera {
                    link.core.send_rtp(now, Kind::Video, &test_rtp(Kind::Video, p.seq));
                    p.counts.captured += 1;
                    p.counts.encoded += 1;
                }
                p.next_frame += FRAME;
            }
            while p.next_audio <= now {
                p.audio_seq = p.audio_seq.wrapping_add(1);
                if !self.muted {
                    link.core.send_rtp(now, Kind::Audio, &test_rtp(Kind::Audio, p.audio_seq));
                }
                p.counts.audio += 1;
                p.next_audio += AUDIO;
            }
        }
        for ((role, stream), link) in &mut self.links {
            while let Some((kind, _)) = link.core.poll_rtp() {
                if *role != MediaRole::Play {
                    continue;
                }
                let Some((c, last)) = self.plays.get_mut(stream) else { continue };
                if kind == Kind::Video {
                    *self.video_rtp.entry(stream.clone()).or_default() += 1;
                }
                let (built, on) = self.play_video.get(stream).copied().unwrap_or((true, true));
                match kind {
                    // Dropped before the decoder (or no decoder at all).
                    Kind::Video if !(built && on) => {}
                    Kind::Video => {
                        c.decoded += 1;
                        c.rendered += 1;
                        *last = Some(now);
                    }
                    Kind::Audio => c.audio += 1,
                }
            }
        }
    }
}

/// One device: its engine core, its media, and what the application saw.
struct Device {
    user: &'static str,
    core: EngineCore,
    media: Media,
    /// The signalling connection: the engine's epoch and the registry's connection.
    conn: Option<(u64, ConnId)>,
    events: Vec<EngineEvent>,
    done: HashMap<CmdId, Reply>,
    /// The door's call controller (the flat is driven by the test, as an app would).
    controller: Option<CallController>,
    /// The network drops every datagram to and from this device; signalling (TCP) waits
    /// in `held` and arrives when the cut ends, if its connection is still open.
    cut: bool,
    /// Signalling held by a cut: to the server (true) or to the device, on this connection.
    held: Vec<(bool, ConnId, u64, MsgHeld)>,
    /// The controller's call waiting for the server's answer.
    placing: Option<CmdId>,
    /// Door relay pulses for door requests.
    door_pulses: u32,
}

/// A signalling message held by a cut.
enum MsgHeld {
    Client(crate::proto::ClientMsg),
    Server(ServerMsg),
}

struct World {
    at: Instant,
    t0: Instant,
    reg: Registry,
    /// The SFU's shards (see `rtc::sfu::shard`), and the rules that place connections.
    sfu: Vec<SfuCore>,
    shards: Shards,
    sfu_addr: SocketAddr,
    devices: Vec<Device>,
    next_conn: ConnId,
    next_cmd: CmdId,
    next_tick: Instant,
    /// What the registry told the webhooks, in order.
    hooks: Vec<crate::server::webhooks::Hook>,
    /// Answers to HTTP requests (the admin API's door).
    http: Vec<(
        crate::server::registry::HttpId,
        Result<crate::server::registry::HttpAnswer, crate::server::registry::Refusal>,
    )>,
}

fn engine(at: Instant, seed: u64, media: MediaConfig) -> EngineCore {
    let cfg = SessionConfig {
        app_sign_ttl: APP_SIGN_TTL,
        app_id: 1,
        app_sign_key: Some(crate::auth::parse_secret(SECRET).unwrap()),
        policy: Default::default(),
        login_timeout: Duration::from_secs(5),
        seed,
    };
    let media = MediaSupervisor::new(media, None, Box::new(|_: &str| true));
    EngineCore::new(Session::new(cfg, at), Some(media))
}

impl World {
    fn new() -> World {
        World::sharded(1)
    }

    /// A world whose SFU runs in `n` shards.
    fn sharded(n: usize) -> World {
        let at = Instant::now();
        let mut cfg: RegistryConfig = toml::from_str("").unwrap();
        cfg.apps = vec![AppConfig {
            webhook_url: Some("https://backend.example/hooks".into()),
            webhook_secret: Some("0123456789abcdef".into()),
            ..AppConfig::new(1, SECRET)
        }];
        cfg.media.enabled = true;
        let sfu_addr: SocketAddr = SFU.parse().unwrap();
        World {
            at,
            t0: at,
            reg: Registry::new(&cfg, at),
            sfu: (0..n).map(|i| SfuCore::new(sfu_addr, vec![sfu_addr]).on_shard(i, Shards::new(n))).collect(),
            shards: Shards::new(n),
            sfu_addr,
            devices: vec![],
            next_conn: 1,
            next_cmd: 1,
            next_tick: at,
            hooks: vec![],
            http: vec![],
        }
    }

    fn now(&self) -> Now {
        Now { at: self.at, unix_ms: 2_000_000_000_000 + self.at.duration_since(self.t0).as_millis() as u64 }
    }

    fn add(&mut self, user: &'static str, ip: [u8; 4], controller: Option<CallController>) -> usize {
        self.add_with(user, ip, controller, MediaConfig::small())
    }

    /// A device with this media configuration (no camera: `VideoSource::None`).
    fn add_with(
        &mut self,
        user: &'static str,
        ip: [u8; 4],
        controller: Option<CallController>,
        cfg: MediaConfig,
    ) -> usize {
        let media = Media {
            ip: IpAddr::from(ip),
            next_port: 5000,
            links: HashMap::new(),
            pubs: HashMap::new(),
            plays: HashMap::new(),
            muted: false,
            repair: cfg.repair,
            has_camera: cfg.video != crate::media::VideoSource::None,
            camera: true,
            play_video: HashMap::new(),
            gains: HashMap::new(),
            video_rtp: HashMap::new(),
        };
        let core = engine(self.at, self.devices.len() as u64 + 1, cfg);
        let d = Device {
            user,
            core,
            media,
            conn: None,
            events: vec![],
            done: HashMap::new(),
            controller,
            cut: false,
            held: vec![],
            placing: None,
            door_pulses: 0,
        };
        self.devices.push(d);
        self.devices.len() - 1
    }

    /// An application call on device `i`'s session.
    fn call(&mut self, i: usize, f: impl FnOnce(&mut Session, Instant, CmdId) + Send + 'static) -> CmdId {
        self.next_cmd += 1;
        let cmd = self.next_cmd;
        let at = self.at;
        self.devices[i].core.handle(at, Input::Call(Box::new(f), cmd));
        cmd
    }

    fn login(&mut self, i: usize, room: &'static str) -> CmdId {
        let id = self.devices[i].user;
        // Devices with a controller are door stations and indoor units; the others persons.
        let user = if self.devices[i].controller.is_some() {
            UserInfo::device(id.into(), id.into(), vec![Capability::Answer, Capability::Door, Capability::Camera])
        } else {
            UserInfo::new(id.into(), id.into())
        };
        self.call(i, move |s, now, cmd| s.login(now, cmd, room.into(), user, None, true))
    }

    fn publish(&mut self, i: usize, stream: &'static str) -> CmdId {
        self.call(i, move |s, _, cmd| s.publish(cmd, PublishChannel::Main, stream.into(), String::new()))
    }

    fn play(&mut self, i: usize, stream: String) -> CmdId {
        self.call(i, move |s, _, cmd| s.play(cmd, stream))
    }

    /// Moves every output, message and datagram until nothing moves at this instant.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for i in 0..self.devices.len() {
                moved |= self.device_outputs(i);
            }
            moved |= self.server_outputs();
            moved |= self.network();
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn device_outputs(&mut self, i: usize) -> bool {
        let mut moved = false;
        let now = self.now();
        while let Some(o) = self.devices[i].core.poll_output(now.at) {
            moved = true;
            let d = &mut self.devices[i];
            match o {
                CoreOutput::Connect { epoch } => {
                    if d.cut {
                        d.core.handle(now.at, Input::Disconnected { epoch, refused: None });
                        continue;
                    }
                    let conn = self.next_conn;
                    self.next_conn += 1;
                    self.reg.handle_connect(conn, now);
                    d.conn = Some((epoch, conn));
                    let route = crate::net::Route {
                        local: SocketAddr::new(d.media.ip, 40_000 + conn as u16),
                        server: SIGNALLING.parse().unwrap(),
                    };
                    let unix_secs = now.unix_ms / 1000;
                    d.core.handle(now.at, Input::Connected { epoch, route: Some(route), unix_secs });
                }
                CoreOutput::Send { epoch, msg } => {
                    if let Some((e, conn)) = d.conn
                        && e == epoch
                    {
                        if d.cut {
                            d.held.push((true, conn, epoch, MsgHeld::Client(msg)));
                        } else {
                            self.reg.handle_message(conn, msg, now);
                        }
                    }
                }
                CoreOutput::Close { epoch } => {
                    if let Some((e, conn)) = d.conn
                        && e == epoch
                    {
                        d.conn = None;
                        if !d.cut {
                            self.reg.handle_disconnect(conn, now);
                        }
                    }
                }
                CoreOutput::Event(e) => {
                    if let Some(c) = &mut d.controller {
                        for input in controller_inputs(&e) {
                            c.handle(now.at, input);
                        }
                    }
                    d.events.push(e);
                }
                CoreOutput::Done { cmd, result } => {
                    if d.placing == Some(cmd) {
                        d.placing = None;
                        if let Some(c) = &mut d.controller {
                            c.handle(now.at, CallInput::Placed(result.clone().map_err(|e| e.code())));
                        }
                    }
                    d.done.insert(cmd, result);
                }
                CoreOutput::Media(cmd) => {
                    if let Some(note) = d.media.execute(now.at, cmd) {
                        d.core.handle(now.at, Input::Note(note));
                    }
                }
                CoreOutput::Finished => {}
            }
        }
        // The controller's actions, as the daemon's worker carries them out.
        let actions: Vec<Action> = match &mut self.devices[i].controller {
            Some(c) => std::iter::from_fn(|| c.poll_action()).collect(),
            None => vec![],
        };
        for a in actions {
            moved = true;
            let stream = format!("{}-main", self.devices[i].user);
            match a {
                Action::Publish => {
                    self.call(i, move |s, _, cmd| s.publish(cmd, PublishChannel::Main, stream, String::new()));
                }
                Action::StopPublish => {
                    self.call(i, move |s, _, cmd| s.stop_publish(cmd, PublishChannel::Main));
                }
                Action::Play(s) => {
                    self.play(i, s);
                }
                Action::StopPlay(st) => {
                    self.call(i, move |s, _, cmd| s.stop_play(cmd, &st));
                }
                Action::Mute(m) => self.devices[i].core.handle(now.at, Input::Mute(m)),
                Action::Call(Callees { users, order, ring_secs }) => {
                    let cmd = self.call(i, move |s, _, cmd| s.call(cmd, users, order, ring_secs));
                    self.devices[i].placing = Some(cmd);
                }
                Action::Answer(id) => {
                    self.call(i, move |s, _, cmd| s.call_step(cmd, id, CallStep::Answer));
                }
                Action::Decline(id) => {
                    self.call(i, move |s, _, cmd| s.call_step(cmd, id, CallStep::Decline));
                }
                Action::HangUp(id) => {
                    self.call(i, move |s, _, cmd| s.call_step(cmd, id, CallStep::HangUp));
                }
                Action::OpenDoorFor { request_id, .. } => {
                    self.devices[i].door_pulses += 1;
                    self.call(i, move |s, _, cmd| s.answer_door(cmd, request_id, Ok(())));
                }
                _ => {}
            }
        }
        moved
    }

    fn server_outputs(&mut self) -> bool {
        let mut moved = false;
        let now = self.now();
        while let Some(o) = self.reg.poll_output() {
            moved = true;
            match o {
                SrvOut::Send(conn, msg) => self.deliver(conn, msg),
                SrvOut::Media(MediaOut::Offer { reply, offer }) => {
                    let on = self.shards.of_offer(&offer);
                    let answer =
                        self.sfu[on].handle_offer(now.at, offer).map_err(|e| OfferFailure::Rejected(e.to_string()));
                    self.reg.handle_media_answer(reply, answer);
                }
                SrvOut::Media(MediaOut::Probe(_)) => {}
                SrvOut::Http(id, answer) => self.http.push((id, answer)),
                SrvOut::Media(MediaOut::EndStream(key)) => self.sfu.iter_mut().for_each(|s| s.end_stream(&key)),
                SrvOut::Media(MediaOut::EndPlay(session, key)) => {
                    self.sfu[self.shards.player(&session, &key)].end_play(&session, &key)
                }
                SrvOut::Media(MediaOut::EndSession(session)) => {
                    self.sfu.iter_mut().for_each(|s| s.end_session(&session))
                }
                SrvOut::Close(conn) => {
                    // A device behind a cut does not hear of it.
                    if let Some(d) = self.devices.iter_mut().find(|d| d.conn.is_some_and(|(_, c)| c == conn) && !d.cut)
                    {
                        let (epoch, _) = d.conn.take().unwrap();
                        d.core.handle(now.at, Input::Disconnected { epoch, refused: None });
                    }
                    self.reg.handle_disconnect(conn, now);
                }
                SrvOut::SaveDeviceKeys(_) => {}
                SrvOut::Hook(h) => self.hooks.push(h),
            }
        }
        moved
    }

    fn deliver(&mut self, conn: ConnId, msg: ServerMsg) {
        let at = self.at;
        if let Some(d) = self.devices.iter_mut().find(|d| d.conn.is_some_and(|(_, c)| c == conn)) {
            let epoch = d.conn.unwrap().0;
            if d.cut {
                d.held.push((false, conn, epoch, MsgHeld::Server(msg)));
            } else {
                d.core.handle(at, Input::Message { epoch, msg });
            }
        }
    }

    /// Ends device `i`'s cut: what TCP held arrives, on connections still open at both ends.
    fn restore(&mut self, i: usize) {
        let now = self.now();
        self.devices[i].cut = false;
        for (to_server, conn, epoch, msg) in std::mem::take(&mut self.devices[i].held) {
            if self.devices[i].conn != Some((epoch, conn)) {
                continue;
            }
            match (to_server, msg) {
                (true, MsgHeld::Client(m)) => self.reg.handle_message(conn, m, now),
                (false, MsgHeld::Server(m)) => self.devices[i].core.handle(now.at, Input::Message { epoch, msg: m }),
                _ => {}
            }
        }
        self.settle();
    }

    /// Datagrams between the devices' connections and the SFU (links without delay), and
    /// the connections' events into their engines.
    fn network(&mut self) -> bool {
        let mut moved = false;
        let at = self.at;
        for d in &mut self.devices {
            for link in d.media.links.values_mut() {
                while let Some(t) = link.core.poll_transmit() {
                    moved = true;
                    if !d.cut && t.to == self.sfu_addr && t.transport == Transport::Udp {
                        let land = shard::landing(self.sfu.len(), link.addr, Transport::Udp);
                        self.sfu[land].handle_datagram(at, link.addr, Transport::Udp, &t.data);
                    }
                }
            }
        }
        moved |= shard::exchange(&mut self.sfu, at);
        let out: Vec<_> = self.sfu.iter_mut().flat_map(|s| std::iter::from_fn(|| s.poll_transmit())).collect();
        for t in out {
            moved = true;
            for d in &mut self.devices {
                if d.cut {
                    continue;
                }
                if let Some(link) = d.media.links.values_mut().find(|l| l.addr == t.to) {
                    link.core.handle_datagram(at, self.sfu_addr, Transport::Udp, &t.data);
                }
            }
        }
        for d in &mut self.devices {
            let mut notes = VecDeque::new();
            for ((role, stream), link) in &mut d.media.links {
                while let Some(e) = link.core.poll_event() {
                    notes.push_back(Note::Link(*role, stream.clone(), link.epoch, e));
                }
            }
            for note in notes {
                moved = true;
                d.core.handle(at, Input::Note(note));
            }
        }
        moved
    }

    /// Advances virtual time in steps, running what is due, until `done` or `limit`.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&World) -> bool) -> bool {
        let end = self.at + limit;
        self.settle();
        while !done(self) {
            if self.at >= end {
                return false;
            }
            self.at += STEP;
            let now = self.now();
            if self.next_tick <= now.at {
                self.reg.handle_tick(now);
                self.next_tick = now.at + Duration::from_millis(250);
            }
            for s in &mut self.sfu {
                if s.poll_timeout().is_some_and(|t| t <= now.at) {
                    s.handle_timeout(now.at);
                }
            }
            for d in &mut self.devices {
                if d.core.poll_timeout().is_some_and(|t| t <= now.at) {
                    d.core.handle_timeout(now.at, &d.media);
                }
                if let Some(c) = &mut d.controller
                    && c.poll_timeout().is_some_and(|t| t <= now.at)
                {
                    c.handle_timeout(now.at);
                }
                for link in d.media.links.values_mut() {
                    if link.core.poll_timeout() <= now.at {
                        link.core.handle_timeout(now.at);
                    }
                }
                d.media.run_pipelines(now.at);
            }
            self.settle();
        }
        true
    }

    fn run(&mut self, d: Duration) {
        self.run_until(d, |_| false);
    }

    /// Video frames device `i` decoded of `stream` so far.
    fn decoded(&self, i: usize, stream: &str) -> u64 {
        self.devices[i].media.plays.get(stream).map_or(0, |(c, _)| c.decoded)
    }

    fn call_state(&self, i: usize) -> CallState {
        self.devices[i].controller.as_ref().map_or(CallState::Idle, |c| c.state())
    }

    fn in_room(&self, i: usize) -> bool {
        let last = self.devices[i].events.iter().rev().find_map(|e| match e {
            EngineEvent::RoomStateChanged { state, .. } => Some(*state),
            _ => None,
        });
        last == Some(RoomState::Connected)
    }
}

/// What the daemon tells its call controller of an engine event.
fn controller_inputs(e: &EngineEvent) -> Vec<CallInput> {
    match e {
        EngineEvent::RoomStateChanged { state: RoomState::Connected, .. } => vec![CallInput::RoomUp],
        EngineEvent::RoomStateChanged { .. } => vec![CallInput::RoomDown],
        EngineEvent::RoomStreamUpdate { update: UpdateType::Add, streams, .. } => streams
            .iter()
            .map(|s| CallInput::StreamAdded { stream: s.stream_id.clone(), user: s.user.user_id.clone() })
            .collect(),
        EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, streams, .. } => {
            streams.iter().map(|s| CallInput::StreamRemoved(s.stream_id.clone())).collect()
        }
        EngineEvent::CallIncoming { call_id, caller, .. } => {
            vec![CallInput::Incoming { call_id: *call_id, caller: caller.user_id.clone() }]
        }
        EngineEvent::CallStateUpdate { call_id, state, peer, reason, .. } => vec![CallInput::CallUpdate {
            call_id: *call_id,
            state: *state,
            peer: peer.user_id.clone(),
            reason: *reason,
        }],
        EngineEvent::DoorRequest { request_id, from, .. } => {
            vec![CallInput::DoorRequest { request_id: *request_id, from: from.user_id.clone() }]
        }
        _ => vec![],
    }
}

fn intercom(callee: &str) -> Option<CallController> {
    let callees = Callees { users: vec![callee.into()], order: RingOrder::Together, ring_secs: Some(30) };
    Some(CallController::new(CallMode::Intercom, callees))
}

impl World {
    fn press(&mut self, i: usize, button: Button, press: Press) {
        let at = self.at;
        if let Some(c) = &mut self.devices[i].controller {
            c.handle(at, CallInput::Button(button, press));
        }
    }
}

/// A visitor joining and publishing rings nobody. The door's call button rings the flat;
/// the flat's call button answers; both decode the other's video; a 10 s cut of the door's
/// network stops its media, and after it both decode again on the same call and session;
/// the flat opens the door (that door alone pulses); the flat hangs up and both are idle.
#[test]
fn the_door_rings_the_flat_which_answers_survives_a_ten_second_cut_opens_and_hangs_up() {
    door_rings_flat(World::new());
}

/// The same call with the SFU in three shards: each party's connections where the offer
/// placed them, their datagrams landing on any shard's socket.
#[test]
fn the_same_call_with_the_sfu_on_three_shards() {
    let w = door_rings_flat(World::sharded(3));
    let hops: u64 = w.sfu.iter().map(|s| s.stats().shard_hops).sum();
    assert!(hops > 0, "some datagrams landed on another shard's socket and were handed over");
}

/// Returns the world at the end, for a caller's own checks.
fn door_rings_flat(mut w: World) -> World {
    let door = w.add("door", [10, 0, 1, 1], intercom("flat"));
    let flat = w.add("flat", [10, 0, 2, 1], intercom("door"));
    let visitor = w.add("visitor", [10, 0, 3, 1], None);
    w.login(door, "lobby");
    w.login(flat, "lobby");
    w.login(visitor, "lobby");
    assert!(w.run_until(Duration::from_secs(5), |w| w.in_room(door) && w.in_room(flat) && w.in_room(visitor)));

    // A visitor publishing rings nobody.
    w.publish(visitor, "visitor-main");
    w.run(Duration::from_secs(2));
    assert_eq!((w.call_state(door), w.call_state(flat)), (CallState::Idle, CallState::Idle));

    // The door's button rings the flat; the door publishes at once (early video).
    w.press(door, Button::Call, Press::Short);
    assert!(w.run_until(Duration::from_secs(5), |w| w.call_state(flat) == CallState::Ringing), "the flat rings");
    assert_eq!(w.call_state(door), CallState::RingingOut);
    assert_eq!(w.decoded(flat, "door-main"), 0, "the flat's controller plays nothing before answering");

    // The flat answers with its button: both publish and play each other, not the visitor.
    w.press(flat, Button::Call, Press::Short);
    let both = |w: &World| w.decoded(door, "flat-main") >= 30 && w.decoded(flat, "door-main") >= 30;
    assert!(
        w.run_until(Duration::from_secs(10), both),
        "both decode: {} / {}",
        w.decoded(door, "flat-main"),
        w.decoded(flat, "door-main")
    );
    assert_eq!((w.call_state(door), w.call_state(flat)), (CallState::InCall, CallState::InCall));
    assert_eq!(
        w.decoded(flat, "visitor-main") + w.decoded(door, "visitor-main"),
        0,
        "media only between the call's members"
    );

    // A 10 s cut of the door's network: nothing reaches it, nothing leaves it.
    w.devices[door].cut = true;
    w.run(Duration::from_secs(1));
    let (at_door, at_flat) = (w.decoded(door, "flat-main"), w.decoded(flat, "door-main"));
    w.run(Duration::from_secs(9));
    assert!(w.decoded(door, "flat-main") <= at_door + 2, "media stopped at the door during the cut");
    assert!(w.decoded(flat, "door-main") <= at_flat + 2, "the door's media stopped during the cut");

    // Back: media flows both ways again within 10 s, on the same session (resumed).
    w.restore(door);
    let (at_door, at_flat) = (w.decoded(door, "flat-main"), w.decoded(flat, "door-main"));
    let back = |w: &World| w.decoded(door, "flat-main") >= at_door + 30 && w.decoded(flat, "door-main") >= at_flat + 30;
    assert!(
        w.run_until(Duration::from_secs(10), back),
        "media back after the cut: {} -> {} / {} -> {}",
        at_door,
        w.decoded(door, "flat-main"),
        at_flat,
        w.decoded(flat, "door-main")
    );
    let logins = w.devices[door]
        .events
        .iter()
        .filter(|e| matches!(e, EngineEvent::RoomStateChanged { reason: super::event::RoomStateReason::Logined, .. }))
        .count();
    assert_eq!(logins, 1, "resumed, not logged in again");
    assert_eq!((w.call_state(door), w.call_state(flat)), (CallState::InCall, CallState::InCall), "the call survived");

    // The flat opens the door of its call: the door pulses, the flat hears it opened. The
    // visitor (no door privilege, no call) is refused.
    let opened = w.call(flat, |s, _, cmd| s.open_door(cmd, "door".into()));
    assert!(w.run_until(Duration::from_secs(3), |w| w.devices[flat].done.contains_key(&opened)));
    assert_eq!(w.devices[flat].done[&opened], Ok(0));
    assert_eq!(w.devices[door].door_pulses, 1);
    let refused = w.call(visitor, |s, _, cmd| s.open_door(cmd, "door".into()));
    assert!(w.run_until(Duration::from_secs(3), |w| w.devices[visitor].done.contains_key(&refused)));
    assert_eq!(w.devices[visitor].done[&refused].clone().map_err(|e| e.code()), Err(ErrorCode::DOOR_FORBIDDEN));
    assert_eq!(w.devices[door].door_pulses, 1);

    // The flat hangs up: both idle, nothing published.
    w.press(flat, Button::Leave, Press::Short);
    assert!(
        w.run_until(Duration::from_secs(3), |w| w.call_state(door) == CallState::Idle),
        "the door hears the hang-up"
    );
    assert_eq!(w.call_state(flat), CallState::Idle);
    let ended = w.devices[door].events.iter().any(|e| {
        matches!(
            e,
            EngineEvent::CallStateUpdate { state: crate::proto::CallPhase::Ended, reason: ErrorCode::CALL_HUNG_UP, .. }
        )
    });
    assert!(ended, "the door was told the flat hung up");

    // The integrator's backend heard every step, in order, and the cut (a resume) is not
    // an event: nobody in the room saw a change.
    let names: Vec<String> = w
        .hooks
        .iter()
        .filter(|h| h.room_id == "lobby")
        .map(|h| {
            use crate::server::webhooks::HookEvent as H;
            match &h.event {
                H::UserJoined { user } => format!("user_joined {}", user.user_id),
                H::StreamPublished { stream_id, .. } => format!("stream_published {stream_id}"),
                H::StreamUnpublished { stream_id, .. } => format!("stream_unpublished {stream_id}"),
                H::CallRinging { caller, callee, .. } => format!("call_ringing {caller}>{callee}"),
                H::CallAnswered { callee, .. } => format!("call_answered {callee}"),
                H::CallEnded { reason, .. } => format!("call_ended {}", reason.name()),
                H::DoorOpened { door, by } => format!("door_opened {door} by {by}"),
                H::DoorRefused { door, by, reason } => format!("door_refused {door} by {by} {}", reason.name()),
                other => other.name().to_string(),
            }
        })
        .filter(|n| !n.starts_with("stream_"))
        .collect();
    assert_eq!(
        names,
        [
            "room_started",
            "user_joined door",
            "user_joined flat",
            "user_joined visitor",
            "call_ringing door>flat",
            "call_answered flat",
            "door_opened door by flat",
            "door_refused door by visitor DOOR_FORBIDDEN",
            "call_ended CALL_HUNG_UP",
        ],
        "{names:#?}"
    );
    assert!(w.hooks.iter().any(|h| matches!(&h.event,
        crate::server::webhooks::HookEvent::StreamPublished { stream_id, .. } if stream_id == "door-main")));
    assert!(w.hooks.windows(2).all(|p| p[0].ts <= p[1].ts), "timestamps do not go back");
    w
}

/// The door rings the flat while the flat's network is cut (within the grace period): for
/// 5 s, the ring waits in TCP and arrives after the cut; for 9 s, the flat's engine gives
/// the silent connection up and resumes, and the resume snapshot tells it of the ring. Either
/// way the flat rings and can answer.
#[test]
fn a_ring_during_a_cut_of_the_callee_is_delivered_when_it_comes_back() {
    for cut in [5, 9] {
        let mut w = World::new();
        let door = w.add("door", [10, 0, 1, 1], intercom("flat"));
        let flat = w.add("flat", [10, 0, 2, 1], intercom("door"));
        w.login(door, "lobby");
        w.login(flat, "lobby");
        assert!(w.run_until(Duration::from_secs(5), |w| w.in_room(door) && w.in_room(flat)));
        w.devices[flat].cut = true;
        w.run(Duration::from_millis(500));
        w.press(door, Button::Call, Press::Short);
        w.run(Duration::from_secs(cut) - Duration::from_millis(500));
        assert_eq!(w.call_state(flat), CallState::Idle, "cut off: it cannot ring yet");
        assert_eq!(w.call_state(door), CallState::RingingOut, "the door still rings out");
        w.restore(flat);
        let rang = w.run_until(Duration::from_secs(15), |w| w.call_state(flat) == CallState::Ringing);
        assert!(rang, "{cut} s cut: the ring is delivered after the cut");
        let resumes = w.devices[flat]
            .events
            .iter()
            .filter(|e| {
                matches!(e, EngineEvent::RoomStateChanged { reason: super::event::RoomStateReason::Reconnected, .. })
            })
            .count();
        assert_eq!(resumes, usize::from(cut > 7), "{cut} s cut: resumed only when the link was given up");
        w.press(flat, Button::Call, Press::Short);
        assert!(w.run_until(Duration::from_secs(5), |w| w.call_state(door) == CallState::InCall), "{cut} s: answered");
    }
}

impl World {
    /// Stream events device `i` saw: the tracks of `stream` as its RoomStreamUpdate told them.
    fn stream_tracks(&self, i: usize, stream: &str) -> Option<(TrackState, TrackState)> {
        self.devices[i].events.iter().find_map(|e| match e {
            EngineEvent::RoomStreamUpdate { update: UpdateType::Add, streams, .. } => {
                streams.iter().find(|s| s.stream_id == stream).map(|s| (s.video, s.audio))
            }
            _ => None,
        })
    }

    /// Video stalls device `i` was told of for `stream`.
    fn stalls(&self, i: usize, stream: &str) -> usize {
        self.devices[i]
            .events
            .iter()
            .filter(|e| {
                matches!(e, EngineEvent::MediaEvent { stream_id, event: super::event::MediaEventKind::VideoStall }
                    if stream_id == stream)
            })
            .count()
    }

    fn mic_states(&self, i: usize) -> Vec<TrackState> {
        self.devices[i]
            .events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::RemoteMicStateUpdate { state, .. } => Some(*state),
                _ => None,
            })
            .collect()
    }

    fn camera_states(&self, i: usize) -> Vec<TrackState> {
        self.devices[i]
            .events
            .iter()
            .filter_map(|e| match e {
                EngineEvent::RemoteCameraStateUpdate { state, .. } => Some(*state),
                _ => None,
            })
            .collect()
    }

    /// Both log in to `lobby`; `caller`'s call button rings `callee`, whose call button
    /// answers.
    fn ring_and_answer(&mut self, caller: usize, callee: usize) {
        self.login(caller, "lobby");
        self.login(callee, "lobby");
        assert!(self.run_until(Duration::from_secs(5), |w| w.in_room(caller) && w.in_room(callee)));
        self.press(caller, Button::Call, Press::Short);
        assert!(self.run_until(Duration::from_secs(5), |w| w.call_state(callee) == CallState::Ringing));
        self.press(callee, Button::Call, Press::Short);
    }

    /// Audio packets device `i` received of `stream`.
    fn audio(&self, i: usize, stream: &str) -> u64 {
        self.devices[i].media.plays.get(stream).map_or(0, |(c, _)| c.audio)
    }
}

/// A lift intercom without a camera calls the desk: its stream is announced audio only, the
/// desk's player builds no video decoder and sees no stall, audio flows both ways, and the
/// desk's video reaches the lift only if it has a display (here it has none: not decoded).
#[test]
fn a_lift_without_a_camera_calls_with_audio_only() {
    let mut w = World::new();
    let no_camera = MediaConfig {
        video: crate::media::VideoSource::None,
        video_sink: crate::media::VideoSink::None,
        ..MediaConfig::small()
    };
    let lift = w.add_with("lift", [10, 0, 1, 1], intercom("desk"), no_camera);
    let desk = w.add("desk", [10, 0, 2, 1], intercom("lift"));
    w.ring_and_answer(lift, desk);
    let both = |w: &World| w.audio(desk, "lift-main") >= 50 && w.audio(lift, "desk-main") >= 50;
    assert!(w.run_until(Duration::from_secs(10), both), "audio both ways");
    assert_eq!(w.stream_tracks(desk, "lift-main"), Some((TrackState::Absent, TrackState::On)));
    assert_eq!(w.devices[desk].media.play_video.get("lift-main"), Some(&(false, true)), "no decoder for no video");
    w.run(Duration::from_secs(3));
    assert_eq!(w.decoded(desk, "lift-main"), 0);
    assert_eq!(w.stalls(desk, "lift-main"), 0, "an audio-only stream never stalls its video");
    assert_eq!(w.devices[lift].media.play_video.get("desk-main"), Some(&(false, true)), "the lift has no display");
    assert_eq!(w.decoded(lift, "desk-main"), 0);
    assert_eq!(w.devices[lift].media.video_rtp.get("desk-main"), None, "nor downloaded: no video m-line was offered");
    assert!(!w.devices[desk].media.video_rtp.contains_key("lift-main"), "the lift sends no video");
    assert!(w.audio(lift, "desk-main") > 100, "the lift hears the desk");
}

/// The building's backend opens the door over the admin API with no call: only the named
/// station's relay pulses, the request is answered once it confirmed, and the webhooks
/// hear it; a station that does not answer is DOOR_NO_ANSWER.
#[test]
fn the_admin_api_opens_one_door_without_a_call() {
    use crate::server::registry::{HttpAnswer, HttpMedia};
    let mut w = World::new();
    let door = w.add("door", [10, 0, 1, 1], intercom("flat"));
    let gate = w.add("gate", [10, 0, 3, 1], intercom("flat"));
    let flat = w.add("flat", [10, 0, 2, 1], intercom("door"));
    for i in [door, gate, flat] {
        w.login(i, "lobby");
    }
    assert!(w.run_until(Duration::from_secs(5), |w| w.in_room(door) && w.in_room(gate) && w.in_room(flat)));
    let now = w.now();
    let ask = HttpMedia::Door { app_id: 1, room_id: "lobby".into(), user_id: "gate".into(), by: "backend".into() };
    w.reg.handle_http(7, ask, now);
    assert!(w.run_until(Duration::from_secs(3), |w| !w.http.is_empty()));
    assert_eq!(w.http.pop(), Some((7, Ok(HttpAnswer::DoorOpened))));
    assert_eq!((w.devices[gate].door_pulses, w.devices[door].door_pulses), (1, 0), "the gate alone");
    assert_eq!((w.call_state(gate), w.call_state(flat)), (CallState::Idle, CallState::Idle), "no call needed");
    assert!(w.hooks.iter().any(|h| matches!(&h.event,
        crate::server::webhooks::HookEvent::DoorOpened { door, by } if door == "gate" && by == "backend")));
    // A station cut off the network does not answer: DOOR_OFFLINE once it is detached, or
    // DOOR_NO_ANSWER while the server still thinks it is there.
    w.devices[door].cut = true;
    let now = w.now();
    let ask = HttpMedia::Door { app_id: 1, room_id: "lobby".into(), user_id: "door".into(), by: "backend".into() };
    w.reg.handle_http(8, ask, now);
    assert!(w.run_until(Duration::from_secs(6), |w| !w.http.is_empty()));
    let (id, answer) = w.http.pop().unwrap();
    let code = answer.unwrap_err().code;
    assert_eq!(id, 8);
    assert!(matches!(code, ErrorCode::DOOR_NO_ANSWER | ErrorCode::DOOR_OFFLINE), "{code:?}");
    assert_eq!(w.devices[door].door_pulses, 0);
}

/// In a call, the door switches its camera off: the flat is told, its video stops without
/// a stall while audio goes on; on again, the flat is told and video is back within 1 s.
/// The flat mutes the door's video and its speaker: nothing is decoded, the gain is 0.
#[test]
fn camera_off_and_on_mid_call_is_told_and_never_counts_as_a_stall() {
    let mut w = World::new();
    let door = w.add("door", [10, 0, 1, 1], intercom("flat"));
    let flat = w.add("flat", [10, 0, 2, 1], intercom("door"));
    w.ring_and_answer(door, flat);
    assert!(w.run_until(Duration::from_secs(10), |w| w.decoded(flat, "door-main") >= 30));

    let at = w.at;
    w.devices[door].core.handle(at, Input::Control(Control::Camera(false)));
    assert!(w.run_until(Duration::from_secs(2), |w| w.camera_states(flat) == [TrackState::Off]), "the flat is told");
    w.run(Duration::from_millis(300));
    let (video, audio) = (w.decoded(flat, "door-main"), w.audio(flat, "door-main"));
    w.run(Duration::from_secs(3));
    assert_eq!(w.decoded(flat, "door-main"), video, "no video while the camera is off");
    assert!(w.audio(flat, "door-main") >= audio + 100, "audio goes on");
    assert_eq!(w.stalls(flat, "door-main"), 0, "a camera switched off is not a stall");

    let at = w.at;
    w.devices[door].core.handle(at, Input::Control(Control::Camera(true)));
    let back =
        |w: &World| w.camera_states(flat) == [TrackState::Off, TrackState::On] && w.decoded(flat, "door-main") > video;
    assert!(w.run_until(Duration::from_secs(1), back), "video back within 1 s of camera on");
    w.run(Duration::from_secs(2));
    assert_eq!(w.stalls(flat, "door-main"), 0);

    // The door's microphone: the flat is told it is off, then on.
    let at = w.at;
    w.devices[door].core.handle(at, Input::Mute(true));
    let mic = |w: &World| w.mic_states(flat);
    assert!(w.run_until(Duration::from_secs(2), |w| mic(w) == [TrackState::Off]));
    let at = w.at;
    w.devices[door].core.handle(at, Input::Mute(false));
    assert!(w.run_until(Duration::from_secs(2), |w| mic(w) == [TrackState::Off, TrackState::On]));

    // The flat stops decoding the door's video and mutes its speaker.
    let at = w.at;
    w.devices[flat].core.handle(at, Input::Control(Control::PlayVideo { stream: "door-main".into(), on: false }));
    w.devices[flat].core.handle(at, Input::Control(Control::Speaker(false)));
    w.run(Duration::from_millis(200));
    let video = w.decoded(flat, "door-main");
    w.run(Duration::from_secs(2));
    assert_eq!(w.decoded(flat, "door-main"), video, "a muted stream's video is not decoded");
    assert_eq!(w.devices[flat].media.gains["door-main"], 0.0);
    assert_eq!(w.stalls(flat, "door-main"), 0);
    let at = w.at;
    w.devices[flat].core.handle(at, Input::Control(Control::PlayVideo { stream: "door-main".into(), on: true }));
    assert!(w.run_until(Duration::from_secs(1), |w| w.decoded(flat, "door-main") > video + 5));
}

/// A camera switched off while the publish is still on its way: the room ends up told the
/// camera is off (the publish said on; the switch follows once it is accepted).
#[test]
fn a_switch_during_the_publish_is_not_lost() {
    let mut w = World::new();
    let door = w.add("door", [10, 0, 1, 1], None);
    let flat = w.add("flat", [10, 0, 2, 1], None);
    w.login(door, "lobby");
    w.login(flat, "lobby");
    assert!(w.run_until(Duration::from_secs(5), |w| w.in_room(door) && w.in_room(flat)));
    w.publish(door, "door-main");
    let at = w.at;
    w.devices[door].core.handle(at, Input::Control(Control::Camera(false)));
    assert!(w.run_until(Duration::from_secs(3), |w| w.camera_states(flat) == [TrackState::Off]), "the flat is told");
    assert_eq!(
        w.stream_tracks(flat, "door-main"),
        Some((TrackState::On, TrackState::On)),
        "announced before the switch"
    );
}
