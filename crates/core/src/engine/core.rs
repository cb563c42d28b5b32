//! The engine's one sans-IO core: the signalling [`Session`] and the [`MediaSupervisor`]
//! composed, with one input type and one output type.
//!
//! The seam between the two used to be the driver task's glue (session outputs rewritten
//! for the supervisor, offers handed across, unsent offers and "network back" passed the
//! other way). It lives here now, where it reads no clock and owns no socket, so a test can
//! drive a whole engine in virtual time: feed it [`Input`]s, carry out its [`CoreOutput`]s
//! (a frame to send, a command for the media runner, an event for the application).

use std::time::Instant;

use super::event::EngineEvent;
use super::media::MediaSupervisor;
use super::media::{Command, MediaOutput, Meters, Note};
use super::session::{CmdId, Output, Reply, Session};
use crate::proto::{ClientMsg, ErrorCode, ServerMsg};

/// A call of the application on the session (login, publish, ...), numbered by the driver.
pub type Call = Box<dyn FnOnce(&mut Session, Instant, CmdId) + Send>;

/// What goes into the core.
pub enum Input {
    /// The application's call, numbered `cmd`; its result comes out as [`CoreOutput::Done`].
    Call(Call, CmdId),
    /// The signalling connection of `epoch` is up, by this route (its local address is
    /// where media binds).
    Connected {
        /// The signalling connection's generation.
        epoch: u64,
        /// The route of the connection (its local address is where media binds).
        route: Option<crate::net::Route>,
        /// Wall-clock time, Unix seconds (token lifetimes).
        unix_secs: u64,
    },
    /// A message from the server on the connection of `epoch`.
    Message {
        /// The signalling connection's generation.
        epoch: u64,
        /// The message.
        msg: ServerMsg,
    },
    /// The connection of `epoch` ended or never opened; with the code of a refusal (a
    /// certificate the engine does not trust).
    Disconnected {
        /// The signalling connection's generation.
        epoch: u64,
        /// The code of a refusal (a certificate the engine does not trust).
        refused: Option<ErrorCode>,
    },
    /// A note from the media runner (an offer, a connection's event, a pipeline failure).
    Note(Note),
    /// Microphone mute on or off, on every publish pipeline and those built later.
    Mute(bool),
    /// A media control of the application (camera, speaker, a played stream's audio or
    /// video, volume, sound level reports).
    Control(super::media::Control),
    /// Log out and finish ([`CoreOutput::Finished`] follows); `cmd` numbers the logout.
    Destroy(CmdId),
}

/// What comes out of the core, in the order it must be carried out.
#[derive(Debug)]
pub enum CoreOutput {
    /// Open the signalling connection numbered `epoch`.
    Connect {
        /// The signalling connection's generation.
        epoch: u64,
    },
    /// Send a message on the connection of `epoch`.
    Send {
        /// The signalling connection's generation.
        epoch: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Close the connection of `epoch`.
    Close {
        /// The signalling connection's generation.
        epoch: u64,
    },
    /// For the application.
    Event(EngineEvent),
    /// The call numbered `cmd` finished.
    Done {
        /// The call.
        cmd: CmdId,
        /// Its result.
        result: Reply,
    },
    /// For the media runner; a note it returns at once goes back in as [`Input::Note`]
    /// before the next output is polled (a publish connection's offer leaves in the same turn).
    Media(Command),
    /// The engine is finished (destroyed): nothing more comes out.
    Finished,
}

/// See the module docs.
pub struct EngineCore {
    s: Session,
    media: Option<MediaSupervisor>,
    /// The logout of [`Input::Destroy`]: its `Done` finishes the engine.
    destroy: Option<CmdId>,
    finished: bool,
    out: std::collections::VecDeque<CoreOutput>,
}

impl EngineCore {
    /// A core over a fresh session; `media`: the supervisor when the engine carries media.
    pub fn new(mut s: Session, media: Option<MediaSupervisor>) -> Self {
        if let Some(m) = &media {
            let (video, audio) = m.local_tracks();
            s.set_local_tracks(video, audio);
        }
        EngineCore { s, media, destroy: None, finished: false, out: Default::default() }
    }

    /// Takes one input.
    pub fn handle(&mut self, now: Instant, input: Input) {
        if self.finished {
            return;
        }
        match input {
            Input::Call(f, cmd) => f(&mut self.s, now, cmd),
            Input::Connected { epoch, route, unix_secs } => {
                if let (Some(m), Some(route)) = (&mut self.media, route) {
                    m.set_route(route);
                }
                self.s.handle_connected(now, epoch, unix_secs);
            }
            Input::Message { epoch, msg } => self.s.handle_message(now, epoch, msg),
            Input::Disconnected { epoch, refused: Some(code) } => self.s.handle_connect_refused(now, epoch, code),
            Input::Disconnected { epoch, refused: None } => self.s.handle_disconnected(now, epoch),
            Input::Note(note) => {
                if let Some(m) = &mut self.media {
                    m.handle_note(now, note);
                }
            }
            Input::Mute(muted) => self.control(now, super::media::Control::Microphone(!muted)),
            Input::Control(c) => self.control(now, c),
            Input::Destroy(cmd) => {
                self.destroy = Some(cmd);
                self.s.logout(now, cmd);
            }
        }
    }

