//! `[mqtt]`: the device on an MQTT broker for Home Assistant (discovery, the doorbell, the
//! door, the call state, availability with a last will, and commands). The topics are
//! [`callbox_core::device::mqtt`]'s; this task only moves them with rumqttc, whose TLS runs
//! on callbox's own rustls configuration (ring, the same CA handling as `[server]`).
//!
//! The broker is never in a call's way: the daemon hands updates over with `try_send` and
//! goes on; the task reconnects by itself (rumqttc reconnects on the next poll; the delay
//! between tries is the one back-off policy), and every connection starts with the retained
//! discovery documents, `online` and the call state again.

use std::time::Duration;

use callbox_core::device::call::CallState;
pub use callbox_core::device::mqtt::{BrokerUrl, Command, HaDevice, Message};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::engine::ReconnectPolicy;

/// `[mqtt]` (opt-in: without the section nothing connects).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
    pub url: String,
    /// The broker user (empty: none).
    #[serde(default)]
    pub username: String,
    /// Its password.
    #[serde(default)]
    pub password: String,
    /// A private CA (PEM) for an mqtts broker; empty: the system's roots.
    #[serde(default)]
    pub ca_file: String,
    /// Where Home Assistant looks for discovery documents.
    #[serde(default = "default_discovery")]
    pub discovery_prefix: String,
    /// The device's own topics; empty: `callbox/<user_id>`.
    #[serde(default)]
    pub topic_prefix: String,
    /// The MQTT client ID; empty: `callbox-<user_id>`.
    #[serde(default)]
    pub client_id: String,
}

fn default_discovery() -> String {
    "homeassistant".into()
}

impl MqttSection {
    /// Checks what the types cannot: the URL, the prefixes (no MQTT wildcards), the CA file.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        BrokerUrl::parse(&self.url).map_err(|e| ("mqtt.url", e))?;
        for (key, v) in [("mqtt.discovery_prefix", &self.discovery_prefix), ("mqtt.topic_prefix", &self.topic_prefix)] {
            if v.contains(['+', '#', '\0']) || v.starts_with('/') {
                return Err((key, format!("{v:?}: a topic prefix has no +, # or leading /")));
            }
        }
        if self.discovery_prefix.is_empty() {
            return Err(("mqtt.discovery_prefix", "must not be empty (Home Assistant's is homeassistant)".into()));
        }
        if !self.ca_file.is_empty() {
            crate::tls::client::roots(Some(std::path::Path::new(&self.ca_file)))
                .map_err(|e| ("mqtt.ca_file", e.to_string()))?;
        }
        if !self.password.is_empty() && self.username.is_empty() {
            return Err(("mqtt.username", "a password needs a username".into()));
        }
        Ok(())
    }
}

/// What the daemon tells Home Assistant.
#[derive(Debug)]
pub enum Update {
    /// The call state changed.
    State(CallState),
    /// The station rings out (a visitor pressed call).
    Ring,
    /// The door relay pulsed, or failed.
    Door(Result<(), String>),
    /// The daemon stops: `offline` now, then disconnect.
    Stop(oneshot::Sender<()>),
}

/// A handle to the MQTT task.
pub struct Mqtt {
    tx: mpsc::Sender<Update>,
    state: Arc<AtomicU8>,
}

/// The broker connection as `callbox status` shows it.
const CONNECTING: u8 = 0;
const CONNECTED: u8 = 1;
const UNREACHABLE: u8 = 2;

impl Mqtt {
    /// Starts the task for `device` on `section`'s broker; the commands arrive on the
    /// returned receiver.
    pub fn spawn(section: &MqttSection, device: HaDevice) -> Result<(Mqtt, mpsc::Receiver<Command>), String> {
        let url = BrokerUrl::parse(&section.url)?;
        let client_id =
            if section.client_id.is_empty() { format!("callbox-{}", device.node()) } else { section.client_id.clone() };
        let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
        opts.set_keep_alive(Duration::from_secs(15));
        opts.set_clean_session(true);
        opts.set_last_will(LastWill::new(device.availability_topic(), "offline", QoS::AtLeastOnce, true));
        if !section.username.is_empty() {
            opts.set_credentials(section.username.clone(), section.password.clone());
        }
        if url.tls {
            let ca = (!section.ca_file.is_empty()).then(|| std::path::PathBuf::from(&section.ca_file));
            let tls = crate::tls::client::config(ca.as_deref(), &[]).map_err(|e| format!("mqtt TLS: {e}"))?;
            opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        let (tx, rx) = mpsc::channel(64);
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let state = Arc::new(AtomicU8::new(CONNECTING));
        tokio::spawn(run(opts, section.url.clone(), device, rx, cmd_tx, state.clone()));
        Ok((Mqtt { tx, state }, cmd_rx))
    }

    /// `connecting`, `connected` or `unreachable`.
    pub fn state(&self) -> &'static str {
        match self.state.load(Ordering::Relaxed) {
            CONNECTED => "connected",
            UNREACHABLE => "unreachable",
            _ => "connecting",
        }
    }

