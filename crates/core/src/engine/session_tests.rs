//! Engine sessions driven against the real server registry in memory, with virtual time and
//! injectable network cuts: the str0m-style "two peers progressed against each other" test.

use super::*;
use crate::server::config::{AppConfig, RegistryConfig};
use crate::server::registry::{ConnId, Now, Output as SrvOut, Registry};

const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const STEP: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, PartialEq)]
enum Cut {
    None,
    /// Connections refused and live ones reset (both sides notice).
    Reset,
    /// Everything silently dropped (nobody is told).
    Silent,
}

struct Client {
    s: Session,
    conn: Option<(u64, ConnId)>,
    events: Vec<EngineEvent>,
    done: HashMap<CmdId, Reply>,
    cut: Cut,
    media_answers: Vec<(String, Result<String, ErrorCode>)>,
    answer_tags: Vec<u64>,
}

struct Net {
    reg: Registry,
    at: Instant,
    unix_ms: u64,
    clients: Vec<Client>,
    next_conn: ConnId,
    next_cmd: CmdId,
    grace_secs: u64,
}

impl Net {
    fn new(grace_secs: u64) -> Self {
        let at = Instant::now();
        let reg = Self::registry(grace_secs, at);
        Net { reg, at, unix_ms: 2_000_000_000_000, clients: vec![], next_conn: 1, next_cmd: 1, grace_secs }
    }

    fn registry(grace_secs: u64, at: Instant) -> Registry {
        let mut cfg: RegistryConfig = toml::from_str("").unwrap();
        cfg.apps = vec![AppConfig::new(1, SECRET)];
        cfg.session.grace_secs = grace_secs;
        Registry::new(&cfg, at)
    }

    fn now(&self) -> Now {
        Now { at: self.at, unix_ms: self.unix_ms }
    }

    fn add(&mut self, policy: ReconnectPolicy) -> usize {
        let cfg = SessionConfig {
            app_sign_ttl: super::APP_SIGN_TTL,
            app_id: 1,
            app_sign_key: Some(auth::parse_secret(SECRET).unwrap()),
            policy,
            login_timeout: Duration::from_secs(5),
            seed: self.clients.len() as u64 + 1,
        };
        self.clients.push(Client {
            s: Session::new(cfg, self.at),
            conn: None,
            events: vec![],
            done: HashMap::new(),
            cut: Cut::None,
            media_answers: vec![],
            answer_tags: vec![],
        });
        self.clients.len() - 1
    }

    fn cmd(&mut self) -> CmdId {
        self.next_cmd += 1;
        self.next_cmd
    }

    fn login(&mut self, i: usize, user: &str, room: &str) -> CmdId {
        let cmd = self.cmd();
        let at = self.at;
        let u = UserInfo::new(user.into(), user.into());
        self.clients[i].s.login(at, cmd, room.into(), u, None, true);
        cmd
    }

