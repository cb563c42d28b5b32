//! WHIP and WHEP in the registry: the HTTP edge hands each parsed request to the hub like
//! any other client's message ([`Registry::handle_http`]), and hears back on
//! [`Output::Http`]. A WHIP publisher publishes as its token's own user (a `*` token cannot
//! publish): when that user is logged in over signalling in the same room, the stream joins
//! that session; otherwise the user is admitted as a session without a connection (pinned:
//! no heartbeat), through the same admission as a login, so members see the user and the
//! stream come and go as for any device. A WHEP player needs no session: its token is
//! checked and the stream must be published in the room. Both are checked once, at their
//! POST, and are resources until they end (see [`super::resources`]).

use super::admission::Admission;
use super::refusal::{Refusal, RefusalKind as K};
use super::resources::{Resource, media_session};
use super::*;
use crate::auth::Privilege;
use crate::proto::MediaRole;
use crate::rtc::sfu::{MediaOffer, StreamKey};

/// A WHIP or WHEP request, as the HTTP edge parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpMedia {
    /// `POST /whip/v1/...` (publish) or `POST /whep/v1/...` (play).
    Offer {
        /// Publish (WHIP) or play (WHEP).
        role: MediaRole,
        /// The app of the URL.
        app_id: u32,
        /// The room of the URL.
        room_id: String,
        /// The stream of the URL.
        stream_id: String,
        /// The bearer token.
        token: String,
        /// The SDP offer.
        sdp: String,
    },
    /// `DELETE` on a resource's `Location`.
    End {
        /// Publish (WHIP) or play (WHEP).
        role: MediaRole,
        /// The resource ID (the last part of the location).
        resource: String,
    },
    /// `POST /api/v1/apps/{app}/rooms/{room}/users/{user}/door`, its admin token already
    /// checked for the room: answered once the door station confirms or refuses, or
    /// DOOR_NO_ANSWER.
    Door {
        /// The app.
        app_id: u32,
        /// The room.
        room_id: String,
        /// The door station's user.
        user_id: String,
        /// The admin token's user (who asked, for the journal and the webhooks).
        by: String,
    },
}

/// What an accepted WHIP or WHEP request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAnswer {
    /// `201 Created`: the resource's location and the SDP answer.
    Created {
        /// The path of the resource (for `Location`).
        location: String,
        /// The relay's SDP answer.
        sdp: String,
    },
    /// `200 OK`: the resource ended.
    Ended,
    /// `200 OK`: the door station opened its door.
    DoorOpened,
}

impl Registry {
    /// A WHIP or WHEP request from the HTTP edge; its answer comes as [`Output::Http`] with
    /// the same `id` (after the relay answered, for an offer).
    pub fn handle_http(&mut self, id: HttpId, req: HttpMedia, now: Now) {
        self.observe(now);
        match req {
            HttpMedia::Offer { role, app_id, room_id, stream_id, token, sdp } => {
                match self.open_resource(role, app_id, &room_id, &stream_id, &token, now) {
                    Ok((resource, stream)) => {
                        let offer = MediaOffer { session: media_session(role, &resource), stream, role, sdp };
                        self.out
                            .push_back(Output::Media(MediaOut::Offer { reply: Reply::Http { id, resource }, offer }));
                    }
                    Err(r) => {
                        self.metrics.error(r.code);
                        self.out.push_back(Output::Http(id, Err(r)));
                    }
                }
            }
            HttpMedia::End { role, resource } => {
                let answer = if self.end_resource(role, &resource) {
                    Ok(HttpAnswer::Ended)
                } else {
                    let what = if role == MediaRole::Publish { "no such WHIP session" } else { "no such WHEP session" };
                    Err(Refusal::new(K::NotFound, ErrorCode::STREAM_NOT_FOUND, what))
                };
                self.out.push_back(Output::Http(id, answer));
            }
            HttpMedia::Door { app_id, room_id, user_id, by } => {
                self.admin_open_door(id, app_id, room_id, user_id, by, now)
            }
        }
    }

