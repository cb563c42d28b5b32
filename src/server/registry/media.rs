//! Media in the registry: which media connections a session may open, and what the relay
//! must tear down when streams, subscriptions and sessions end. The relay itself
//! ([`crate::rtc::sfu`]) only sees stream keys; every permission is decided here.

use super::{ConnId, Output, Registry};
use crate::proto::{ErrorCode, MediaRole};
use crate::rtc::sfu::{MediaOffer, StreamKey};

/// What the registry asks of the media relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOut {
    /// Answer this offer, then send `media_answer` (or an error) to `conn`.
    Offer {
        /// The connection to answer on.
        conn: ConnId,
        /// The request number to echo.
        req: u64,
        /// The offer.
        offer: MediaOffer,
    },
    /// The stream is gone: close its publisher and players.
    EndStream(StreamKey),
    /// A session stopped playing a stream.
    EndPlay(String, StreamKey),
    /// A session is gone.
    EndSession(String),
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
        let stream = StreamKey { app_id: s.app_id, room_id: s.room_id.clone(), stream_id };
        self.out.push_back(Output::Media(MediaOut::Offer {
            conn,
            req,
            offer: MediaOffer { session: sid.to_string(), stream, role, sdp },
        }));
    }

    /// The key of `stream_id` as published or played by session `sid`.
    pub(super) fn stream_key(&self, sid: &str, stream_id: &str) -> Option<StreamKey> {
        let s = self.sessions.get(sid)?;
        Some(StreamKey { app_id: s.app_id, room_id: s.room_id.clone(), stream_id: stream_id.to_string() })
    }

    /// Sends a message the media relay produced (an answer) to a connection.
    pub fn reply(&mut self, conn: ConnId, msg: crate::proto::ServerMsg) {
        self.out.push_back(Output::Send(conn, msg));
    }

    pub(super) fn media_out(&mut self, m: MediaOut) {
        if self.media_enabled {
            self.out.push_back(Output::Media(m));
        }
    }
}
