//! Registry unit tests: several clients driven in memory with virtual time.

use std::collections::HashMap;

use super::*;
use crate::proto::MediaRole;
use crate::rtc::sfu::StreamKey;
use crate::server::config::{AppConfig, RegistryConfig};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

struct World {
    reg: Registry,
    now: Now,
    outbox: HashMap<ConnId, Vec<ServerMsg>>,
    closed: Vec<ConnId>,
    media: Vec<MediaOut>,
    saved: Vec<String>,
    http: Vec<(HttpId, Result<HttpAnswer, Refusal>)>,
    hooks: Vec<crate::server::webhooks::Hook>,
}

impl World {
    fn new(grace_secs: u64) -> Self {
        let mut cfg: RegistryConfig = toml::from_str("").unwrap();
        cfg.apps = vec![
            AppConfig { webhook_url: Some("https://hooks.example/".into()), ..AppConfig::new(1, SECRET) },
            AppConfig::new(2, SECRET),
        ];
        cfg.session.grace_secs = grace_secs;
        let now = Now { at: Instant::now(), unix_ms: 1_000_000_000 };
        World {
            reg: Registry::new(&cfg, now.at),
            now,
            outbox: HashMap::new(),
            closed: vec![],
            media: vec![],
            saved: vec![],
            http: vec![],
            hooks: vec![],
        }
    }

    fn token(&self, app_id: u32, user: &str, privileges: &[&str], exp_in: u64) -> String {
        let claims = Claims {
            app_id,
            user_id: user.into(),
            room_id: None,
            privileges: privileges.iter().map(|s| s.to_string()).collect(),
            streams: None,
            nbf: None,
            dk: None,
            iat: self.now.unix_secs(),
            exp: self.now.unix_secs() + exp_in,
        };
        auth::mint(&auth::parse_secret(SECRET).unwrap(), &claims).unwrap()
    }

    fn pump(&mut self) {
        while let Some(o) = self.reg.poll_output() {
            match o {
                Output::Send(c, m) => self.outbox.entry(c).or_default().push(m),
                Output::Close(c) => self.closed.push(c),
                Output::Media(m) => self.media.push(m),
                Output::SaveDeviceKeys(text) => self.saved.push(text),
                Output::Http(id, answer) => self.http.push((id, answer)),
                Output::Hook(h) => self.hooks.push(h),
            }
        }
    }

    fn msg(&mut self, conn: ConnId, m: ClientMsg) {
        self.reg.handle_message(conn, m, self.now);
        self.pump();
    }

    fn take(&mut self, conn: ConnId) -> Vec<ServerMsg> {
        self.outbox.remove(&conn).unwrap_or_default()
    }

    fn login_app(&mut self, conn: ConnId, app_id: u32, user: &str, room: &str, notify: bool) -> (String, String) {
        self.reg.handle_connect(conn, self.now);
        let token = self.token(app_id, user, &["login", "publish", "play"], 3600);
        let m = ClientMsg::Login {
            req: 1,
            version: 1,
            app_id,
            token,
            room_id: room.into(),
            user: UserInfo::new(user.into(), user.to_uppercase()),
            user_status_notify: notify,
        };
        self.msg(conn, m);
        match self.take(conn).into_iter().next() {
            Some(ServerMsg::LoginOk { session_id, resume_token, .. }) => (session_id, resume_token),
            other => panic!("login failed: {other:?}"),
        }
    }

    /// A login with a garbage token on a new connection from `peer`; the refusal's code.
    fn garbage_login(&mut self, conn: ConnId, peer: Option<std::net::IpAddr>) -> ErrorCode {
        self.reg.handle_connect_from(conn, peer, self.now);
        let m = ClientMsg::Login {
            req: 1,
            version: 1,
            app_id: 1,
            token: "garbage".into(),
            room_id: "lobby".into(),
            user: UserInfo::new(format!("x{conn}"), "x".into()),
            user_status_notify: false,
        };
        self.msg(conn, m);
        match self.take(conn).first() {
            Some(ServerMsg::Error { code, .. }) => *code,
            other => panic!("{other:?}"),
        }
    }

    /// A WHIP (publish) or WHEP (play) POST, answered by the relay with `answer`: the
    /// resource's location, or the refusal.
    fn http_offer(
        &mut self,
        role: MediaRole,
        room: &str,
        stream: &str,
        token: &str,
        answer: Result<&str, OfferFailure>,
    ) -> Result<String, Refusal> {
        let req = HttpMedia::Offer {
            role,
            app_id: 1,
            room_id: room.into(),
            stream_id: stream.into(),
            token: token.into(),
            sdp: "v=0".into(),
        };
        self.reg.handle_http(7, req, self.now);
        self.pump();
        let offer = self.media.iter().position(|m| matches!(m, MediaOut::Offer { reply: Reply::Http { .. }, .. }));
        if let Some(i) = offer {
            let MediaOut::Offer { reply, offer } = self.media.remove(i) else { unreachable!() };
            assert_eq!(offer.role, role);
            self.reg.handle_media_answer(reply, answer.map(str::to_string));
            self.pump();
        }
        match self.http.pop() {
            Some((7, Ok(HttpAnswer::Created { location, sdp }))) => {
                assert_eq!(sdp, "answer");
                Ok(location)
            }
            Some((7, Err(r))) => Err(r),
            other => panic!("{other:?}"),
        }
    }

