//! Media in the registry: which media connections a session may open, how the relay's
//! answers come back, and what the relay must tear down when streams, subscriptions and
//! sessions end. The relay itself ([`crate::rtc::sfu`]) only sees stream keys; every
//! permission is decided here.

use super::resources::resource_of;
use super::{ConnId, HttpId, Output, Registry};
use crate::proto::{ErrorCode, MediaRole, ServerMsg};
use crate::rtc::sfu::{MediaOffer, StreamKey};

/// Who waits for the relay's answer to an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A signalling client: `media_answer` (or an error) with request number `req`.
    Signalling {
        /// The connection to answer on.
        conn: ConnId,
        /// The request number to echo.
        req: u64,
        /// The stream the offer is for.
        stream_id: String,
    },
    /// A WHIP or WHEP POST: `201 Created` with the resource's location, or its refusal.
    Http {
        /// The HTTP request waiting.
        id: HttpId,
        /// The resource the offer is for.
        resource: String,
    },
}

/// Why the relay did not answer an offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OfferFailure {
    /// The offer itself is unusable (bad SDP, no usable media).
    Rejected(String),
    /// The relay could not take it (stopped, overloaded).
    Unavailable(String),
}

/// What the registry asks of the media relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOut {
    /// Answer this offer, then hand the answer to [`Registry::handle_media_answer`].
    Offer {
        /// Who waits for the answer.
        reply: Reply,
        /// The offer.
        offer: MediaOffer,
    },
    /// The stream is gone: close its publisher and players.
    EndStream(StreamKey),
    /// A session stopped playing a stream.
    EndPlay(String, StreamKey),
    /// A media session is gone.
    EndSession(String),
    /// Is this media session still connected? When not, call [`Registry::handle_media_gone`].
    Probe(String),
}

impl Registry {
    pub(super) fn media_offer(
        &mut self,
        conn: ConnId,
        req: u64,
        sid: &str,
        stream_id: String,
        role: MediaRole,
        sdp: String,
    ) {
        if !self.media_enabled {
            return self.fail(conn, Some(req), ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media");
        }
        let Some(s) = self.sessions.get(sid) else {
            return self.internal(conn, Some(req), "media offer: no session behind the connection");
        };
        match role {
            MediaRole::Publish if !s.published.contains_key(&stream_id) => {
                return self.fail(
                    conn,
                    Some(req),
                    ErrorCode::MEDIA_NOT_PUBLISHING,
                    "publish the stream before offering its media",
                );
            }
            MediaRole::Play if !s.subscriptions.contains(&stream_id) => {
                return self.fail(conn, Some(req), ErrorCode::MEDIA_NOT_PLAYING, "play the stream before offering");
            }
            MediaRole::Play => {
                if !self.published_in_room(sid, &stream_id) {
                    return self.fail(
                        conn,
                        Some(req),
                        ErrorCode::STREAM_NOT_FOUND,
                        "stream not published in this room",
                    );
                }
            }
            MediaRole::Publish => {}
        }
        let stream = StreamKey { app_id: s.app_id, room_id: s.room_id.clone(), stream_id: stream_id.clone() };
        self.out.push_back(Output::Media(MediaOut::Offer {
            reply: Reply::Signalling { conn, req, stream_id },
            offer: MediaOffer { session: sid.to_string(), stream, role, sdp },
        }));
    }

    /// The relay answered an offer (or could not).
    pub fn handle_media_answer(&mut self, reply: Reply, answer: Result<String, OfferFailure>) {
        match reply {
            Reply::Signalling { conn, req, stream_id } => {
                let msg = match answer {
                    Ok(sdp) => ServerMsg::MediaAnswer { req, stream_id, sdp },
                    Err(OfferFailure::Rejected(e)) => {
                        self.metrics.error(ErrorCode::MEDIA_OFFER_REJECTED);
                        ServerMsg::error(
                            Some(req),
                            ErrorCode::MEDIA_OFFER_REJECTED,
                            format!("media offer refused: {e}"),
                        )
                    }
                    Err(OfferFailure::Unavailable(e)) => {
                        self.metrics.error(ErrorCode::MEDIA_UNAVAILABLE);
                        ServerMsg::error(Some(req), ErrorCode::MEDIA_UNAVAILABLE, e)
                    }
                };
                self.send(conn, msg);
            }
            Reply::Http { id, resource } => self.http_answer(id, &resource, answer),
        }
    }

    /// The relay says a probed media session is gone: the resource it belonged to ends.
    pub fn handle_media_gone(&mut self, media_session: &str) {
        if let Some((role, id)) = resource_of(media_session) {
            tracing::info!(callbox_event = "whip", resource = %super::short(id), ?role, "the resource's media is gone; ending it");
            self.end_resource(role, id);
        }
    }

    /// The key of `stream_id` as published or played by session `sid`.
    pub(super) fn stream_key(&self, sid: &str, stream_id: &str) -> Option<StreamKey> {
        let s = self.sessions.get(sid)?;
        Some(StreamKey { app_id: s.app_id, room_id: s.room_id.clone(), stream_id: stream_id.to_string() })
    }

    pub(super) fn media_out(&mut self, m: MediaOut) {
        if self.media_enabled {
            self.out.push_back(Output::Media(m));
        }
    }
}
