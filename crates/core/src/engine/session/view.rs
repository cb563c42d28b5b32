//! The session's view of the room (snapshot and update diffs) and its plumbing: state
//! events, requests, sends and call completion.

use super::*;

impl Session {
    pub(super) fn apply_snapshot(&mut self, snap: RoomSnapshot) {
        let notify = self.room.as_ref().is_some_and(|r| r.notify);
        if notify {
            let fresh: BTreeMap<String, UserInfo> = snap.users.into_iter().map(|u| (u.user_id.clone(), u)).collect();
            let gone: Vec<UserInfo> =
                self.users.values().filter(|u| !fresh.contains_key(&u.user_id)).cloned().collect();
            let new: Vec<UserInfo> = fresh.values().filter(|u| !self.users.contains_key(&u.user_id)).cloned().collect();
            // Gone while the connection was down: why is not known here.
            self.apply_users(UpdateType::Delete, gone, ErrorCode::OK);
            self.apply_users(UpdateType::Add, new, ErrorCode::OK);
        }
        let fresh: BTreeMap<String, StreamInfo> = snap.streams.into_iter().map(|s| (s.stream_id.clone(), s)).collect();
        let gone: Vec<StreamInfo> =
            self.streams.values().filter(|s| !fresh.contains_key(&s.stream_id)).cloned().collect();
        let new: Vec<StreamInfo> =
            fresh.values().filter(|s| !self.streams.contains_key(&s.stream_id)).cloned().collect();
        // Switched on or off while the connection was down.
        for s in fresh.values() {
            if self.streams.contains_key(&s.stream_id) {
                self.apply_stream_state(&s.stream_id, s.video, s.audio);
            }
        }
        self.apply_streams(UpdateType::Delete, gone, ErrorCode::OK);
        self.apply_streams(UpdateType::Add, new, ErrorCode::OK);
        let changed: Vec<ExtraInfo> =
            snap.extra_info.into_iter().filter(|e| self.extra.get(&e.key) != Some(e)).collect();
        if !changed.is_empty() {
            for e in &changed {
                self.extra.insert(e.key.clone(), e.clone());
            }
            let room_id = snap.room_id;
            self.emit(EngineEvent::RoomExtraInfoUpdate { room_id, infos: changed });
        }
    }

    pub(super) fn apply_users(&mut self, update: UpdateType, users: Vec<UserInfo>, reason: ErrorCode) {
        let users = apply_keyed(&mut self.users, update, users, |u| &u.user_id);
        if !users.is_empty() {
            let room_id = self.room_id();
            self.emit(EngineEvent::RoomUserUpdate { room_id, update, users, reason });
        }
    }

    /// A stream's camera or microphone changed: its players' media hears it, the
    /// application gets one event per track that changed.
    pub(super) fn apply_stream_state(&mut self, stream_id: &str, video: TrackState, audio: TrackState) {
        let Some(s) = self.streams.get_mut(stream_id) else { return };
        let (old_video, old_audio) = (s.video, s.audio);
        (s.video, s.audio) = (video, audio);
        if (old_video, old_audio) == (video, audio) {
            return;
        }
        self.out.push_back(Output::RemoteTracks { stream_id: stream_id.to_string(), video, audio });
        let room_id = self.room_id();
        if old_video != video {
            let stream_id = stream_id.to_string();
            self.emit(EngineEvent::RemoteCameraStateUpdate { room_id: room_id.clone(), stream_id, state: video });
        }
        if old_audio != audio {
            let stream_id = stream_id.to_string();
            self.emit(EngineEvent::RemoteMicStateUpdate { room_id, stream_id, state: audio });
        }
    }

    pub(super) fn apply_streams(&mut self, update: UpdateType, streams: Vec<StreamInfo>, reason: ErrorCode) {
        let streams = apply_keyed(&mut self.streams, update, streams, |s| &s.stream_id);
        if update == UpdateType::Add {
            for s in &streams {
                let (stream_id, video, audio) = (s.stream_id.clone(), s.video, s.audio);
                self.out.push_back(Output::RemoteTracks { stream_id, video, audio });
            }
        }
        if !streams.is_empty() {
            let room_id = self.room_id();
            self.emit(EngineEvent::RoomStreamUpdate { room_id, update, streams, reason });
        }
    }