    /// A WHIP/WHEP DELETE of the resource at `location`.
    fn http_end(&mut self, role: MediaRole, location: &str) -> Result<HttpAnswer, Refusal> {
        let resource = location.rsplit('/').next().unwrap().to_string();
        self.reg.handle_http(8, HttpMedia::End { role, resource }, self.now);
        self.pump();
        match self.http.pop() {
            Some((8, answer)) => answer,
            other => panic!("{other:?}"),
        }
    }

    fn login(&mut self, conn: ConnId, user: &str, room: &str, notify: bool) -> (String, String) {
        self.login_app(conn, 1, user, room, notify)
    }

    fn advance(&mut self, d: Duration) {
        self.now.at += d;
        self.now.unix_ms += d.as_millis() as u64;
        self.reg.handle_tick(self.now);
        self.pump();
    }
}

fn user_updates(msgs: &[ServerMsg]) -> Vec<(UpdateType, String, ErrorCode)> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::UserUpdate { update, users, reason, .. } => Some((*update, users[0].user_id.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn stream_updates(msgs: &[ServerMsg]) -> Vec<(UpdateType, String, ErrorCode)> {
    msgs.iter()
        .filter_map(|m| match m {
            ServerMsg::StreamUpdate { update, streams, reason, .. } => {
                Some((*update, streams[0].stream_id.clone(), *reason))
            }
            _ => None,
        })
        .collect()
}

/// A login of `user` to room `r` of app 1 with `token`.
fn login_as(user: &str, token: String) -> ClientMsg {
    ClientMsg::Login {
        req: 1,
        version: 1,
        app_id: 1,
        token,
        room_id: "r".into(),
        user: UserInfo::new(user.into(), String::new()),
        user_status_notify: false,
    }
}

fn error_code(msgs: &[ServerMsg]) -> Option<ErrorCode> {
    msgs.iter().find_map(|m| match m {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    })
}

#[test]
fn user_updates_only_with_notify_and_never_about_self() {
    let mut w = World::new(90);
    w.login(1, "a", "r", true);
    w.login(2, "b", "r", false);
    assert_eq!(user_updates(&w.take(1)), vec![(UpdateType::Add, "b".into(), ErrorCode::OK)]);
    w.login(3, "c", "r", true);
    assert_eq!(user_updates(&w.take(1)), vec![(UpdateType::Add, "c".into(), ErrorCode::OK)]);
    assert!(w.take(2).is_empty(), "b did not ask for user updates");
    assert!(user_updates(&w.take(3)).is_empty());
    w.msg(2, ClientMsg::Logout { req: 9 });
    assert_eq!(user_updates(&w.take(1)), vec![(UpdateType::Delete, "b".into(), ErrorCode::USER_LOGGED_OUT)]);
    assert!(w.closed.contains(&2));
}

#[test]
fn streams_unique_per_app_and_isolated_between_apps() {
    let mut w = World::new(90);
    w.login(1, "a", "r", false);
    w.login(2, "b", "r", false);
    w.login_app(3, 2, "a", "r", false); // same IDs, other app
    w.msg(1, ClientMsg::publish(2, "s", "cam"));
    assert_eq!(w.take(1), vec![ServerMsg::Ok { req: 2 }]);
    assert_eq!(stream_updates(&w.take(2)), vec![(UpdateType::Add, "s".into(), ErrorCode::OK)]);
    assert!(w.take(3).is_empty(), "app 2 must not hear app 1");
    w.msg(2, ClientMsg::publish(3, "s", String::new()));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::STREAM_ID_IN_USE));
    w.msg(3, ClientMsg::publish(3, "s", String::new()));
    assert_eq!(w.take(3), vec![ServerMsg::Ok { req: 3 }], "stream IDs are per app");
}

