//! The webhook delivery task: the thin shell around the sans-IO
//! [`Outbox`](callbox_core::server::webhooks::Outbox). The hub hands it each event with
//! `try_send` (never waiting: a full queue is counted and logged, the room goes on); the
//! task makes the outbox's requests through the same dialer and TLS verification as every
//! other client in callbox, each in its own task with a deadline, and feeds the results
//! back. So a receiver that hangs costs one request slot of its own app, nothing else.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callbox_core::server::webhooks::{AppStats, Delivery, Hook, Outbox, Pushed, SIGNATURE_HEADER};
use tokio::sync::mpsc;

use super::config::{ServerConfig, WebhooksConfig};
use crate::dial::Dialer;
use crate::url::ServerUrl;

/// Events waiting between the hub and the task.
const QUEUE: usize = 4096;

/// What the task is told.
enum Msg {
    Hook(Hook),
    /// SIGHUP: the apps' receivers now.
    Apps(Vec<AppHook>),
}

/// One app's receiver.
#[derive(Clone)]
struct AppHook {
    app_id: u32,
    url: String,
    secret: String,
}

/// One `/metrics` series: name, type, help and its value of an app's counters.
type Series = (&'static str, &'static str, &'static str, fn(&AppStats) -> u64);

/// A handle to the task.
#[derive(Clone)]
pub struct Webhooks {
    tx: mpsc::Sender<Msg>,
    stats: Arc<Mutex<BTreeMap<u32, AppStats>>>,
}

fn app_hooks(cfg: &ServerConfig) -> Vec<AppHook> {
    cfg.apps
        .iter()
        .filter_map(|a| {
            Some(AppHook { app_id: a.app_id, url: a.webhook_url.clone()?, secret: a.webhook_secret.clone()? })
        })
        .collect()
}

impl Webhooks {
    /// Starts the task for `cfg`'s apps (an app without `webhook_url` is told nothing).
    pub fn spawn(cfg: &ServerConfig) -> Webhooks {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Mutex::new(BTreeMap::new()));
        let prefix = format!("{:08x}", rand::random::<u32>());
        let outbox = Outbox::new(cfg.webhooks.outbox(), prefix);
        tokio::spawn(run(outbox, cfg.webhooks.clone(), app_hooks(cfg), rx, stats.clone()));
        Webhooks { tx, stats }
    }

    /// Hands over an event; false when the task's queue is full (the event is lost).
    pub fn send(&self, hook: Hook) -> bool {
        self.tx.try_send(Msg::Hook(hook)).is_ok()
    }

    /// Applies a reloaded configuration's receivers.
    pub async fn reconfigure(&self, cfg: &ServerConfig) {
        let _ = self.tx.send(Msg::Apps(app_hooks(cfg))).await;
    }

    /// The counters for `/metrics`, in Prometheus text.
    pub fn render(&self) -> String {
        use std::fmt::Write;
        let stats = self.stats.lock().map(|s| s.clone()).unwrap_or_default();
        if stats.is_empty() {
            return String::new();
        }
        let mut out = String::new();
        let series: [Series; 4] = [
            ("callbox_webhooks_delivered_total", "counter", "Events the app's receiver accepted.", |s| s.delivered),
            ("callbox_webhooks_failed_total", "counter", "Delivery tries that failed (each is retried).", |s| s.failed),
            ("callbox_webhooks_dropped_total", "counter", "Events dropped because the app's queue was full.", |s| {
                s.dropped
            }),
            ("callbox_webhooks_queued", "gauge", "Events waiting for the app's receiver.", |s| s.queued as u64),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (app, s) in &stats {
                let _ = writeln!(out, "{name}{{app_id=\"{app}\"}} {}", value(s));
            }
        }
        out
    }
}

/// A dialer per receiver URL (made once: the CA file and the system roots are read then).
fn dialers(apps: &[AppHook], ca_file: Option<&PathBuf>) -> BTreeMap<u32, Arc<Dialer>> {
    let mut out = BTreeMap::new();
    for a in apps {
        let made = ServerUrl::parse(&a.url)
            .map_err(|e| e.to_string())
            .and_then(|u| Dialer::new(u, ca_file.map(PathBuf::as_path)).map_err(|e| e.to_string()));
        match made {
            Ok(d) => {
                out.insert(a.app_id, Arc::new(d));
            }
            Err(e) => tracing::error!(callbox_event = "webhook", app_id = a.app_id, error = %e,
                "the app's webhook receiver cannot be reached with this configuration; its events wait"),
        }
    }
    out
}

