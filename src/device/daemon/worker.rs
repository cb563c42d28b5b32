//! The engine worker: carries out the daemon's engine calls one at a time, in order, so a
//! call that waits (a publish while the server is away) never blocks the supervisor and
//! never overtakes an earlier one. Results come back as [`Done`] on a bounded channel.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::engine::{Engine, EngineError, PublishChannel, RoomConfig};
use crate::proto::UserInfo;

/// One engine call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Log in to the configured room (waits while the server is unreachable).
    Login,
    /// Publish our stream.
    Publish,
    /// Stop publishing.
    StopPublish,
    /// Play a stream.
    Play(String),
    /// Stop playing a stream.
    StopPlay(String),
    /// Mute or unmute the microphone.
    Mute(bool),
}

/// A finished call.
#[derive(Debug)]
pub struct Done {
    /// The call.
    pub op: Op,
    /// Its result.
    pub result: Result<(), EngineError>,
}

/// What the worker needs to know.
pub struct Target {
    /// Room to log in to.
    pub room_id: String,
    /// Who we are.
    pub user: UserInfo,
    /// Our stream.
    pub stream_id: String,
}

/// Runs until `ops` closes.
pub async fn run(engine: Arc<Engine>, target: Target, mut ops: mpsc::Receiver<Op>, done: mpsc::Sender<Done>) {
    while let Some(op) = ops.recv().await {
        let result = match &op {
            Op::Login => {
                let cfg = RoomConfig { token: None, is_user_status_notify: true };
                engine.login_room(&target.room_id, target.user.clone(), cfg).await
            }
            Op::Publish => engine.start_publishing_stream(&target.stream_id, PublishChannel::Main).await,
            Op::StopPublish => engine.stop_publishing_stream(PublishChannel::Main).await,
            Op::Play(s) => engine.start_playing_stream(s).await,
            Op::StopPlay(s) => engine.stop_playing_stream(s).await,
            Op::Mute(m) => engine.mute_microphone(*m).await,
        };
        if done.send(Done { op, result }).await.is_err() {
            return;
        }
    }
}