/// Track states: announced with the stream, switched with `set_stream_state` (the room is
/// told once per change), kept in snapshots, updated by a publish again (a resume); a track
/// published absent stays absent; a stream needs one track.
#[test]
fn stream_track_states_are_announced_switched_and_kept() {
    use crate::proto::TrackState::{Absent, Off, On};
    let mut w = World::new(90);
    w.login(1, "lift", "r", false);
    w.login(2, "desk", "r", false);
    let publish = |req, video, audio| ClientMsg::Publish {
        req,
        stream_id: "lift-main".into(),
        extra_info: String::new(),
        video,
        audio,
    };
    w.msg(1, publish(2, Absent, Absent));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::STREAM_STATE_INVALID));
    w.msg(1, publish(3, Absent, On));
    assert_eq!(w.take(1), vec![ServerMsg::Ok { req: 3 }]);
    let added = w.take(2);
    assert!(
        matches!(&added[..], [ServerMsg::StreamUpdate { streams, .. }] if (streams[0].video, streams[0].audio) == (Absent, On)),
        "{added:?}"
    );
    let set = |req, video, audio| ClientMsg::SetStreamState { req, stream_id: "lift-main".into(), video, audio };
    w.msg(1, set(4, Absent, Off));
    assert_eq!(w.take(1), vec![ServerMsg::Ok { req: 4 }]);
    let told =
        ServerMsg::StreamStateUpdate { room_id: "r".into(), stream_id: "lift-main".into(), video: Absent, audio: Off };
    assert_eq!(w.take(2), vec![told.clone()]);
    w.msg(1, set(5, Absent, Off));
    assert!(w.take(2).is_empty(), "no change, nothing told");
    w.msg(1, set(6, On, Off));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::STREAM_STATE_INVALID), "a camera cannot appear");
    w.msg(2, ClientMsg::SetStreamState { req: 7, stream_id: "lift-main".into(), video: On, audio: On });
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::MEDIA_NOT_PUBLISHING), "only its publisher switches it");
    // A newcomer's snapshot has the state; a publish again (after a resume) updates it.
    w.reg.handle_connect(3, w.now);
    let token = w.token(1, "watch", &["login", "play"], 3600);
    let user = UserInfo::new("watch".into(), "watch".into());
    w.msg(
        3,
        ClientMsg::Login { req: 1, version: 1, app_id: 1, token, room_id: "r".into(), user, user_status_notify: false },
    );
    let snap = w.take(3);
    let Some(ServerMsg::LoginOk { room, .. }) = snap.first() else { panic!("{snap:?}") };
    assert_eq!((room.streams[0].video, room.streams[0].audio), (Absent, Off));
    w.msg(1, publish(8, Absent, On));
    assert_eq!(w.take(1), vec![ServerMsg::Ok { req: 8 }]);
    let on =
        ServerMsg::StreamStateUpdate { room_id: "r".into(), stream_id: "lift-main".into(), video: Absent, audio: On };
    assert_eq!(w.take(2), vec![on]);
}

#[test]
fn play_waits_for_stream_and_is_stopped_with_it() {
    let mut w = World::new(90);
    w.login(1, "a", "r", false);
    w.login(2, "b", "r", false);
    w.msg(2, ClientMsg::Play { req: 2, stream_id: "s".into() });
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::STREAM_NOT_FOUND));
    w.msg(1, ClientMsg::publish(2, "s", String::new()));
    let got = w.take(2);
    assert!(got.contains(&ServerMsg::PlayAvailable { stream_id: "s".into() }), "{got:?}");
    w.msg(1, ClientMsg::Unpublish { req: 3, stream_id: "s".into() });
    let got = w.take(2);
    assert_eq!(stream_updates(&got), vec![(UpdateType::Delete, "s".into(), ErrorCode::OK)]);
    assert!(got.contains(&ServerMsg::PlayStopped { stream_id: "s".into(), code: ErrorCode::STREAM_DELETED }));
}

#[test]
fn duplicate_login_kicks_older_and_resume_is_refused() {
    let mut w = World::new(90);
    let (sid, tok) = w.login(1, "a", "r", false);
    w.login(2, "watch", "r", true);
    w.take(2);
    w.login(3, "a", "r", false);
    let got = w.take(1);
    assert!(matches!(got[0], ServerMsg::Kicked { code: ErrorCode::KICKED_DUPLICATE_LOGIN, .. }), "{got:?}");
    assert!(w.closed.contains(&1));
    w.reg.handle_disconnect(1, w.now);
    // The kicked client must be told it was kicked, not "session expired" (no kick-back).
    w.reg.handle_connect(4, w.now);
    w.msg(4, ClientMsg::Resume { req: 1, version: 1, session_id: sid, resume_token: tok });
    assert!(matches!(w.take(4)[0], ServerMsg::Kicked { .. }));
    let ups = user_updates(&w.take(2));
    assert_eq!(
        ups,
        vec![
            (UpdateType::Delete, "a".into(), ErrorCode::KICKED_DUPLICATE_LOGIN),
            (UpdateType::Add, "a".into(), ErrorCode::OK)
        ]
    );
}

#[test]
fn resume_within_grace_is_invisible_and_grace_expiry_deletes() {
    let mut w = World::new(10);
    let (sid, tok) = w.login(1, "a", "r", false);
    w.msg(1, ClientMsg::publish(2, "s", String::new()));
    w.login(2, "b", "r", true);
    w.take(1);
    w.take(2);
    w.reg.handle_disconnect(1, w.now);
    w.advance(Duration::from_secs(5));
    w.msg(2, ClientMsg::Broadcast { req: 5, message: "while you were away".into() });
    w.reg.handle_connect(3, w.now);
    w.msg(3, ClientMsg::Resume { req: 1, version: 1, session_id: sid.clone(), resume_token: tok.clone() });
    let got = w.take(3);
    assert!(matches!(got[0], ServerMsg::Resumed { .. }), "{got:?}");
    assert!(matches!(got[1], ServerMsg::BroadcastMessage { .. }), "backlog replayed: {got:?}");
    let seen_by_b = w.take(2);
    assert!(user_updates(&seen_by_b).is_empty() && stream_updates(&seen_by_b).is_empty(), "{seen_by_b:?}");
    // Now go silent for longer than the grace period.
    w.reg.handle_disconnect(3, w.now);
    for _ in 0..11 {
        w.msg(2, ClientMsg::ping(1, QualityLevel::Good));
        w.advance(Duration::from_secs(1));
    }
    let seen_by_b = w.take(2);
    assert_eq!(stream_updates(&seen_by_b), vec![(UpdateType::Delete, "s".into(), ErrorCode::HEARTBEAT_TIMEOUT)]);
    assert_eq!(user_updates(&seen_by_b), vec![(UpdateType::Delete, "a".into(), ErrorCode::HEARTBEAT_TIMEOUT)]);
    w.reg.handle_connect(4, w.now);
    w.msg(4, ClientMsg::Resume { req: 1, version: 1, session_id: sid, resume_token: tok });
    assert_eq!(error_code(&w.take(4)), Some(ErrorCode::SESSION_EXPIRED));
}