    /// Hands over an update without waiting (a full queue drops it: the broker is behind).
    pub fn update(&self, u: Update) {
        if self.tx.try_send(u).is_err() {
            tracing::debug!("mqtt: the task is behind; an update is dropped");
        }
    }

    /// Publishes `offline` and disconnects (at most `within`).
    pub async fn stop(&self, within: Duration) {
        let (done, rx) = oneshot::channel();
        if self.tx.try_send(Update::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }
}

fn publish(client: &AsyncClient, m: Message) {
    if let Err(e) = client.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload) {
        tracing::debug!(error = %e, "mqtt: publish not queued");
    }
}

async fn run(
    opts: MqttOptions,
    url: String,
    device: HaDevice,
    mut rx: mpsc::Receiver<Update>,
    commands: mpsc::Sender<Command>,
    shown: Arc<AtomicU8>,
) {
    let (client, mut events) = AsyncClient::new(opts, 64);
    let policy = ReconnectPolicy::doubling(Duration::from_millis(500), Duration::from_secs(30));
    let (mut state, mut connected, mut failures) = (CallState::Idle, false, 0u32);
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let update = if let Some(at) = retry_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => { retry_at = None; continue; }
                u = rx.recv() => u,
            }
        } else {
            tokio::select! {
                ev = events.poll() => {
                    match ev {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            tracing::info!(callbox_event = "mqtt_connected", broker = %url, after_failures = failures,
                                "mqtt: connected; Home Assistant discovery published");
                            connected = true;
                            shown.store(CONNECTED, Ordering::Relaxed);
                            failures = 0;
                            for m in device.discovery() {
                                publish(&client, m);
                            }
                            publish(&client, device.availability(true));
                            publish(&client, device.call_state(state));
                            for t in device.subscriptions() {
                                if let Err(e) = client.try_subscribe(t, QoS::AtLeastOnce) {
                                    tracing::debug!(error = %e, "mqtt: subscribe not queued");
                                }
                            }
                        }
                        Ok(Event::Incoming(Packet::Publish(p))) => match device.command(&p.topic) {
                            Some(c) => {
                                tracing::info!(callbox_event = "mqtt_command", topic = %p.topic, "mqtt: {c:?} asked");
                                let _ = commands.try_send(c);
                            }
                            None => tracing::debug!(topic = %p.topic, "mqtt: message on a topic that is not ours"),
                        },
                        Ok(_) => {}
                        Err(e) => {
                            if connected || failures == 0 {
                                tracing::warn!(callbox_event = "mqtt_unreachable", broker = %url, error = %e,
                                    "mqtt: the broker is unreachable; retrying (calls are not affected)");
                            }
                            connected = false;
                            shown.store(UNREACHABLE, Ordering::Relaxed);
                            retry_at = Some(tokio::time::Instant::now() + policy.ceiling(failures));
                            failures = failures.saturating_add(1);
                        }
                    }
                    continue;
                }
                u = rx.recv() => u,
            }
        };
        let Some(update) = update else { return };
        match update {
            Update::State(s) => {
                state = s;
                if connected {
                    publish(&client, device.call_state(s));
                }
            }
            // Events while disconnected are not kept: a ring an hour late is noise.
            Update::Ring if connected => publish(&client, device.ring()),
            Update::Door(r) if connected => {
                publish(&client, device.door(r.as_ref().map(|_| ()).map_err(String::as_str)))
            }
            Update::Ring | Update::Door(_) => {}
            Update::Stop(done) => {
                if connected {
                    publish(&client, device.availability(false));
                    let _ = client.try_disconnect();
                    // Let the event loop write the last messages.
                    let flush = async {
                        while let Ok(ev) = events.poll().await {
                            if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                break;
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
                }
                let _ = done.send(());
                return;
            }
        }
    }
}
