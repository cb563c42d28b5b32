//! Sessions: a logged-in user in one room, which outlives its connection for the grace
//! period. A session holds what it publishes and plays, its token's claims and what a
//! detached session keeps for its resume. Kicked sessions leave a tombstone, so a client that
//! tries to resume one is told why it ended.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::ConnId;
use crate::auth::Claims;
use crate::proto::{ErrorCode, QualityLevel, ServerMsg, StreamInfo, TrackState, UserInfo};
use crate::server::limits::Bucket;

/// A kicked session is remembered this long, so it is told "kicked" if it tries to resume.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// Messages kept for a detached session and replayed on resume.
pub(super) const DETACHED_BACKLOG: usize = 64;

/// One session. See the module docs.
pub(super) struct Session {
    pub(super) resume_token: String,
    pub(super) app_id: u32,
    pub(super) room_id: String,
    pub(super) user: UserInfo,
    pub(super) claims: Claims,
    /// Told of other users coming and going.
    pub(super) notify: bool,
    pub(super) conn: Option<ConnId>,
    pub(super) last_seen: Instant,
    /// Its own report: overall, sending side, receiving side.
    pub(super) quality: [QualityLevel; 3],
    /// What it publishes, by stream ID.
    pub(super) published: BTreeMap<String, Published>,
    pub(super) subscriptions: BTreeSet<String>,
    pub(super) warned_expiry: bool,
    /// Told that its token expired (it can no longer publish, offer media or resume).
    pub(super) told_expired: bool,
    pub(super) broadcasts: Bucket,
    backlog: VecDeque<ServerMsg>,
    /// A WHIP publisher: no connection and no heartbeat; ended by DELETE or by its media.
    pub(super) pinned: bool,
    /// The most recent call of this session that ended, for its resume snapshot.
    pub(super) last_call: Option<crate::proto::EndedCall>,
}

/// A stream a session publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Published {
    /// Free text for players.
    pub(super) extra_info: String,
    /// Whether its video is sent now.
    pub(super) video: TrackState,
    /// Whether its audio is sent now.
    pub(super) audio: TrackState,
}

impl Session {
    /// How the room sees stream `id` of this session.
    pub(super) fn stream_info(&self, id: &str, p: &Published) -> StreamInfo {
        StreamInfo {
            stream_id: id.to_string(),
            user: self.user.clone(),
            extra_info: p.extra_info.clone(),
            video: p.video,
            audio: p.audio,
        }
    }