#[test]
fn bad_input_answers_codes_without_touching_others() {
    let mut w = World::new(90);
    w.login(1, "a", "r", true);
    w.reg.handle_connect(2, w.now);
    let bad = |room: &str, user: &str| ClientMsg::Login {
        req: 1,
        version: 1,
        app_id: 1,
        token: "x".into(),
        room_id: room.into(),
        user: UserInfo::new(user.into(), String::new()),
        user_status_notify: false,
    };
    w.msg(2, bad("r", ""));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::USER_ID_EMPTY));
    w.msg(2, bad("r r", "u"));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::ROOM_ID_INVALID));
    w.msg(2, bad("r", "u"));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::TOKEN_INVALID));
    w.msg(2, ClientMsg::publish(3, "s", String::new()));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::NOT_LOGGED_IN));
    let mut limited = 0;
    for i in 0..200 {
        w.msg(2, ClientMsg::ping(i, QualityLevel::Unknown));
        limited += usize::from(error_code(&w.take(2)) == Some(ErrorCode::RATE_LIMITED));
    }
    assert!(limited > 50, "rate limit applied ({limited})");
    assert!(w.take(1).is_empty(), "a saw nothing");
    w.msg(1, ClientMsg::Broadcast { req: 4, message: "x".repeat(1025) });
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::BROADCAST_TOO_LARGE));
}

#[test]
fn token_expiry_warned_and_renewed() {
    let mut w = World::new(90);
    w.reg.handle_connect(1, w.now);
    let token = w.token(1, "a", &["login"], 70);
    w.msg(1, login_as("a", token));
    w.take(1);
    w.advance(Duration::from_secs(35));
    assert!(!w.take(1).iter().any(|m| matches!(m, ServerMsg::TokenWillExpire { .. })));
    w.advance(Duration::from_secs(6));
    assert!(w.take(1).iter().any(|m| matches!(m, ServerMsg::TokenWillExpire { remaining_secs: 29, .. })));
    let other_user = w.token(1, "b", &["login"], 3600);
    w.msg(1, ClientMsg::RenewToken { req: 2, token: other_user });
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::RENEW_TOKEN_MISMATCH));
    let fresh = w.token(1, "a", &["login"], 3600);
    w.msg(1, ClientMsg::RenewToken { req: 3, token: fresh });
    assert_eq!(w.take(1), vec![ServerMsg::Ok { req: 3 }]);
}

#[test]
fn an_expired_token_binds_the_session_and_a_renewal_cannot_widen_it() {
    let mut w = World::new(90);
    w.reg.handle_connect(1, w.now);
    let token = w.token(1, "a", &["login", "publish"], 40);
    let login = |token: String| login_as("a", token);
    w.msg(1, login(token));
    let (sid, resume) = match w.take(1).remove(0) {
        ServerMsg::LoginOk { session_id, resume_token, .. } => (session_id, resume_token),
        m => panic!("{m:?}"),
    };
    // More privileges than the session had: refused, the old token stays.
    let wider = w.token(1, "a", &["login", "publish", "admin"], 3600);
    w.msg(1, ClientMsg::RenewToken { req: 2, token: wider });
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::RENEW_TOKEN_ESCALATES));
    w.advance(Duration::from_secs(41));
    assert!(
        w.take(1).iter().any(|m| matches!(m, ServerMsg::Error { req: None, code: ErrorCode::TOKEN_EXPIRED, .. })),
        "told once the token expired"
    );
    w.msg(1, ClientMsg::publish(3, "s", String::new()));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::TOKEN_EXPIRED));
    w.msg(1, offer(4, "s", MediaRole::Publish));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::TOKEN_EXPIRED));
    // Dropped and back: the resume is refused too.
    w.reg.handle_disconnect(1, w.now);
    w.reg.handle_connect(2, w.now);
    w.msg(2, ClientMsg::Resume { req: 1, version: 1, session_id: sid, resume_token: resume });
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::TOKEN_EXPIRED));
    // A new login with a fresh token replaces the expired session.
    w.reg.handle_connect(3, w.now);
    let fresh = w.token(1, "a", &["login", "publish"], 3600);
    w.msg(3, login(fresh));
    assert!(matches!(w.take(3)[0], ServerMsg::LoginOk { .. }));
    // A token from the far future or too long-lived is refused at login.
    w.reg.handle_connect(4, w.now);
    let mut c = auth::peek(&w.token(1, "b", &["login"], 60)).unwrap();
    c.user_id = "a".into();
    c.exp = u64::MAX;
    let forever = auth::mint(&auth::parse_secret(SECRET).unwrap(), &c).unwrap();
    w.msg(4, login(forever));
    assert_eq!(error_code(&w.take(4)), Some(ErrorCode::TOKEN_LIFETIME_TOO_LONG));
}