    pub(super) fn send_publish(&mut self, ch: PublishChannel) {
        let tracks = self.local_tracks;
        let Some(p) = self.publishes.get_mut(&ch) else {
            return;
        };
        p.sent_tracks = tracks;
        let (stream_id, extra_info) = (p.stream_id.clone(), p.extra_info.clone());
        let req = self.request(Pending::Publish(ch, stream_id.clone()));
        let (video, audio) = self.local_tracks;
        self.send(ClientMsg::Publish { req, stream_id, extra_info, video, audio });
    }

    pub(super) fn send_play(&mut self, stream_id: &str) {
        let req = self.request(Pending::Play(stream_id.to_string()));
        self.send(ClientMsg::Play { req, stream_id: stream_id.to_string() });
    }

    pub(super) fn publisher_state(&mut self, ch: PublishChannel, state: PublisherState, code: ErrorCode) {
        let Some(p) = self.publishes.get_mut(&ch) else {
            return;
        };
        if p.state == state && code == ErrorCode::OK {
            return;
        }
        p.state = state;
        let stream_id = p.stream_id.clone();
        self.stream_change(StreamChange::Publisher { stream_id, state, error_code: code });
    }

    pub(super) fn player_state(&mut self, stream_id: &str, state: PlayerState, code: ErrorCode) {
        let Some(p) = self.plays.get_mut(stream_id) else {
            return;
        };
        if p.state == state && code == ErrorCode::OK {
            return;
        }
        p.state = state;
        self.stream_change(StreamChange::Player { stream_id: stream_id.to_string(), state, error_code: code });
    }

    pub(super) fn room_state(&mut self, reason: RoomStateReason, code: ErrorCode) {
        let room_id = self.room_id();
        let state: RoomState = reason.state();
        tracing::debug!(room_id = %room_id, ?state, ?reason, error_code = code.0, "room state");
        self.emit(EngineEvent::RoomStateChanged { room_id, state, reason, error_code: code });
    }

    pub(super) fn check_in_room(&self) -> Result<(), EngineError> {
        match self.phase {
            Phase::Idle | Phase::LoggingOut => Err(EngineError::Invalid(ErrorCode::NOT_LOGGED_IN)),
            _ => Ok(()),
        }
    }

    pub(super) fn check_connected(&self) -> Result<(), EngineError> {
        match self.phase {
            Phase::Connected => Ok(()),
            Phase::Logining | Phase::Reconnecting => Err(EngineError::Network(ErrorCode::NETWORK_INTERRUPTED)),
            _ => Err(EngineError::Invalid(ErrorCode::NOT_LOGGED_IN)),
        }
    }

    pub(super) fn room_id(&self) -> String {
        self.room.as_ref().map(|r| r.room_id.clone()).unwrap_or_default()
    }

    pub(super) fn request(&mut self, p: Pending) -> u64 {
        let req = self.next_req;
        self.next_req += 1;
        self.pending.insert(req, p);
        req
    }

    pub(super) fn send(&mut self, msg: ClientMsg) {
        if self.link == Link::Up {
            self.out.push_back(Output::Send { epoch: self.epoch, msg });
        }
    }

    pub(super) fn emit(&mut self, e: EngineEvent) {
        self.out.push_back(Output::Event(e));
    }

    pub(super) fn stream_change(&mut self, c: StreamChange) {
        self.out.push_back(Output::Stream(c));
    }

    pub(super) fn done(&mut self, cmd: CmdId, result: Reply) {
        self.out.push_back(Output::Done { cmd, result });
    }
}

/// Applies an Add/Delete to a keyed view; returns only the items that changed it, so a
/// repeated Add or a Delete of something unknown is not reported again.
fn apply_keyed<T: Clone>(
    view: &mut BTreeMap<String, T>,
    update: UpdateType,
    items: Vec<T>,
    key: impl Fn(&T) -> &String,
) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| match update {
            UpdateType::Add => view.insert(key(item).clone(), item.clone()).is_none(),
            UpdateType::Delete => view.remove(key(item)).is_some(),
        })
        .collect()
}