    /// Applies a media control and tells the session what the room must see of it (the
    /// camera and microphone states of published streams).
    fn control(&mut self, now: Instant, c: super::media::Control) {
        if let Some(m) = &mut self.media {
            m.control(now, c);
            let (video, audio) = m.local_tracks();
            self.s.set_local_tracks(video, audio);
        }
    }

    /// Makes the stream's publish pipeline fail (a test hook, carried out by the runner as
    /// [`Command::InjectFault`]). False when the stream has no publish pipeline running.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn inject_fault(&mut self, stream: &str) -> bool {
        self.media.as_mut().is_some_and(|m| m.inject_fault(stream))
    }

    /// The session's and the media's timers; `meters` reads the running pipelines.
    pub fn handle_timeout(&mut self, now: Instant, meters: &dyn Meters) {
        if self.s.poll_timeout().is_some_and(|t| t <= now) {
            self.s.handle_timeout(now);
        }
        if let Some(m) = &mut self.media
            && m.poll_timeout().is_some_and(|t| t <= now)
        {
            let fresh = self.s.signalling_fresh(now);
            m.handle_timeout(now, fresh, meters);
            let (up, down) = m.link_quality();
            self.s.set_media_quality(up, down);
        }
    }

    /// When [`EngineCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let media = self.media.as_ref().and_then(|m| m.poll_timeout());
        [self.s.poll_timeout(), media].into_iter().flatten().min()
    }

    /// The next output, once the session and the media have told each other what they must.
    pub fn poll_output(&mut self, now: Instant) -> Option<CoreOutput> {
        while self.out.is_empty() && !self.finished {
            let moved = self.drain_session(now) | self.drain_media(now);
            if !moved {
                break;
            }
        }
        self.out.pop_front()
    }

    /// Session outputs: frames and results out, stream states and media answers to the
    /// supervisor. Returns whether anything came out.
    fn drain_session(&mut self, now: Instant) -> bool {
        let mut any = false;
        while let Some(o) = self.s.poll_output() {
            any = true;
            match o {
                Output::Connect { epoch } => self.out.push_back(CoreOutput::Connect { epoch }),
                Output::Send { epoch, msg } => self.out.push_back(CoreOutput::Send { epoch, msg }),
                Output::Close { epoch } => self.out.push_back(CoreOutput::Close { epoch }),
                Output::Event(e) => self.out.push_back(CoreOutput::Event(e)),
                Output::RemoteTracks { stream_id, video, audio } => {
                    if let Some(m) = &mut self.media {
                        m.handle_remote_tracks(now, &stream_id, video, audio);
                    }
                }
                Output::Stream(change) => match &mut self.media {
                    // The supervisor's event (and commands) come out at once, so the
                    // application hears of the stream in the order signalling told it.
                    Some(m) => {
                        m.handle_stream(now, change);
                        self.drain_media(now);
                    }
                    None => self.out.push_back(CoreOutput::Event(change.into_event())),
                },
                Output::Joined { fresh, ice_servers } => {
                    if let Some(m) = &mut self.media {
                        m.set_server_ice(ice_servers);
                        m.handle_joined(now, fresh);
                    }
                }
                Output::MediaAnswer { stream_id, role, tag, result } => {
                    if let Some(m) = &mut self.media {
                        m.handle_answer(now, &stream_id, role, tag, result);
                    }
                }
                Output::Done { cmd, .. } if Some(cmd) == self.destroy => {
                    self.finished = true;
                    self.out.push_back(CoreOutput::Finished);
                    return true;
                }
                Output::Done { cmd, result } => self.out.push_back(CoreOutput::Done { cmd, result }),
            }
        }
        any
    }

    /// Media outputs: commands for the runner, offers into the session (or back, unsent),
    /// events out, and "network back" to the session. Returns whether anything came out.
    fn drain_media(&mut self, now: Instant) -> bool {
        let Some(m) = &mut self.media else { return false };
        let mut any = false;
        while let Some(cmd) = m.poll_command() {
            any = true;
            self.out.push_back(CoreOutput::Media(cmd));
        }
        while let Some(o) = m.poll_output() {
            any = true;
            match o {
                MediaOutput::Event(e) => self.out.push_back(CoreOutput::Event(e)),
                MediaOutput::NetworkBack => self.s.network_back(now),
                MediaOutput::Offer { stream, role, sdp, tag } => {
                    if !self.s.media_offer(stream.clone(), role, sdp, tag) {
                        m.handle_unsent(&stream, role, tag);
                    }
                }
            }
        }
        any
    }
}