async fn run(
    mut outbox: Outbox,
    cfg: WebhooksConfig,
    apps: Vec<AppHook>,
    mut rx: mpsc::Receiver<Msg>,
    stats: Arc<Mutex<BTreeMap<u32, AppStats>>>,
) {
    let ca_file = (!cfg.ca_file.is_empty()).then(|| PathBuf::from(&cfg.ca_file));
    let timeout = Duration::from_millis(cfg.timeout_ms.max(100));
    let mut dial = dialers(&apps, ca_file.as_ref());
    for a in &apps {
        outbox.set_app(a.app_id, a.url.clone(), a.secret.clone().into_bytes());
    }
    let (done_tx, mut done_rx) = mpsc::channel::<(Delivery, bool)>(256);
    loop {
        let now = Instant::now();
        while let Some(d) = outbox.poll(now, crate::auth::unix_now()) {
            let Some(dialer) = dial.get(&d.app_id).cloned() else {
                // No usable dialer (logged at start): tried again after the back-off.
                outbox.done(&d, false, now);
                continue;
            };
            let done = done_tx.clone();
            tokio::spawn(async move {
                let ok = deliver(&dialer, &d, timeout).await;
                let _ = done.send((d, ok)).await;
            });
        }
        if let Ok(mut s) = stats.lock() {
            s.clear();
            s.extend(outbox.apps().filter_map(|a| outbox.stats(a).map(|st| (a, st))));
        }
        let wake = outbox.next_wake().map(tokio::time::Instant::from_std);
        tokio::select! {
            m = rx.recv() => match m {
                None => return,
                Some(Msg::Hook(h)) => match outbox.push(&h) {
                    Pushed::Queued | Pushed::NoHook => {}
                    Pushed::DroppedOldest(id) => tracing::warn!(callbox_event = "webhook_dropped", app_id = h.app_id, id = %id,
                        "the app's webhook queue is full: its oldest waiting event is dropped"),
                    Pushed::Dropped => tracing::warn!(callbox_event = "webhook_dropped", app_id = h.app_id, event = h.event.name(),
                        "the app's webhook queue is full of events being sent: this one is dropped"),
                },
                Some(Msg::Apps(apps)) => {
                    dial = dialers(&apps, ca_file.as_ref());
                    let keep: Vec<u32> = apps.iter().map(|a| a.app_id).collect();
                    for gone in outbox.apps().filter(|a| !keep.contains(a)).collect::<Vec<_>>() {
                        outbox.remove_app(gone);
                    }
                    for a in apps {
                        outbox.set_app(a.app_id, a.url, a.secret.into_bytes());
                    }
                }
            },
            Some((d, ok)) = done_rx.recv() => outbox.done(&d, ok, Instant::now()),
            _ = async { match wake { Some(at) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {}
        }
    }
}

/// One try: true when the receiver answered 2xx.
async fn deliver(dialer: &Dialer, d: &Delivery, timeout: Duration) -> bool {
    let headers = [
        ("content-type", "application/json"),
        ("user-agent", concat!("callbox/", env!("CARGO_PKG_VERSION"))),
        (SIGNATURE_HEADER, d.signature.as_str()),
        ("callbox-event-id", d.id.as_str()),
    ];
    let path = dialer.url().path().to_string();
    let path = if path.is_empty() { "/".to_string() } else { path };
    match dialer.request("POST", &path, &headers, d.body.clone().into_bytes(), timeout).await {
        Ok(a) if (200..300).contains(&a.status) => {
            tracing::debug!(callbox_event = "webhook", app_id = d.app_id, id = %d.id, "delivered");
            true
        }
        Ok(a) => {
            tracing::warn!(callbox_event = "webhook_failed", app_id = d.app_id, id = %d.id, attempt = d.attempt, status = a.status,
                "the webhook receiver refused the event; retrying later");
            false
        }
        Err(e) => {
            tracing::warn!(callbox_event = "webhook_failed", app_id = d.app_id, id = %d.id, attempt = d.attempt, error = %e,
                "the webhook receiver could not be reached; retrying later");
            false
        }
    }
}
