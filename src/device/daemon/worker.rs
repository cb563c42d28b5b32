//! The engine worker: carries out the daemon's engine calls one at a time, in order, so a
//! call that waits (a publish while the server is away) never blocks the supervisor and
//! never overtakes an earlier one. Results come back as [`Done`] on a bounded channel.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::device::call::Action;
use crate::engine::{CallOptions, Engine, EngineError, PublishChannel, RoomConfig};
use crate::proto::UserInfo;

/// A finished call.
#[derive(Debug)]
pub struct Done {
    /// The call.
    pub op: Action,
    /// Its result: the call's ID for [`Action::Call`], 0 otherwise.
    pub result: Result<u64, EngineError>,
}

/// What the worker carries out.
#[derive(Debug)]
pub enum Op {
    /// A controller action that is an engine call.
    Engine(Action),
    /// Answer a door request: opened, or the code and why not.
    AnswerDoor(u64, Result<(), (crate::proto::ErrorCode, String)>),
    /// The volume of every played stream, percent.
    Volume(u32),
}

/// What the worker needs to know.
pub struct Target {
    /// Room to log in to.
    pub room_id: String,
    /// Who we are.
    pub user: UserInfo,
    /// Our stream.
    pub stream_id: String,
    /// Where tokens come from when the daemon fetches them (before each login).
    pub credentials: Option<Arc<crate::device::credentials::Credentials>>,
    /// The expiry of the last token fetched for a login (for the renewal task).
    pub token_exp: tokio::sync::watch::Sender<u64>,
}

/// Runs until `ops` closes. Only the engine's actions come here (login, publish, play,
/// mute); the daemon carries out the others (chime, LEDs, relay) itself.
pub async fn run(engine: Arc<Engine>, target: Target, mut ops: mpsc::Receiver<Op>, done: mpsc::Sender<Done>) {
    while let Some(op) = ops.recv().await {
        let op = match op {
            Op::Engine(a) => a,
            Op::AnswerDoor(request_id, result) => {
                if let Err(e) = engine.answer_door(request_id, result).await {
                    tracing::warn!(request_id, error = %e, "door answer not sent");
                }
                continue;
            }
            Op::Volume(v) => {
                let _ = engine.set_all_play_stream_volume(v).await;
                continue;
            }
        };
        let result = match &op {
            Action::Login => login(&engine, &target).await.map(|_| 0),
            Action::Publish => engine.start_publishing_stream(&target.stream_id, PublishChannel::Main).await.map(|_| 0),
            Action::StopPublish => engine.stop_publishing_stream(PublishChannel::Main).await.map(|_| 0),
            Action::Play(s) => engine.start_playing_stream(s).await.map(|_| 0),
            Action::StopPlay(s) => engine.stop_playing_stream(s).await.map(|_| 0),
            Action::Mute(m) => engine.mute_microphone(*m).await.map(|_| 0),
            Action::Camera(on) => engine.enable_camera(*on).await.map(|_| 0),
            Action::Speaker(on) => engine.mute_speaker(!*on).await.map(|_| 0),
            Action::Call(c) => {
                let users: Vec<&str> = c.users.iter().map(String::as_str).collect();
                let options = CallOptions { order: c.order, ring_secs: c.ring_secs };
                engine.start_call(&users, options).await
            }
            Action::Answer(id) => engine.answer_call(*id).await.map(|_| 0),
            Action::Decline(id) => engine.decline_call(*id).await.map(|_| 0),
            Action::HangUp(id) => engine.hang_up_call(*id).await.map(|_| 0),
            Action::OpenDoor(door) => engine.open_door(door).await.map(|_| 0),
            Action::Chime(_) | Action::Led(..) | Action::DoorPulse | Action::OpenDoorFor { .. } | Action::State(_) => {
                continue;
            }
        };
        if done.send(Done { op, result }).await.is_err() {
            return;
        }
    }
}

/// Logs in, first fetching a token when the daemon's credentials say so.
async fn login(engine: &Engine, target: &Target) -> Result<(), EngineError> {
    let token = match &target.credentials {
        None => None,
        Some(c) => match c.fetch().await {
            Ok(t) => {
                let exp = crate::auth::peek(&t).map(|c| c.exp).unwrap_or(0);
                let _ = target.token_exp.send(exp);
                Some(t)
            }
            Err(e) => {
                tracing::error!(
                    callbox_event = "token_failed",
                    source = c.kind(),
                    error_code = e.code.0,
                    "no token for the login: {e}"
                );
                return Err(EngineError::Rejected(e.code));
            }
        },
    };
    let cfg = RoomConfig { token, is_user_status_notify: true };
    engine.login_room(&target.room_id, target.user.clone(), cfg).await
}

/// Renews the token before it expires, for as long as the daemon runs: at four fifths of
/// its life (or at once when `now_please` is notified: the server said it expires soon),
/// retried with back-off. Each outcome is told to the daemon as the new expiry or the error.
pub async fn renew(
    engine: Arc<Engine>,
    credentials: Arc<crate::device::credentials::Credentials>,
    mut token_exp: tokio::sync::watch::Receiver<u64>,
    now_please: Arc<tokio::sync::Notify>,
    told: mpsc::Sender<Result<u64, crate::device::credentials::FetchError>>,
) {
    use crate::device::credentials::{FetchError, renew_in, renewal_retry};
    let policy = renewal_retry();
    let mut exp = 0u64;
    let mut failures = 0u32;
    let mut retry = None;
    loop {
        let wait = if failures > 0 {
            retry
        } else if exp == 0 {
            None
        } else {
            Some(renew_in(exp, crate::auth::unix_now()))
        };
        tokio::select! {
            _ = async {
                match wait {
                    Some(w) => tokio::time::sleep(w).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = now_please.notified() => {}
            r = token_exp.changed() => {
                if r.is_err() {
                    return;
                }
                // A login fetched a new token: count from its expiry.
                exp = *token_exp.borrow_and_update();
                failures = 0;
                continue;
            }
        }
        let outcome = match credentials.fetch().await {
            Ok(t) => {
                let new_exp = crate::auth::peek(&t).map(|c| c.exp).unwrap_or(0);
                match engine.renew_token(&t).await {
                    // Not logged in now: kept for the next login, which fetches anyway.
                    Ok(()) | Err(EngineError::Invalid(_)) => Ok(new_exp),
                    Err(e) => Err(FetchError {
                        code: e.code(),
                        message: format!("the server refused the renewed token: {e}"),
                    }),
                }
            }
            Err(e) => Err(e),
        };
        match &outcome {
            Ok(new_exp) => {
                failures = 0;
                exp = *new_exp;
                tracing::info!(
                    callbox_event = "token_renewed",
                    source = credentials.kind(),
                    expires_in = new_exp.saturating_sub(crate::auth::unix_now()),
                    "token renewed"
                );
            }
            Err(e) => {
                failures += 1;
                let wait = policy.delay(failures - 1, rand::random());
                retry = Some(wait);
                tracing::warn!(
                    callbox_event = "token_renewal_failed",
                    source = credentials.kind(),
                    error_code = e.code.0,
                    retry_in_ms = wait.as_millis() as u64,
                    "token renewal failed (the call goes on with the current token): {e}"
                );
            }
        }
        if told.send(outcome).await.is_err() {
            return;
        }
    }
}