    /// Moves every output until nothing is left to do at this instant.
    fn settle(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(o) = self.clients[i].s.poll_output() {
                    moved = true;
                    self.client_output(i, o);
                }
            }
            while let Some(o) = self.reg.poll_output() {
                moved = true;
                match o {
                    SrvOut::Send(conn, msg) => {
                        if let Some(i) = self.client_of(conn)
                            && self.clients[i].cut == Cut::None
                        {
                            let epoch = self.clients[i].conn.unwrap().0;
                            let at = self.at;
                            self.clients[i].s.handle_message(at, epoch, msg);
                        }
                    }
                    SrvOut::Media(_) | SrvOut::SaveDeviceKeys(_) | SrvOut::Http(..) | SrvOut::Hook(_) => {}
                    SrvOut::Close(conn) => {
                        if let Some(i) = self.client_of(conn) {
                            let epoch = self.clients[i].conn.take().unwrap().0;
                            let at = self.at;
                            self.clients[i].s.handle_disconnected(at, epoch);
                        }
                        let now = self.now();
                        self.reg.handle_disconnect(conn, now);
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }

    fn client_of(&self, conn: ConnId) -> Option<usize> {
        self.clients.iter().position(|c| c.conn.is_some_and(|(_, x)| x == conn))
    }

    fn client_output(&mut self, i: usize, o: Output) {
        let now = self.now();
        match o {
            Output::Connect { epoch } => {
                if self.clients[i].cut != Cut::None {
                    self.clients[i].s.handle_disconnected(now.at, epoch);
                    return;
                }
                let conn = self.next_conn;
                self.next_conn += 1;
                self.reg.handle_connect(conn, now);
                self.clients[i].conn = Some((epoch, conn));
                self.clients[i].s.handle_connected(now.at, epoch, now.unix_ms / 1000);
            }
            Output::Send { epoch, msg } => {
                if let Some((g, conn)) = self.clients[i].conn
                    && g == epoch
                    && self.clients[i].cut == Cut::None
                {
                    self.reg.handle_message(conn, msg, now);
                }
            }
            Output::Close { epoch } => {
                if let Some((g, conn)) = self.clients[i].conn
                    && g == epoch
                {
                    self.clients[i].conn = None;
                    if self.clients[i].cut != Cut::Silent {
                        self.reg.handle_disconnect(conn, now);
                    }
                }
            }
            Output::Event(e) => self.clients[i].events.push(e),
            Output::Stream(c) => self.clients[i].events.push(c.into_event()),
            Output::Done { cmd, result } => {
                self.clients[i].done.insert(cmd, result);
            }
            Output::MediaAnswer { stream_id, result, tag, .. } => {
                self.clients[i].media_answers.push((stream_id, result));
                self.clients[i].answer_tags.push(tag);
            }
            Output::Joined { .. } | Output::RemoteTracks { .. } => {}
        }
    }

    fn run(&mut self, d: Duration) {
        let end = self.at + d;
        self.settle();
        while self.at < end {
            self.at += STEP;
            self.unix_ms += STEP.as_millis() as u64;
            let now = self.now();
            self.reg.handle_tick(now);
            for c in &mut self.clients {
                if c.s.poll_timeout().is_some_and(|t| t <= now.at) {
                    c.s.handle_timeout(now.at);
                }
            }
            self.settle();
        }
    }

    fn cut(&mut self, i: usize, how: Cut) {
        self.clients[i].cut = how;
        if how == Cut::Reset
            && let Some((epoch, conn)) = self.clients[i].conn.take()
        {
            let now = self.now();
            self.reg.handle_disconnect(conn, now);
            self.clients[i].s.handle_disconnected(now.at, epoch);
        }
        self.settle();
    }

    fn restart_server(&mut self) {
        self.reg = Self::registry(self.grace_secs, self.at);
        let now = self.now();
        for c in &mut self.clients {
            if let Some((epoch, _)) = c.conn.take() {
                c.s.handle_disconnected(now.at, epoch);
            }
        }
        self.settle();
    }

    fn take(&mut self, i: usize) -> Vec<EngineEvent> {
        std::mem::take(&mut self.clients[i].events)
    }
}

fn room_reasons(ev: &[EngineEvent]) -> Vec<(RoomStateReason, ErrorCode)> {
    ev.iter()
        .filter_map(|e| match e {
            EngineEvent::RoomStateChanged { reason, error_code, .. } => Some((*reason, *error_code)),
            _ => None,
        })
        .collect()
}

fn churn(ev: &[EngineEvent]) -> Vec<EngineEvent> {
    ev.iter()
        .filter(|e| matches!(e, EngineEvent::RoomUserUpdate { .. } | EngineEvent::RoomStreamUpdate { .. }))
        .cloned()
        .collect()
}

fn stream_events(ev: &[EngineEvent]) -> Vec<(UpdateType, String)> {
    ev.iter()
        .filter_map(|e| match e {
            EngineEvent::RoomStreamUpdate { update, streams, .. } => Some((*update, streams[0].stream_id.clone())),
            _ => None,
        })
        .collect()
}

fn publisher_states(ev: &[EngineEvent]) -> Vec<PublisherState> {
    ev.iter()
        .filter_map(|e| match e {
            EngineEvent::PublisherStateUpdate { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

fn two_in_room(net: &mut Net) -> (usize, usize) {
    let a = net.add(ReconnectPolicy::default());
    let b = net.add(ReconnectPolicy::default());
    let la = net.login(a, "door", "lobby");
    net.run(Duration::from_millis(100));
    let lb = net.login(b, "flat", "lobby");
    net.run(Duration::from_millis(100));
    assert_eq!(net.clients[a].done[&la], Ok(0));
    assert_eq!(net.clients[b].done[&lb], Ok(0));
    (a, b)
}

#[test]
fn login_events_then_publish_and_play() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    let ev = net.take(a);
    assert_eq!(
        room_reasons(&ev),
        vec![(RoomStateReason::Logining, ErrorCode::OK), (RoomStateReason::Logined, ErrorCode::OK)]
    );
    assert!(matches!(&churn(&ev)[..], [EngineEvent::RoomUserUpdate { update: UpdateType::Add, .. }]));
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "door-main".into(), "cam".into());
    net.run(Duration::from_millis(100));
    assert_eq!(net.clients[a].done[&p], Ok(0));
    assert_eq!(publisher_states(&net.take(a)), vec![PublisherState::PublishRequesting, PublisherState::Publishing]);
    assert_eq!(stream_events(&net.take(b)), vec![(UpdateType::Add, "door-main".into())]);
    let q = net.cmd();
    net.clients[b].s.play(q, "door-main".into());
    net.run(Duration::from_millis(100));
    assert!(net.take(b).contains(&EngineEvent::PlayerStateUpdate {
        stream_id: "door-main".into(),
        state: PlayerState::Playing,
        error_code: ErrorCode::OK
    }));
}

#[test]
fn blip_within_grace_resumes_without_churn() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "door-main".into(), String::new());
    net.run(Duration::from_millis(100));
    net.take(a);
    net.take(b);
    net.cut(a, Cut::Reset);
    net.run(Duration::from_secs(5));
    net.cut(a, Cut::None);
    net.run(Duration::from_secs(15));
    let ev = net.take(a);
    assert_eq!(
        room_reasons(&ev),
        vec![
            (RoomStateReason::Reconnecting, ErrorCode::NETWORK_INTERRUPTED),
            (RoomStateReason::Reconnected, ErrorCode::OK)
        ]
    );
    assert_eq!(publisher_states(&ev), vec![PublisherState::PublishRequesting, PublisherState::Publishing]);
    assert!(churn(&net.take(b)).is_empty(), "the peer must see no Delete/Add");
}

#[test]
fn silent_outage_is_detected_and_resumed() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    net.take(a);
    net.take(b);
    net.cut(a, Cut::Silent);
    net.run(Duration::from_secs(12));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::Reconnecting, ErrorCode::NETWORK_INTERRUPTED)));
    net.cut(a, Cut::None);
    net.run(Duration::from_secs(15));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::Reconnected, ErrorCode::OK)));
    assert!(churn(&net.take(b)).is_empty());
}