#[test]
fn device_keys_mint_scoped_tokens_and_revocation_ends_their_sessions() {
    let mut w = World::new(90);
    let admin = auth::peek(&w.token(1, "*", &["admin"], 600)).unwrap();
    let req = |user: &str| NewDeviceKey { user_id: user.into(), room_id: Some("r".into()), privileges: None };
    let (rec, key) = w.reg.create_device_key(1, &admin, req("door"), w.now).unwrap();
    w.pump();
    assert_eq!(w.saved.len(), 1, "stored");
    assert!(!w.saved[0].contains(key.rsplit('_').next().unwrap()));
    assert_eq!(w.reg.create_device_key(1, &admin, req("*"), w.now).unwrap_err().kind, RefusalKind::Invalid);
    let mut room_admin = admin.clone();
    room_admin.room_id = Some("other".into());
    assert_eq!(w.reg.create_device_key(1, &room_admin, req("x"), w.now).unwrap_err().kind, RefusalKind::Forbidden);
    assert!(w.reg.list_device_keys(1, &room_admin).is_empty(), "a room admin sees its room's keys only");
    assert_eq!(w.reg.list_device_keys(1, &admin).len(), 1);

    let issued = w.reg.device_token(&key, None, w.now).unwrap();
    let claims = auth::peek(&issued.token).unwrap();
    assert_eq!((claims.user_id.as_str(), claims.room_id.as_deref()), ("door", Some("r")));
    assert_eq!(claims.dk.as_deref(), Some(rec.id.as_str()));
    assert!(!claims.has(auth::Privilege::Admin) && claims.has(auth::Privilege::Login));
    assert_eq!(w.reg.device_token("cbk_nope_00", None, w.now).unwrap_err().code, ErrorCode::DEVICE_KEY_INVALID);

    // Its token logs in only as its user and room.
    w.reg.handle_connect(1, w.now);
    let login = |user: &str, room: &str| ClientMsg::Login {
        req: 1,
        version: 1,
        app_id: 1,
        token: issued.token.clone(),
        room_id: room.into(),
        user: UserInfo::new(user.into(), String::new()),
        user_status_notify: false,
    };
    w.msg(1, login("flat", "r"));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::TOKEN_USER_MISMATCH));
    w.reg.handle_connect(2, w.now);
    w.msg(2, login("door", "elsewhere"));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::TOKEN_ROOM_MISMATCH));
    w.reg.handle_connect(3, w.now);
    w.msg(3, login("door", "r"));
    assert!(matches!(w.take(3)[0], ServerMsg::LoginOk { .. }));
    w.login(4, "flat", "r", true);

    assert_eq!(w.reg.revoke_device_key(1, &room_admin, &rec.id, w.now), None, "out of scope");
    assert_eq!(w.reg.revoke_device_key(1, &admin, &rec.id, w.now), Some(1));
    w.pump();
    assert!(matches!(w.take(3)[0], ServerMsg::Kicked { code: ErrorCode::DEVICE_KEY_REVOKED, .. }));
    assert_eq!(user_updates(&w.take(4)), vec![(UpdateType::Delete, "door".into(), ErrorCode::DEVICE_KEY_REVOKED)]);
    assert_eq!(w.reg.device_token(&key, None, w.now).unwrap_err().code, ErrorCode::DEVICE_KEY_INVALID);
    // A token it issued before is refused from now on.
    w.reg.handle_connect(5, w.now);
    w.msg(5, login("door", "r"));
    assert_eq!(error_code(&w.take(5)), Some(ErrorCode::DEVICE_KEY_REVOKED));
}

#[test]
fn admin_tokens_answer_401_or_403_and_honour_their_room() {
    let w = World::new(90);
    let t = |privs: &[&str], room: Option<&str>| {
        let mut c = auth::peek(&w.token(1, "*", privs, 600)).unwrap();
        c.room_id = room.map(String::from);
        auth::mint(&auth::parse_secret(SECRET).unwrap(), &c).unwrap()
    };
    assert_eq!(w.reg.admin_claims(1, &t(&["login"], None), None, w.now).unwrap_err().kind, RefusalKind::Forbidden);
    assert_eq!(w.reg.admin_claims(1, "garbage", None, w.now).unwrap_err().kind, RefusalKind::Unauthenticated);
    assert_eq!(w.reg.admin_claims(9, &t(&["admin"], None), None, w.now).unwrap_err().kind, RefusalKind::NotFound);
    let room = t(&["admin"], Some("r"));
    assert!(w.reg.admin_claims(1, &room, Some("r"), w.now).is_ok());
    let other = w.reg.admin_claims(1, &room, Some("q"), w.now).unwrap_err();
    assert_eq!((other.kind, other.code), (RefusalKind::Forbidden, ErrorCode::ADMIN_FORBIDDEN));
}

