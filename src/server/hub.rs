//! The hub: the one task that owns the [`Registry`]. Connections send it what they read; it
//! feeds the registry and delivers the registry's outputs to each connection's bounded write
//! queue. A connection whose queue is full is closed (its session stays in its grace period
//! and can resume), so a slow client never holds up the others.

use crate::server::device_keys::DeviceKeys;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::config::ServerConfig;
use super::registry::{ConnId, HttpAnswer, HttpId, HttpMedia, Now, Output, Refusal, RefusalKind, Registry};
use super::registry::{MediaOut, OfferFailure, Reply};
use crate::proto::{ClientMsg, ErrorCode, ServerMsg};
use crate::rtc::sfu::Sfu;

/// Messages waiting to be written to one connection.
pub const CONN_QUEUE: usize = 256;
const HUB_QUEUE: usize = 4096;
const TICK: Duration = Duration::from_millis(250);

/// What the hub tells a connection's writer.
#[derive(Debug)]
pub enum ToConn {
    /// A serialized message.
    Text(String),
    /// Close the socket.
    Close,
    /// The connection logged in (or resumed): it no longer counts as unauthenticated.
    Authenticated,
}

/// A job on the registry; what it returns runs after the job's outputs were delivered (its
/// reply), so a caller that hears back knows its effects are queued (e.g. a state write).
type Job = Box<dyn FnOnce(&mut Registry, Now) -> Box<dyn FnOnce() + Send> + Send>;

enum Cmd {
    Connect(ConnId, mpsc::Sender<ToConn>, Option<std::net::IpAddr>),
    Message(ConnId, ClientMsg),
    Invalid(ConnId, ErrorCode, String),
    Disconnect(ConnId),
    With(Job),
    Http(HttpMedia, oneshot::Sender<HttpResult>),
    MediaAnswer(Reply, Result<String, OfferFailure>),
    MediaGone(String),
    Shutdown(oneshot::Sender<()>),
}

/// What a WHIP/WHEP request is answered.
type HttpResult = Result<HttpAnswer, Refusal>;

/// A cheap handle to the hub task.
#[derive(Clone)]
pub struct Hub {
    tx: mpsc::Sender<Cmd>,
    state: Option<mpsc::Sender<StateMsg>>,
    next_conn: Arc<AtomicU64>,
    max_message_bytes: usize,
    live: Arc<(AtomicUsize, Notify)>,
    sfu: Option<Sfu>,
    webhooks: super::webhook_task::Webhooks,
}

/// Counts a connection as live until dropped, so shutdown can wait for writers to flush.
pub struct LiveGuard(Arc<(AtomicUsize, Notify)>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::SeqCst);
        self.0.1.notify_waiters();
    }
}

impl Hub {
    /// Starts the hub task for `cfg`, with the media relay `sfu` (if media is enabled).
    /// `state` is where the device keys live (loaded by the caller; written here on change).
    pub fn spawn(cfg: &ServerConfig, sfu: Option<Sfu>, state: Option<(std::path::PathBuf, DeviceKeys)>) -> Hub {
        let (tx, rx) = mpsc::channel(HUB_QUEUE);
        let mut registry = Registry::new(&cfg.registry(), std::time::Instant::now());
        let saver = state.map(|(path, keys)| {
            registry.load_device_keys(keys);
            state_writer(path)
        });
        let max_message_bytes = registry.max_message_bytes();
        let webhooks = super::webhook_task::Webhooks::spawn(cfg);
        tokio::spawn(run(registry, rx, tx.clone(), sfu.clone(), saver.clone(), webhooks.clone()));
        let live = Arc::new((AtomicUsize::new(0), Notify::new()));
        Hub { state: saver, tx, next_conn: Arc::new(AtomicU64::new(1)), max_message_bytes, live, sfu, webhooks }
    }