#[test]
fn outage_longer_than_grace_relogs_and_republishes() {
    let mut net = Net::new(10);
    let (a, b) = two_in_room(&mut net);
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "door-main".into(), String::new());
    net.run(Duration::from_millis(100));
    net.take(b);
    net.cut(a, Cut::Reset);
    net.run(Duration::from_secs(20));
    let seen = stream_events(&net.take(b));
    assert_eq!(seen, vec![(UpdateType::Delete, "door-main".into())], "deleted after grace");
    net.cut(a, Cut::None);
    net.run(Duration::from_secs(15));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::Reconnected, ErrorCode::OK)));
    assert_eq!(stream_events(&net.take(b)), vec![(UpdateType::Add, "door-main".into())], "announced again");
}

#[test]
fn server_restart_relogs_everyone_and_replays() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "door-main".into(), String::new());
    net.run(Duration::from_millis(100));
    let q = net.cmd();
    net.clients[b].s.play(q, "door-main".into());
    net.run(Duration::from_millis(100));
    net.take(a);
    net.take(b);
    net.restart_server();
    net.run(Duration::from_secs(15));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::Reconnected, ErrorCode::OK)));
    let ev = net.take(b);
    let last_play = ev.iter().rev().find_map(|e| match e {
        EngineEvent::PlayerStateUpdate { state, .. } => Some(*state),
        _ => None,
    });
    assert_eq!(last_play, Some(PlayerState::Playing), "{ev:?}");
    assert_eq!(net.reg.room_view(1, "lobby").unwrap().streams.len(), 1);
}

#[test]
fn kicked_session_does_not_kick_back() {
    let mut net = Net::new(90);
    let a = net.add(ReconnectPolicy::default());
    let a2 = net.add(ReconnectPolicy::default());
    net.login(a, "door", "lobby");
    net.run(Duration::from_millis(100));
    net.login(a2, "door", "lobby");
    net.run(Duration::from_secs(60));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::KickOut, ErrorCode::KICKED_DUPLICATE_LOGIN)));
    assert!(net.clients[a].s.is_idle());
    assert_eq!(
        room_reasons(&net.take(a2)),
        vec![(RoomStateReason::Logining, ErrorCode::OK), (RoomStateReason::Logined, ErrorCode::OK)]
    );
}