    /// Checks a POST and makes its resource: its ID and the stream's key.
    fn open_resource(
        &mut self,
        role: MediaRole,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        now: Now,
    ) -> Result<(String, StreamKey), Refusal> {
        if !self.media_enabled {
            return Err(Refusal::new(K::Unavailable, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media"));
        }
        let privilege = if role == MediaRole::Publish { Privilege::Publish } else { Privilege::Play };
        let claims = self.apps.bearer_claims(app_id, room_id, stream_id, token, privilege, now.unix_secs())?;
        let stream = StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() };
        let resource = random_hex(16);
        match role {
            MediaRole::Publish => {
                let sid = self.whip_publisher(app_id, room_id, stream_id, claims, now)?;
                let info = Published { extra_info: String::new(), video: TrackState::On, audio: TrackState::On };
                self.announce_stream(&sid, stream_id.to_string(), info);
                let r = Resource { role, stream: stream.clone(), session: Some(sid), since: now.at };
                self.resources.insert(resource.clone(), r);
            }
            MediaRole::Play => {
                let publisher = self.store.stream(app_id, stream_id);
                if publisher.and_then(|sid| self.sessions.get(sid)).is_none_or(|s| s.room_id != room_id) {
                    return Err(Refusal::new(
                        K::NotFound,
                        ErrorCode::STREAM_NOT_FOUND,
                        "stream not published in this room",
                    ));
                }
                self.take_offer_budget(app_id, now)?;
                let r = Resource { role, stream: stream.clone(), session: None, since: now.at };
                self.resources.insert(resource.clone(), r);
            }
        }
        Ok((resource, stream))
    }

    /// The session a WHIP stream is published in: the user's own (a signalling one, or the
    /// session of its earlier WHIP streams), or a new one admitted for it.
    fn whip_publisher(
        &mut self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        claims: crate::auth::Claims,
        now: Now,
    ) -> Result<String, Refusal> {
        if !claims.has(Privilege::Login) {
            return Err(Refusal::new(
                K::Forbidden,
                ErrorCode::NO_LOGIN_PRIVILEGE,
                "WHIP joins the room: the token needs login",
            ));
        }
        if claims.user_id == "*" {
            let why = "WHIP publishes as the token's user; * is not one";
            return Err(Refusal::new(K::Forbidden, ErrorCode::TOKEN_USER_MISMATCH, why));
        }
        ids::check_user_id(&claims.user_id)
            .map_err(|c| Refusal::new(K::Invalid, c, "the token's user ID is not valid"))?;
        if self.store.stream(app_id, stream_id).is_some() {
            return Err(Refusal::new(K::Conflict, ErrorCode::STREAM_ID_IN_USE, "stream ID already published"));
        }
        let user = UserInfo::new(claims.user_id.clone(), claims.user_id.clone());
        match self.store.user(app_id, &user.user_id).map(str::to_string) {
            Some(sid) => {
                let Some(s) = self.sessions.get(&sid) else {
                    self.inconsistent("whip: the user's session vanished");
                    return Err(Refusal::internal());
                };
                if s.room_id != room_id {
                    return Err(Refusal::new(
                        K::Conflict,
                        ErrorCode::TOKEN_ROOM_MISMATCH,
                        "the user is in another room",
                    ));
                }
                if s.published.len() >= self.limits.max_streams_per_user {
                    return Err(Refusal::new(
                        K::Forbidden,
                        ErrorCode::TOO_MANY_STREAMS,
                        "too many streams for one user",
                    ));
                }
                self.take_offer_budget(app_id, now)?;
                tracing::info!(callbox_event = "whip", app_id, room_id, user_id = %user.user_id, stream_id, "WHIP stream joins the user's session");
                Ok(sid)
            }
            None => {
                if self.rooms.occupants(app_id, room_id) >= self.limits.max_users_per_room {
                    return Err(Refusal::new(K::Forbidden, ErrorCode::ROOM_FULL, "the room is full"));
                }
                self.take_offer_budget(app_id, now)?;
                let user_id = user.user_id.clone();
                let admission =
                    Admission { app_id, room_id: room_id.to_string(), user, claims, conn: None, notify: false };
                let sid = self.admit(admission, now)?;
                tracing::info!(callbox_event = "whip", app_id, room_id, %user_id, "WHIP publisher joined");
                Ok(sid)
            }
        }
    }

    /// The budget is taken after everything else checked out, so garbage cannot spend it.
    fn take_offer_budget(&mut self, app_id: u32, now: Now) -> Result<(), Refusal> {
        if self.resources.take_offer(app_id, now.at) {
            Ok(())
        } else {
            let why = "too many WHIP/WHEP offers for this app; retry later";
            Err(Refusal::new(K::RateLimited, ErrorCode::RATE_LIMITED, why))
        }
    }

    /// The relay answered a WHIP/WHEP offer: the POST is answered, and a failed offer's
    /// resource ends.
    pub(super) fn http_answer(&mut self, id: HttpId, resource: &str, answer: Result<String, OfferFailure>) {
        let Some(r) = self.resources.get(resource).cloned() else {
            // Ended meanwhile (its stream went away): the POST is told so.
            let why = "the stream ended while its offer was answered";
            return self
                .out
                .push_back(Output::Http(id, Err(Refusal::new(K::NotFound, ErrorCode::STREAM_NOT_FOUND, why))));
        };
        let answer = match answer {
            Ok(sdp) => {
                let path = if r.role == MediaRole::Publish { "whip" } else { "whep" };
                let StreamKey { app_id, room_id, stream_id } = &r.stream;
                Ok(HttpAnswer::Created {
                    location: format!("/{path}/v1/{app_id}/{room_id}/{stream_id}/{resource}"),
                    sdp,
                })
            }
            Err(f) => {
                self.end_resource(r.role, resource);
                Err(match f {
                    OfferFailure::Rejected(e) => {
                        Refusal::new(K::Invalid, ErrorCode::MEDIA_OFFER_REJECTED, format!("offer rejected: {e}"))
                    }
                    OfferFailure::Unavailable(e) => Refusal::new(K::Unavailable, ErrorCode::MEDIA_UNAVAILABLE, e),
                })
            }
        };
        if let Err(r) = &answer {
            self.metrics.error(r.code);
        }
        self.out.push_back(Output::Http(id, answer));
    }

    /// Ends a resource (DELETE, its media gone, its offer failed): a WHIP stream leaves the
    /// room, and its user too when it was admitted for WHIP and this was its last stream.
    /// False if there is no such one.
    pub(super) fn end_resource(&mut self, role: MediaRole, id: &str) -> bool {
        let Some(r) = self.resources.remove(role, id) else {
            return false;
        };
        tracing::info!(callbox_event = "whip", resource = %short(id), stream_id = %r.stream.stream_id, ?role, "WHIP/WHEP resource ended");
        if let Some(sid) = &r.session {
            let pinned = self.sessions.get(sid).is_some_and(|s| s.pinned);
            if pinned && !self.resources.publishes_for(sid, id) {
                self.remove_session(sid, ErrorCode::USER_LOGGED_OUT);
            } else {
                self.unpublish(sid, &r.stream.stream_id, ErrorCode::OK);
            }
        }
        self.media_out(MediaOut::EndSession(media_session(role, id)));
        true
    }
}

impl Registry {
    /// `GET .../rooms/{room}/streams/{stream}/snapshot.jpg`: the stream's key, when the
    /// bearer may see it (an admin token for the room, or a token with `play` for the stream)
    /// and the stream is published in the room.
    pub fn snapshot_access(
        &self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        now: Now,
    ) -> Result<StreamKey, Refusal> {
        if !self.media_enabled {
            return Err(Refusal::new(K::Unavailable, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media"));
        }
        if self.admin_claims(app_id, token, Some(room_id), now).is_err() {
            self.apps.bearer_claims(app_id, room_id, stream_id, token, Privilege::Play, now.unix_secs())?;
        }
        let publisher = self.store.stream(app_id, stream_id);
        if publisher.and_then(|sid| self.sessions.get(sid)).is_none_or(|s| s.room_id != room_id) {
            return Err(Refusal::new(K::NotFound, ErrorCode::STREAM_NOT_FOUND, "stream not published in this room"));
        }
        Ok(StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() })
    }
}