    /// Every stream this session publishes, as the room sees them.
    pub(super) fn streams(&self) -> impl Iterator<Item = StreamInfo> + '_ {
        self.published.iter().map(|(id, p)| self.stream_info(id, p))
    }

    /// A new session for `user` in `room_id`; `conn` is its connection (none for a WHIP
    /// publisher, which is then pinned: no heartbeat, no token warnings).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        app_id: u32,
        room_id: String,
        user: UserInfo,
        claims: Claims,
        conn: Option<ConnId>,
        notify: bool,
        broadcasts: Bucket,
        now: Instant,
    ) -> Self {
        let pinned = conn.is_none();
        Session {
            resume_token: super::random_hex(16),
            app_id,
            room_id,
            user,
            claims,
            notify,
            conn,
            last_seen: now,
            quality: [QualityLevel::Unknown; 3],
            published: BTreeMap::new(),
            subscriptions: BTreeSet::new(),
            warned_expiry: pinned,
            told_expired: pinned,
            broadcasts,
            backlog: VecDeque::new(),
            pinned,
            last_call: None,
        }
    }

    /// Where a message to this session goes: its connection, or (detached) the backlog for
    /// broadcast and token messages (a ring reaches a callee that resumes within the grace
    /// period through the resume snapshot; a door request is never kept) (room and stream changes reach it through the resume
    /// snapshot instead). The connection to send on, when there is one.
    pub(super) fn deliver(&mut self, msg: ServerMsg) -> Option<(ConnId, ServerMsg)> {
        match self.conn {
            Some(c) => Some((c, msg)),
            None => {
                if matches!(msg, ServerMsg::BroadcastMessage { .. } | ServerMsg::TokenWillExpire { .. }) {
                    if self.backlog.len() >= DETACHED_BACKLOG {
                        self.backlog.pop_front();
                    }
                    self.backlog.push_back(msg);
                }
                None
            }
        }
    }

    /// What was kept while detached, in order; the backlog is empty afterwards.
    pub(super) fn take_backlog(&mut self) -> Vec<ServerMsg> {
        self.backlog.drain(..).collect()
    }

    /// Whether `token` is this session's resume token (in constant time).
    pub(super) fn resumes_with(&self, token: &str) -> bool {
        let a = self.resume_token.as_bytes();
        let b = token.as_bytes();
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The sessions of one server, by session ID, and the tombstones of kicked ones.
#[derive(Default)]
pub(super) struct Sessions {
    map: HashMap<String, Session>,
    tombstones: HashMap<String, (ErrorCode, Instant)>,
}

impl Sessions {
    pub(super) fn get(&self, sid: &str) -> Option<&Session> {
        self.map.get(sid)
    }

    pub(super) fn get_mut(&mut self, sid: &str) -> Option<&mut Session> {
        self.map.get_mut(sid)
    }

    pub(super) fn insert(&mut self, sid: String, s: Session) {
        self.map.insert(sid, s);
    }

    pub(super) fn remove(&mut self, sid: &str) -> Option<Session> {
        self.map.remove(sid)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Session)> {
        self.map.iter()
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut Session)> {
        self.map.iter_mut()
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The IDs of the sessions that match `f`.
    pub(super) fn ids_where(&self, f: impl Fn(&Session) -> bool) -> Vec<String> {
        self.map.iter().filter(|(_, s)| f(s)).map(|(id, _)| id.clone()).collect()
    }

    /// Sessions silent for longer than `grace` (pinned ones never are).
    pub(super) fn expired(&self, now: Instant, grace: Duration) -> Vec<String> {
        self.ids_where(|s| !s.pinned && now.saturating_duration_since(s.last_seen) > grace)
    }

    /// Remembers that `sid` was kicked with `code`.
    pub(super) fn tombstone(&mut self, sid: &str, code: ErrorCode, now: Instant) {
        self.tombstones.insert(sid.to_string(), (code, now));
    }

    /// Why `sid` was kicked, if it was, recently.
    pub(super) fn tombstone_of(&self, sid: &str) -> Option<ErrorCode> {
        self.tombstones.get(sid).map(|(code, _)| *code)
    }

    /// Forgets tombstones older than their time to live.
    pub(super) fn prune(&mut self, now: Instant) {
        self.tombstones.retain(|_, (_, at)| now.saturating_duration_since(*at) < TOMBSTONE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(conn: Option<ConnId>, now: Instant) -> Session {
        let claims = Claims {
            app_id: 1,
            user_id: "door".into(),
            room_id: None,
            privileges: vec![],
            streams: None,
            dk: None,
            nbf: None,
            iat: 0,
            exp: 100,
        };
        let user = UserInfo::new("door".into(), "Door".into());
        Session::new(1, "lobby".into(), user, claims, conn, true, Bucket::new(1.0, 1.0, now), now)
    }

    fn broadcast(id: u64) -> ServerMsg {
        ServerMsg::BroadcastMessage {
            room_id: "lobby".into(),
            message_id: id,
            from: UserInfo::new("x".into(), "x".into()),
            message: "m".into(),
            send_time_ms: 0,
            from_privileges: vec![],
        }
    }

    #[test]
    fn a_detached_session_keeps_a_bounded_backlog_of_what_a_resume_needs() {
        let now = Instant::now();
        let mut s = session(None, now);
        assert!(s.pinned, "no connection: a WHIP publisher");
        s.pinned = false;
        for i in 0..(DETACHED_BACKLOG as u64 + 10) {
            assert!(s.deliver(broadcast(i)).is_none());
        }
        let update = ServerMsg::UserUpdate {
            room_id: "lobby".into(),
            update: crate::proto::UpdateType::Add,
            users: vec![],
            reason: ErrorCode::OK,
        };
        assert!(s.deliver(update).is_none(), "room changes come with the resume snapshot instead");
        let kept = s.take_backlog();
        assert_eq!(kept.len(), DETACHED_BACKLOG, "bounded");
        assert_eq!(kept[0], broadcast(10), "the oldest went first");
        assert!(s.take_backlog().is_empty());
        s.conn = Some(7);
        assert_eq!(s.deliver(broadcast(1)), Some((7, broadcast(1))));
    }

    #[test]
    fn resume_tokens_compare_whole_and_tombstones_expire() {
        let now = Instant::now();
        let s = session(Some(1), now);
        assert!(!s.pinned && !s.warned_expiry);
        let token = s.resume_token.clone();
        assert!(s.resumes_with(&token));
        assert!(!s.resumes_with(&token[..token.len() - 1]));
        assert!(!s.resumes_with(""));
        let mut all = Sessions::default();
        all.insert("a".into(), s);
        assert_eq!(all.expired(now + Duration::from_secs(5), Duration::from_secs(10)), Vec::<String>::new());
        assert_eq!(all.expired(now + Duration::from_secs(11), Duration::from_secs(10)), vec!["a".to_string()]);
        all.tombstone("b", ErrorCode::KICKED_BY_ADMIN, now);
        all.prune(now + Duration::from_secs(599));
        assert_eq!(all.tombstone_of("b"), Some(ErrorCode::KICKED_BY_ADMIN));
        all.prune(now + TOMBSTONE_TTL);
        assert_eq!(all.tombstone_of("b"), None);
    }
}