#[test]
fn gives_up_after_twenty_minutes_by_default_and_never_when_told() {
    let mut net = Net::new(90);
    let a = net.add(ReconnectPolicy::default());
    let d = net.add(ReconnectPolicy::forever());
    let la = net.login(a, "door", "lobby");
    net.login(d, "kiosk", "lobby");
    net.run(Duration::from_millis(100));
    net.cut(a, Cut::Reset);
    net.cut(d, Cut::Reset);
    net.run(Duration::from_secs(19 * 60));
    assert!(!room_reasons(&net.take(a)).iter().any(|r| r.0 == RoomStateReason::ReconnectFailed));
    net.run(Duration::from_secs(2 * 60));
    assert_eq!(net.clients[a].done[&la], Ok(0));
    assert!(room_reasons(&net.take(a)).contains(&(RoomStateReason::ReconnectFailed, ErrorCode::RECONNECT_FAILED)));
    net.run(Duration::from_secs(60 * 60));
    assert!(!room_reasons(&net.take(d)).iter().any(|r| r.0 == RoomStateReason::ReconnectFailed));
    net.cut(d, Cut::None);
    net.run(Duration::from_secs(15));
    assert!(room_reasons(&net.take(d)).contains(&(RoomStateReason::Reconnected, ErrorCode::OK)));
}

#[test]
fn first_login_keeps_trying_until_server_reachable() {
    let mut net = Net::new(90);
    let a = net.add(ReconnectPolicy::forever());
    net.clients[a].cut = Cut::Reset;
    let la = net.login(a, "door", "lobby");
    net.run(Duration::from_secs(120));
    assert!(!net.clients[a].done.contains_key(&la), "still trying");
    net.clients[a].cut = Cut::None;
    net.run(Duration::from_secs(15));
    assert_eq!(net.clients[a].done[&la], Ok(0));
}

#[test]
fn bad_ids_and_bad_tokens_fail_without_retry() {
    let mut net = Net::new(90);
    let a = net.add(ReconnectPolicy::default());
    let cmd = net.cmd();
    let at = net.at;
    net.clients[a].s.login(at, cmd, "lobby".into(), UserInfo::new(String::new(), String::new()), None, false);
    net.settle();
    assert_eq!(net.clients[a].done[&cmd], Err(EngineError::Invalid(ErrorCode::USER_ID_EMPTY)));
    let cmd = net.cmd();
    let u = UserInfo::new("door".into(), String::new());
    net.clients[a].s.login(at, cmd, "lobby".into(), u, Some("not-a-token".into()), false);
    net.run(Duration::from_secs(10));
    assert_eq!(net.clients[a].done[&cmd], Err(EngineError::Rejected(ErrorCode::TOKEN_INVALID)));
    assert_eq!(room_reasons(&net.take(a)).last(), Some(&(RoomStateReason::LoginFailed, ErrorCode::TOKEN_INVALID)));
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "s".into(), String::new());
    assert_eq!(
        net.clients[a].s.poll_output(),
        Some(Output::Done { cmd: p, result: Err(EngineError::Invalid(ErrorCode::NOT_LOGGED_IN)) })
    );
}

#[test]
fn logout_is_immediate_for_others() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    net.take(b);
    let cmd = net.cmd();
    let at = net.at;
    net.clients[a].s.logout(at, cmd);
    net.settle();
    assert_eq!(net.clients[a].done[&cmd], Ok(0));
    assert!(matches!(&churn(&net.take(b))[..], [EngineEvent::RoomUserUpdate { update: UpdateType::Delete, .. }]));
    assert_eq!(room_reasons(&net.take(a)).last(), Some(&(RoomStateReason::Logout, ErrorCode::OK)));
}

#[test]
fn network_quality_for_self_and_others() {
    let mut net = Net::new(90);
    let (a, _b) = two_in_room(&mut net);
    net.take(a);
    net.run(Duration::from_secs(7));
    let ev = net.take(a);
    let local = ev.iter().filter(|e| matches!(e, EngineEvent::NetworkQuality { is_local: true, .. })).count();
    let remote: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            EngineEvent::NetworkQuality { is_local: false, user_id, upstream, .. } => {
                Some((user_id.clone(), *upstream))
            }
            _ => None,
        })
        .collect();
    assert!((3..=4).contains(&local), "{local}");
    assert!(remote.iter().any(|(u, q)| u == "flat" && *q == QualityLevel::Excellent), "{remote:?}");
}