#[test]
fn privileges_enforced_and_admin_kick() {
    let mut w = World::new(90);
    w.reg.handle_connect(1, w.now);
    let token = w.token(1, "viewer", &["login", "play"], 3600);
    w.msg(1, login_as("viewer", token));
    w.take(1);
    w.msg(1, ClientMsg::publish(2, "s", String::new()));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::NO_PUBLISH_PRIVILEGE));
    w.login(2, "b", "r", true);
    assert!(w.reg.kick(1, "r", "viewer", w.now));
    w.pump();
    assert!(matches!(w.take(1)[0], ServerMsg::Kicked { code: ErrorCode::KICKED_BY_ADMIN, .. }));
    assert_eq!(user_updates(&w.take(2)), vec![(UpdateType::Delete, "viewer".into(), ErrorCode::KICKED_BY_ADMIN)]);
    assert!(!w.reg.kick(1, "r", "viewer", w.now));
    assert_eq!(w.reg.room_view(1, "r").unwrap().users.len(), 1);
    w.msg(2, ClientMsg::Logout { req: 3 });
    assert!(w.reg.room_view(1, "r").is_none(), "empty room removed");
}

#[test]
fn network_quality_of_others_every_two_seconds() {
    let mut w = World::new(90);
    w.login(1, "a", "r", false);
    w.login(2, "b", "r", false);
    w.msg(2, ClientMsg::ping(1, QualityLevel::Good));
    w.take(1);
    w.advance(Duration::from_millis(100));
    let q: Vec<_> = w.take(1).into_iter().filter(|m| matches!(m, ServerMsg::NetworkQuality { .. })).collect();
    assert_eq!(
        q,
        vec![ServerMsg::NetworkQuality {
            room_id: "r".into(),
            users: vec![UserQuality {
                user_id: "b".into(),
                quality: QualityLevel::Good,
                upstream: QualityLevel::Unknown,
                downstream: QualityLevel::Unknown
            }]
        }]
    );
}

fn offer(req: u64, stream: &str, role: MediaRole) -> ClientMsg {
    ClientMsg::MediaOffer { req, stream_id: stream.into(), role, sdp: "v=0".into() }
}

#[test]
fn media_offers_need_publish_or_play_first_and_stay_in_the_room() {
    let mut w = World::new(90);
    w.login(1, "a", "r", false);
    w.login(2, "b", "r", false);
    w.login(3, "c", "other-room", false);
    w.msg(1, offer(2, "s", MediaRole::Publish));
    assert_eq!(error_code(&w.take(1)), Some(ErrorCode::MEDIA_NOT_PUBLISHING));
    w.msg(1, ClientMsg::publish(3, "s", String::new()));
    w.take(1);
    w.msg(1, offer(4, "s", MediaRole::Publish));
    let key = StreamKey { app_id: 1, room_id: "r".into(), stream_id: "s".into() };
    assert!(
        matches!(&w.media[..], [MediaOut::Offer { reply: Reply::Signalling { conn: 1, req: 4, .. }, offer }] if offer.stream == key && offer.role == MediaRole::Publish)
    );
    w.media.clear();
    // Playing needs `play` first, and only streams of one's own room are reachable.
    w.msg(2, offer(2, "s", MediaRole::Play));
    assert_eq!(error_code(&w.take(2)), Some(ErrorCode::MEDIA_NOT_PLAYING));
    w.msg(3, ClientMsg::Play { req: 2, stream_id: "s".into() });
    w.take(3);
    w.msg(3, offer(3, "s", MediaRole::Play));
    assert_eq!(error_code(&w.take(3)), Some(ErrorCode::STREAM_NOT_FOUND), "another room's stream");
    assert!(w.media.is_empty());
    w.msg(2, ClientMsg::Play { req: 3, stream_id: "s".into() });
    w.msg(2, offer(4, "s", MediaRole::Play));
    assert!(
        matches!(&w.media[..], [MediaOut::Offer { reply: Reply::Signalling { conn: 2, .. }, offer }] if offer.stream == key && offer.role == MediaRole::Play)
    );
    w.media.clear();
    // Stop playing, unpublish, leave: the relay is told each time.
    w.msg(2, ClientMsg::StopPlay { req: 5, stream_id: "s".into() });
    assert!(matches!(&w.media[..], [MediaOut::EndPlay(_, k)] if *k == key));
    w.msg(1, ClientMsg::Unpublish { req: 5, stream_id: "s".into() });
    assert!(w.media.contains(&MediaOut::EndStream(key.clone())));
    w.msg(1, ClientMsg::Logout { req: 6 });
    assert!(matches!(w.media.last(), Some(MediaOut::EndSession(_))));
}

#[test]
fn garbage_logins_cannot_lock_out_good_ones() {
    let mut w = World::new(90);
    // An attacker with only the app ID: 400 logins with garbage tokens in the same second,
    // each on a connection of its own (the per-connection message limit does not help).
    let limited = (0..400u64).filter(|i| w.garbage_login(10_000 + i, None) == ErrorCode::LOGIN_RATE_LIMITED).count();
    // The refused-login budget is a burst of 100 and time stands still: the rest are limited.
    assert_eq!(limited, 300, "the attacker is rate-limited ({limited} of 400)");
    // Meanwhile 20 devices with good tokens all get in.
    for i in 0..20u64 {
        w.login(i + 1, &format!("door{i}"), "lobby", false);
    }
}