    /// A WHIP/WHEP request: the registry's answer (after the media relay's, for an offer).
    pub async fn http(&self, req: HttpMedia) -> HttpResult {
        let gone = || Err(Refusal::new(RefusalKind::Unavailable, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down"));
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Http(req, tx)).await.is_err() {
            return gone();
        }
        rx.await.unwrap_or_else(|_| gone())
    }

    /// The media relay, when media is enabled.
    pub fn sfu(&self) -> Option<&Sfu> {
        self.sfu.as_ref()
    }

    /// The webhook delivery task.
    pub fn webhooks(&self) -> &super::webhook_task::Webhooks {
        &self.webhooks
    }

    /// The largest text message accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    /// Registers a new connection from `peer` (when known); returns its ID, its write queue
    /// and a guard to hold until the socket is closed.
    pub async fn connect(&self, peer: Option<std::net::IpAddr>) -> (ConnId, mpsc::Receiver<ToConn>, LiveGuard) {
        self.live.0.fetch_add(1, Ordering::SeqCst);
        let guard = LiveGuard(self.live.clone());
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(CONN_QUEUE);
        let _ = self.tx.send(Cmd::Connect(id, tx, peer)).await;
        (id, rx, guard)
    }

    /// Delivers a decoded message.
    pub async fn message(&self, conn: ConnId, msg: ClientMsg) {
        let _ = self.tx.send(Cmd::Message(conn, msg)).await;
    }

    /// Reports an undecodable message.
    pub async fn invalid(&self, conn: ConnId, code: ErrorCode, message: String) {
        let _ = self.tx.send(Cmd::Invalid(conn, code, message)).await;
    }

    /// Reports a closed connection.
    pub async fn disconnect(&self, conn: ConnId) {
        let _ = self.tx.send(Cmd::Disconnect(conn)).await;
    }

    /// Waits until every state change made by earlier calls is on disk (an admin is told a
    /// key exists only once a restart would keep it).
    pub async fn state_synced(&self) {
        let Some(tx) = &self.state else { return };
        let (done, rx) = oneshot::channel();
        if tx.send(StateMsg::Sync(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Runs `f` on the registry (admin API, metrics) and returns its result.
    pub async fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Registry, Now) -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |reg, now| {
            let r = f(reg, now);
            Box::new(move || {
                let _ = tx.send(r);
            })
        });
        self.tx.send(Cmd::With(job)).await.ok()?;
        rx.await.ok()
    }

    /// Tells every client the server is going away, closes every connection and waits
    /// (at most 2 s) until their last messages are written.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Cmd::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
        let drained = async {
            loop {
                let notified = self.live.1.notified();
                if self.live.0.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), drained).await.is_err() {
            tracing::warn!("some connections did not close in time");
        }
    }
}

/// Loads the device keys stored at `path` (none yet: an empty set).
pub fn load_device_keys(path: &std::path::Path) -> Result<DeviceKeys, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => DeviceKeys::from_json(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeviceKeys::default()),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The task that writes the device keys file, in order, each time whole (a new file renamed
/// over the old, readable by the server's user only).
fn state_writer(path: std::path::PathBuf) -> mpsc::Sender<StateMsg> {
    let (tx, mut rx) = mpsc::channel::<StateMsg>(16);
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            match m {
                StateMsg::Write(text) => {
                    let path = path.clone();
                    let r = tokio::task::spawn_blocking(move || write_private(&path, text.as_bytes())).await;
                    if let Ok(Err(e)) = r {
                        tracing::error!(error = %e, hint = "check the state directory's owner and space", "cannot store the device keys; a restart would lose the last change");
                    }
                }
                StateMsg::Sync(done) => {
                    let _ = done.send(());
                }
            }
        }
    });
    tx
}

/// What the state writer is asked.
enum StateMsg {
    /// Write this content.
    Write(String),
    /// Answer once everything before is written.
    Sync(oneshot::Sender<()>),
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

async fn run(
    mut reg: Registry,
    mut rx: mpsc::Receiver<Cmd>,
    me: mpsc::Sender<Cmd>,
    sfu: Option<Sfu>,
    saver: Option<mpsc::Sender<StateMsg>>,
    webhooks: super::webhook_task::Webhooks,
) {
    let mut conns: HashMap<ConnId, mpsc::Sender<ToConn>> = HashMap::new();
    let mut http = Pending::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut done = None;
        let mut reply = None;
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                let now = Now::system();
                match cmd {
                    Cmd::Connect(id, tx, peer) => {
                        conns.insert(id, tx);
                        reg.handle_connect_from(id, peer, now);
                    }
                    Cmd::Message(id, msg) => reg.handle_message(id, msg, now),
                    Cmd::Invalid(id, code, text) => reg.handle_invalid(id, code, text),
                    Cmd::Disconnect(id) => {
                        conns.remove(&id);
                        reg.handle_disconnect(id, now);
                    }
                    Cmd::With(job) => reply = Some(job(&mut reg, now)),
                    Cmd::Http(req, tx) => {
                        let id = http.add(tx);
                        reg.handle_http(id, req, now);
                    }
                    Cmd::MediaAnswer(to, answer) => reg.handle_media_answer(to, answer),
                    Cmd::MediaGone(session) => reg.handle_media_gone(&session),
                    Cmd::Shutdown(reply) => {
                        reg.shutdown();
                        done = Some(reply);
                    }
                }
            }
            _ = tick.tick() => reg.handle_tick(Now::system()),
        }
        deliver(&mut reg, &mut conns, &mut http, &me, sfu.as_ref(), saver.as_ref(), &webhooks);
        if let Some(r) = reply {
            r();
        }
        if let Some(reply) = done {
            let _ = reply.send(());
        }
    }
}