#[test]
fn stop_before_start_completes_cancels_the_start() {
    let mut net = Net::new(90);
    let a = net.add(ReconnectPolicy::default());
    net.clients[a].cut = Cut::Reset; // server unreachable: the publish stays queued
    net.login(a, "door", "lobby");
    net.run(Duration::from_millis(200));
    let p = net.cmd();
    net.clients[a].s.publish(p, PublishChannel::Main, "door-main".into(), String::new());
    let s = net.cmd();
    net.clients[a].s.stop_publish(s, PublishChannel::Main);
    net.settle();
    assert_eq!(net.clients[a].done[&p], Err(EngineError::Cancelled));
    assert_eq!(net.clients[a].done[&s], Ok(0));
    assert_eq!(EngineError::Cancelled.code(), ErrorCode::REQUEST_CANCELLED);
}

/// When the room connection of `i` came back (Reconnected), from `since`.
fn reconnected_after(net: &mut Net, i: usize, since: Instant, limit: Duration) -> Option<Duration> {
    let end = net.at + limit;
    while net.at < end {
        net.run(STEP);
        if room_reasons(&net.take(i)).contains(&(RoomStateReason::Reconnected, ErrorCode::OK)) {
            return Some(net.at - since);
        }
    }
    None
}

#[test]
fn media_offer_in_flight_is_reported_lost_with_the_connection() {
    let mut net = Net::new(90);
    let (a, _) = two_in_room(&mut net);
    // Sent into a silent cut, before the session noticed it: the offer is swallowed.
    net.cut(a, Cut::Silent);
    net.run(Duration::from_secs(1));
    assert!(net.clients[a].s.media_offer("door-main".into(), MediaRole::Publish, "v=0".into(), 7));
    net.settle();
    assert!(net.clients[a].media_answers.is_empty());
    net.run(Duration::from_secs(10));
    assert_eq!(net.clients[a].media_answers, vec![("door-main".to_string(), Err(ErrorCode::NETWORK_INTERRUPTED))]);
    assert_eq!(net.clients[a].answer_tags, vec![7], "the answer names the offer it is about");
    // While the room connection is down, an offer is refused (kept by the media side).
    assert!(!net.clients[a].s.media_offer("door-main".into(), MediaRole::Publish, "v=0".into(), 8));
}

#[test]
fn signalling_freshness_follows_the_server() {
    let mut net = Net::new(90);
    let (a, _) = two_in_room(&mut net);
    net.run(Duration::from_secs(3));
    assert!(net.clients[a].s.signalling_fresh(net.at));
    net.cut(a, Cut::Silent);
    net.run(Duration::from_secs(4));
    // Still "up" (TCP would still be retrying), but not fresh.
    assert!(!net.clients[a].s.signalling_fresh(net.at));
    assert!(!room_reasons(&net.take(a)).contains(&(RoomStateReason::Reconnecting, ErrorCode::NETWORK_INTERRUPTED)));
}

#[test]
fn network_back_replaces_a_silent_room_connection_at_once() {
    let mut net = Net::new(90);
    let (a, b) = two_in_room(&mut net);
    net.take(b);
    net.cut(a, Cut::Silent);
    net.run(Duration::from_secs(4));
    net.cut(a, Cut::None);
    let since = net.at;
    // A media link just came back: the silent room connection is replaced now, not when the
    // dead-link timer fires (~3 s later).
    let at = net.at;
    net.clients[a].s.network_back(at);
    let took = reconnected_after(&mut net, a, since, Duration::from_secs(10)).expect("reconnected");
    assert!(took <= Duration::from_millis(200), "{took:?}");
    assert!(churn(&net.take(b)).is_empty());
    // A fresh connection is left alone.
    let at = net.at;
    net.clients[a].s.network_back(at);
    net.run(Duration::from_millis(200));
    assert!(room_reasons(&net.take(a)).is_empty());
}

#[test]
fn young_outage_retries_within_the_early_cap() {
    let mut net = Net::new(90);
    let (a, _) = two_in_room(&mut net);
    // Connections refused for 40 s: the back-off would have grown to 10 s without the
    // early cap.
    net.cut(a, Cut::Reset);
    net.run(Duration::from_secs(40));
    net.cut(a, Cut::None);
    let since = net.at;
    let took = reconnected_after(&mut net, a, since, Duration::from_secs(20)).expect("reconnected");
    assert!(took <= Duration::from_millis(1600), "{took:?}");
}