#[test]
fn refused_logins_are_limited_per_source_address() {
    let mut w = World::new(90);
    let attacker: std::net::IpAddr = [10, 0, 0, 66].into();
    let bystander: std::net::IpAddr = [10, 0, 0, 7].into();
    let garbage = |w: &mut World, conn: ConnId, ip| w.garbage_login(conn, Some(ip));
    let codes: Vec<ErrorCode> = (0..40).map(|i| garbage(&mut w, 1000 + i, attacker)).collect();
    assert_eq!(codes[0], ErrorCode::TOKEN_INVALID);
    assert_eq!(codes.iter().filter(|c| **c == ErrorCode::LOGIN_RATE_LIMITED).count(), 20, "{codes:?}");
    // Another address is not punished for the attacker's failures.
    assert_eq!(garbage(&mut w, 2000, bystander), ErrorCode::TOKEN_INVALID);
    // Good tokens still get in.
    w.login(3000, "door", "lobby", false);
}

/// Random operation sequences (logins, resumes, logouts, drops, publish, play, WHIP, admin
/// kicks, time passing beyond the grace): no step panics the registry, and its cross-map
/// invariants hold after every one. Seeded, so a failure names a sequence that repeats.
#[test]
fn random_operation_sequences_keep_the_registry_consistent() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    const USERS: [&str; 4] = ["u1", "u2", "u3", "u4"];
    const ROOMS: [&str; 2] = ["r1", "r2"];
    const STREAMS: [&str; 3] = ["s1", "s2", "s3"];
    let mut reached = (0u64, 0u64, 0u64); // resumes, grace expiries, WHIP resources
    let (mut answered, mut ended, mut total_rings) = (0u64, 0u64, 0u64);
    for seed in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut w = World::new(5);
        w.reg.media_enabled = true;
        // What a client would remember per connection: its session's resume credentials.
        let mut resumable: Vec<(String, String)> = Vec::new();
        let mut whip: Vec<String> = Vec::new();
        let mut whep: Vec<String> = Vec::new();
        let mut log = Vec::new();
        // Six clients; each slot holds its current connection. A connection ID is never
        // reused (as in the hub): a dropped client comes back on a new one.
        let mut slots: Vec<(ConnId, bool)> = (1..=6).map(|c| (c, false)).collect();
        let mut next_conn: ConnId = 7;
        let mut calls_placed = 0u64;
        let mut rings: Vec<(ConnId, u64)> = Vec::new();
        for step in 0..400 {
            let slot = rng.random_range(0..slots.len());
            if !slots[slot].1 {
                w.reg.handle_connect(slots[slot].0, w.now);
                slots[slot].1 = true;
            }
            let conn = slots[slot].0;
            let req = step as u64 + 10;
            let user = USERS[rng.random_range(0..USERS.len())];
            let room = ROOMS[rng.random_range(0..ROOMS.len())];
            let stream = STREAMS[rng.random_range(0..STREAMS.len())].to_string();
            let op = rng.random_range(0..22);
            log.push(format!("{op}:c{conn}:{user}:{room}:{stream}"));
            match op {
                0 | 1 => {
                    let app = rng.random_range(1..=2);
                    let token = w.token(app, user, &["login", "publish", "play"], 3600);
                    let m = ClientMsg::Login {
                        req,
                        version: 1,
                        app_id: app,
                        token,
                        room_id: room.into(),
                        user: {
                            let mut u = UserInfo::new(user.into(), user.into());
                            if rng.random_bool(0.7) {
                                u.caps = vec![crate::proto::Capability::Answer, crate::proto::Capability::Door];
                            }
                            u
                        },
                        user_status_notify: rng.random_bool(0.5),
                    };
                    w.msg(conn, m);
                    for m in w.take(conn) {
                        if let ServerMsg::LoginOk { session_id, resume_token, .. } = m {
                            resumable.push((session_id, resume_token));
                        }
                    }
                }
                2 if !resumable.is_empty() => {
                    let (session_id, resume_token) = resumable[rng.random_range(0..resumable.len())].clone();
                    w.msg(conn, ClientMsg::Resume { req, version: 1, session_id, resume_token });
                }
                3 => w.msg(conn, ClientMsg::Logout { req }),
                4 => {
                    w.reg.handle_disconnect(conn, w.now);
                    w.pump();
                    slots[slot] = (next_conn, false);
                    next_conn += 1;
                }
                5 => w.msg(conn, ClientMsg::publish(req, stream, "")),
                6 => w.msg(conn, ClientMsg::Unpublish { req, stream_id: stream }),
                7 => w.msg(conn, ClientMsg::Play { req, stream_id: stream }),
                8 => w.msg(conn, ClientMsg::StopPlay { req, stream_id: stream }),
                9 => w.msg(
                    conn,
                    offer(req, &stream, if rng.random_bool(0.5) { MediaRole::Publish } else { MediaRole::Play }),
                ),
                10 => {
                    let token = w.token(1, user, &["login", "publish"], 3600);
                    let answer =
                        if rng.random_bool(0.8) { Ok("answer") } else { Err(OfferFailure::Rejected("bad".into())) };
                    if let Ok(location) = w.http_offer(MediaRole::Publish, room, &stream, &token, answer) {
                        whip.push(location);
                    }
                }
                11 if !whip.is_empty() => {
                    let location = whip.swap_remove(rng.random_range(0..whip.len()));
                    let _ = w.http_end(MediaRole::Publish, &location);
                }
                12 => {
                    w.reg.kick(1, room, user, w.now);
                    w.pump();
                }
                13 => {
                    let token = w.token(1, user, &["play"], 3600);
                    if let Ok(location) = w.http_offer(MediaRole::Play, room, &stream, &token, Ok("answer")) {
                        whep.push(location);
                    }
                }
                14 if !whip.is_empty() || !whep.is_empty() => {
                    // The relay lost a resource's media (the probe said so).
                    let (role, list) = if whep.is_empty() || (!whip.is_empty() && rng.random_bool(0.5)) {
                        (MediaRole::Publish, &mut whip)
                    } else {
                        (MediaRole::Play, &mut whep)
                    };
                    let location = list.swap_remove(rng.random_range(0..list.len()));
                    let resource = location.rsplit('/').next().unwrap();
                    w.reg.handle_media_gone(&media_session(role, resource));
                    w.pump();
                }
                15 if !whep.is_empty() => {
                    let location = whep.swap_remove(rng.random_range(0..whep.len()));
                    let _ = w.http_end(MediaRole::Play, &location);
                }
                16 | 17 => {
                    let callees = if rng.random_bool(0.6) { vec![] } else { vec![user.to_string()] };
                    let order = if rng.random_bool(0.5) {
                        crate::proto::RingOrder::Together
                    } else {
                        crate::proto::RingOrder::InTurn
                    };
                    w.msg(conn, ClientMsg::Call { req, callees, order, ring_secs: Some(30) });
                    calls_placed += 1;
                }
                18 | 20 => {
                    // Mostly a call that rings here (from the messages seen), else any ID.
                    let (conn, call_id) = match rings.pop().filter(|r| slots.iter().any(|s| s.0 == r.0)) {
                        Some(r) if rng.random_bool(0.8) => r,
                        _ => (conn, rng.random_range(1..=calls_placed.max(1))),
                    };
                    let m = match rng.random_range(0..5) {
                        0..=2 => ClientMsg::CallAnswer { req, call_id },
                        3 => ClientMsg::CallDecline { req, call_id },
                        _ => ClientMsg::CallHangup { req, call_id },
                    };
                    w.msg(conn, m);
                }
                19 => {
                    w.msg(conn, ClientMsg::OpenDoor { req, user_id: user.into() });
                    let request_id = rng.random_range(1..=w.reg.metrics.door_requests.max(1));
                    let code = if rng.random_bool(0.5) { ErrorCode::OK } else { ErrorCode::DOOR_RELAY_FAULT };
                    let other = slots[rng.random_range(0..slots.len())].0;
                    w.msg(other, ClientMsg::DoorAnswer { request_id, code, message: String::new() });
                }
                _ => w.advance(Duration::from_millis(rng.random_range(0..8000))),
            }
            for (c, msgs) in &w.outbox {
                for m in msgs {
                    match m {
                        ServerMsg::CallIncoming { call_id, .. } => {
                            total_rings += 1;
                            rings.push((*c, *call_id))
                        }
                        ServerMsg::CallUpdate { state: crate::proto::CallPhase::Answered, .. } => answered += 1,
                        ServerMsg::CallUpdate { state: crate::proto::CallPhase::Ended, .. } => ended += 1,
                        _ => {}
                    }
                }
            }
            // A callee often answers at once (an answered call must be reached to be checked).
            if let Some(&(c, call_id)) = rings.last()
                && rng.random_bool(0.5)
            {
                rings.pop();
                w.outbox.clear();
                w.msg(c, ClientMsg::CallAnswer { req, call_id });
                let told = w.outbox.values().flatten();
                answered += told
                    .filter(|m| matches!(m, ServerMsg::CallUpdate { state: crate::proto::CallPhase::Answered, .. }))
                    .count() as u64;
            }
            w.outbox.clear();
            // The hub drops a connection the registry closed.
            for c in std::mem::take(&mut w.closed) {
                if let Some(i) = slots.iter().position(|s| s.0 == c) {
                    w.reg.handle_disconnect(c, w.now);
                    slots[i] = (next_conn, false);
                    next_conn += 1;
                }
            }
            w.pump();
            if let Err(e) = w.reg.check_invariants() {
                panic!("seed {seed}, step {step}: {e}\nsteps: {}", log.join(" "));
            }
        }
        assert_eq!(w.reg.metrics.inconsistencies, 0, "seed {seed}: a lookup failed; steps: {}", log.join(" "));
        // The sequences reach the states worth checking: logins, resumes, kicks, timeouts.
        let m = &w.reg.metrics;
        assert!(m.logins >= 10 && m.kicks >= 1, "seed {seed}: {m:?}");
        reached.0 += m.resumes;
        reached.1 += m.heartbeat_timeouts;
        reached.2 += w.reg.resources.len() as u64 + whip.len() as u64;
    }
    assert!(reached.0 >= 5 && reached.1 >= 5 && reached.2 >= 1, "resumes, expiries, WHIP: {reached:?}");
    assert!(
        answered >= 4 && ended >= 20 && total_rings >= 10,
        "calls answered {answered}, ended {ended}, rung {total_rings}"
    );
}

#[path = "whip_tests.rs"]
mod whip;

#[path = "calls_tests.rs"]
mod calls;