/// WHIP/WHEP requests waiting for the registry's answer.
#[derive(Default)]
struct Pending {
    next: HttpId,
    waiting: HashMap<HttpId, oneshot::Sender<HttpResult>>,
}

impl Pending {
    fn add(&mut self, tx: oneshot::Sender<HttpResult>) -> HttpId {
        self.next += 1;
        self.waiting.insert(self.next, tx);
        self.next
    }
}

fn deliver(
    reg: &mut Registry,
    conns: &mut HashMap<ConnId, mpsc::Sender<ToConn>>,
    http: &mut Pending,
    me: &mpsc::Sender<Cmd>,
    sfu: Option<&Sfu>,
    saver: Option<&mpsc::Sender<StateMsg>>,
    webhooks: &super::webhook_task::Webhooks,
) {
    let mut overflowed = Vec::new();
    while let Some(out) = reg.poll_output() {
        match out {
            Output::Send(id, msg) => {
                let Some(tx) = conns.get(&id) else { continue };
                let text = match serde_json::to_string(&msg) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialize a message");
                        continue;
                    }
                };
                // A connection whose queue cannot take "authenticated" cannot take the reply
                // either: it is closed like any other that does not read (never left counted
                // as not logged in, holding a slot of the pending cap).
                let authenticated = matches!(msg, ServerMsg::LoginOk { .. } | ServerMsg::Resumed { .. });
                if (authenticated && tx.try_send(ToConn::Authenticated).is_err())
                    || tx.try_send(ToConn::Text(text)).is_err()
                {
                    overflowed.push(id);
                }
            }
            Output::Close(id) => {
                if let Some(tx) = conns.remove(&id) {
                    let _ = tx.try_send(ToConn::Close);
                }
            }
            Output::Media(m) => {
                if let Err((reply, failure)) = media(m, me, sfu) {
                    reg.handle_media_answer(reply, Err(failure));
                }
            }
            Output::Http(id, answer) => {
                // The requester may have gone (its HTTP connection closed): nobody to tell.
                if let Some(tx) = http.waiting.remove(&id) {
                    let _ = tx.send(answer);
                }
            }
            Output::Hook(h) => {
                let app_id = h.app_id;
                if !webhooks.send(h) {
                    reg.metrics.dropped(super::metrics::Dropped::Webhook);
                    tracing::warn!(
                        callbox_event = "webhook_dropped",
                        app_id,
                        "the webhook task is behind; an event is dropped"
                    );
                }
            }
            Output::SaveDeviceKeys(text) => match saver {
                Some(s) => {
                    if s.try_send(StateMsg::Write(text)).is_err() {
                        reg.metrics.dropped(super::metrics::Dropped::DeviceKeysWrite);
                        tracing::error!("the device keys writer is behind; this change is not stored yet");
                    }
                }
                None => tracing::warn!("no state directory: device keys live in memory only until the server stops"),
            },
        }
    }
    for id in overflowed {
        if conns.remove(&id).is_some() {
            reg.metrics.dropped(super::metrics::Dropped::SlowClient);
            tracing::warn!(conn = id, "client does not read its messages; closing its connection (it may resume)");
            reg.handle_disconnect(id, Now::system());
        }
    }
}

/// Hands registry decisions to the media relay. Offers are answered and probes made off the
/// hub task, and what the relay says comes back as a command, so the hub never waits on the
/// relay. An offer with no relay to take it is handed back.
fn media(m: MediaOut, me: &mpsc::Sender<Cmd>, sfu: Option<&Sfu>) -> Result<(), (Reply, OfferFailure)> {
    let Some(sfu) = sfu else {
        return match m {
            MediaOut::Offer { reply, .. } => {
                Err((reply, OfferFailure::Unavailable("this server relays no media".into())))
            }
            _ => Ok(()),
        };
    };
    match m {
        MediaOut::Offer { reply, offer } => {
            let (sfu, me) = (sfu.clone(), me.clone());
            tokio::spawn(async move {
                let answer = sfu.offer(offer).await.map_err(|e| match e {
                    crate::rtc::RtcError::BadSdp(e) => OfferFailure::Rejected(e),
                    e => OfferFailure::Unavailable(e.to_string()),
                });
                let _ = me.send(Cmd::MediaAnswer(reply, answer)).await;
            });
        }
        MediaOut::EndStream(key) => sfu.end_stream(key),
        MediaOut::EndPlay(session, key) => sfu.end_play(&session, key),
        MediaOut::EndSession(session) => sfu.end_session(&session),
        MediaOut::Probe(session) => {
            let (sfu, me) = (sfu.clone(), me.clone());
            tokio::spawn(async move {
                if !sfu.session_alive(&session).await {
                    let _ = me.send(Cmd::MediaGone(session)).await;
                }
            });
        }
    }
    Ok(())
}
