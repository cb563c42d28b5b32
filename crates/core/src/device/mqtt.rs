//! The device's MQTT side for Home Assistant, as pure data: which topics, which retained
//! discovery documents, what a state change publishes and what a command means. The daemon's
//! MQTT task only moves these over the wire (rumqttc), so the topic layout is tested here.
//!
//! Under `<topic_prefix>` (default `callbox/<user_id>`):
//! - `availability`: `online` / `offline` (retained; `offline` is the last will);
//! - `call`: the call state, `idle`, `ringing_out`, `ringing` or `in_call` (retained);
//! - `ring`: `{"event_type":"ring"}` each time the station rings out (a visitor pressed call);
//! - `door`: `{"event_type":"opened"}` or `{"event_type":"refused","reason":...}`;
//! - commands: `door/open`, `call/start`, `call/hangup` (any payload), which go through the
//!   same call controller as the buttons.
//!
//! Discovery documents go to `<discovery_prefix>/<component>/<node>/<object>/config`.

use serde_json::{Value, json};

use super::call::CallState;

/// What Home Assistant (or anyone on the broker) asks the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Open the door: as the door button (this station's relay, or the call peer's door).
    OpenDoor,
    /// Call: as the call button (ring out, or answer a ring).
    Call,
    /// Hang up: as the leave button (hang up, cancel or decline).
    HangUp,
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: String,
    /// Kept by the broker for new subscribers.
    pub retain: bool,
}

/// A device as Home Assistant sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaDevice {
    /// Where discovery documents go (`homeassistant`).
    pub discovery_prefix: String,
    /// The device's own topics.
    pub topic_prefix: String,
    /// The room user ID (unique per app): the node ID and the entities' unique IDs.
    pub user_id: String,
    /// The display name.
    pub name: String,
    /// Whether it has a door relay of its own (the door entity says "open door" either way:
    /// an indoor unit opens the door of its call).
    pub door: bool,
    /// The software version, for the device registry.
    pub version: String,
}

impl HaDevice {
    /// The node ID: the user ID with what MQTT topics and Home Assistant object IDs do not
    /// take replaced.
    pub fn node(&self) -> String {
        self.user_id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
    }

    fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.topic_prefix.trim_end_matches('/'))
    }

    /// The availability topic (the last will goes here).
    pub fn availability_topic(&self) -> String {
        self.topic("availability")
    }

    /// `online` or `offline`, retained.
    pub fn availability(&self, online: bool) -> Message {
        Message {
            topic: self.availability_topic(),
            payload: if online { "online" } else { "offline" }.into(),
            retain: true,
        }
    }

    /// The command topics to subscribe to.
    pub fn subscriptions(&self) -> Vec<String> {
        ["door/open", "call/start", "call/hangup"].iter().map(|t| self.topic(t)).collect()
    }

    /// What a message on `topic` asks, if it is one of ours.
    pub fn command(&self, topic: &str) -> Option<Command> {
        let leaf = topic.strip_prefix(self.topic_prefix.trim_end_matches('/'))?.strip_prefix('/')?;
        match leaf {
            "door/open" => Some(Command::OpenDoor),
            "call/start" => Some(Command::Call),
            "call/hangup" => Some(Command::HangUp),
            _ => None,
        }
    }

    /// The call state, retained.
    pub fn call_state(&self, s: CallState) -> Message {
        Message { topic: self.topic("call"), payload: s.as_str().into(), retain: true }
    }

    /// A ring (the station rings out).
    pub fn ring(&self) -> Message {
        Message { topic: self.topic("ring"), payload: json!({"event_type": "ring"}).to_string(), retain: false }
    }

    /// The door opened, or why not.
    pub fn door(&self, result: Result<(), &str>) -> Message {
        let payload = match result {
            Ok(()) => json!({"event_type": "opened"}),
            Err(why) => json!({"event_type": "refused", "reason": why}),
        };
        Message { topic: self.topic("door"), payload: payload.to_string(), retain: false }
    }

    /// The retained discovery documents: a doorbell event, a door event, the open-door,
    /// call and hang-up buttons and the call state sensor, all of one device.
    pub fn discovery(&self) -> Vec<Message> {
        let node = self.node();
        let device = json!({
            "identifiers": [format!("callbox_{node}")],
            "name": self.name,
            "manufacturer": "callbox",
            "model": if self.door { "door station" } else { "indoor unit" },
            "sw_version": self.version,
        });
        let common = |object: &str, name: &str| {
            json!({
                "name": name,
                "unique_id": format!("callbox_{node}_{object}"),
                "object_id": format!("{node}_{object}"),
                "availability_topic": self.availability_topic(),
                "device": device,
            })
        };
        let with = |mut base: Value, extra: Value| {
            if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
                b.extend(e);
            }
            base
        };
        let entities = [
            (
                "event",
                "doorbell",
                with(
                    common("doorbell", "Doorbell"),
                    json!({"state_topic": self.topic("ring"), "event_types": ["ring"], "device_class": "doorbell"}),
                ),
            ),
            (
                "event",
                "door",
                with(
                    common("door", "Door"),
                    json!({"state_topic": self.topic("door"), "event_types": ["opened", "refused"]}),
                ),
            ),
            (
                "button",
                "open_door",
                with(common("open_door", "Open door"), json!({"command_topic": self.topic("door/open")})),
            ),
            ("button", "call", with(common("call", "Call"), json!({"command_topic": self.topic("call/start")}))),
            (
                "button",
                "hang_up",
                with(common("hang_up", "Hang up"), json!({"command_topic": self.topic("call/hangup")})),
            ),
            (
                "sensor",
                "call_state",
                with(
                    common("call_state", "Call"),
                    json!({"state_topic": self.topic("call"), "device_class": "enum",
                        "options": ["idle", "ringing_out", "ringing", "in_call"], "icon": "mdi:phone"}),
                ),
            ),
        ];
        entities
            .into_iter()
            .map(|(component, object, doc)| Message {
                topic: format!("{}/{component}/{node}/{object}/config", self.discovery_prefix.trim_end_matches('/')),
                payload: doc.to_string(),
                retain: true,
            })
            .collect()
    }
}

/// A parsed `[mqtt] url`: `mqtt://host[:1883]` or `mqtts://host[:8883]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// TLS (mqtts).
    pub tls: bool,
    /// The host.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `s`.
    pub fn parse(s: &str) -> Result<BrokerUrl, String> {
        let s = s.trim();
        let (tls, rest, default) = if let Some(r) = s.strip_prefix("mqtts://") {
            (true, r, 8883)
        } else if let Some(r) = s.strip_prefix("mqtt://") {
            (false, r, 1883)
        } else {
            return Err(format!("{s}: the broker URL must start with mqtt:// or mqtts://"));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') {
            return Err(format!("{s}: put the credentials in username and password, not the URL"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
                let port = p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| format!("{s}: bad port"))?;
                (h.trim_start_matches('[').trim_end_matches(']').to_string(), port)
            }
            _ => (authority.trim_start_matches('[').trim_end_matches(']').to_string(), default),
        };
        if host.is_empty() {
            return Err(format!("{s}: no host"));
        }
        Ok(BrokerUrl { tls, host, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> HaDevice {
        HaDevice {
            discovery_prefix: "homeassistant".into(),
            topic_prefix: "callbox/door-1".into(),
            user_id: "door-1".into(),
            name: "Front door".into(),
            door: true,
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn discovery_names_one_device_with_its_entities_retained() {
        let d = device();
        let docs = d.discovery();
        let topics: Vec<&str> = docs.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/event/door-1/doorbell/config",
                "homeassistant/event/door-1/door/config",
                "homeassistant/button/door-1/open_door/config",
                "homeassistant/button/door-1/call/config",
                "homeassistant/button/door-1/hang_up/config",
                "homeassistant/sensor/door-1/call_state/config",
            ]
        );
        assert!(docs.iter().all(|m| m.retain));
        let bell: Value = serde_json::from_str(&docs[0].payload).unwrap();
        assert_eq!(bell["event_types"], json!(["ring"]));
        assert_eq!(bell["device_class"], "doorbell");
        assert_eq!(bell["state_topic"], "callbox/door-1/ring");
        assert_eq!(bell["availability_topic"], "callbox/door-1/availability");
        assert_eq!(bell["device"]["identifiers"], json!(["callbox_door-1"]));
        let ids: std::collections::HashSet<String> =
            docs.iter().map(|m| serde_json::from_str::<Value>(&m.payload).unwrap()["unique_id"].to_string()).collect();
        assert_eq!(ids.len(), docs.len(), "unique IDs");
        let open: Value = serde_json::from_str(&docs[2].payload).unwrap();
        assert_eq!(d.command(open["command_topic"].as_str().unwrap()), Some(Command::OpenDoor));
    }

    #[test]
    fn commands_states_and_events() {
        let d = device();
        assert_eq!(
            d.subscriptions(),
            ["callbox/door-1/door/open", "callbox/door-1/call/start", "callbox/door-1/call/hangup"]
        );
        assert_eq!(d.command("callbox/door-1/call/start"), Some(Command::Call));
        assert_eq!(d.command("callbox/door-1/call/hangup"), Some(Command::HangUp));
        assert_eq!(d.command("callbox/door-10/call/start"), None);
        assert_eq!(d.command("callbox/door-1/call"), None);
        assert_eq!(d.call_state(CallState::RingingOut).payload, "ringing_out");
        assert!(d.call_state(CallState::Idle).retain);
        assert!(!d.ring().retain);
        assert_eq!(d.door(Err("relay: EIO")).payload, r#"{"event_type":"refused","reason":"relay: EIO"}"#);
        assert_eq!(
            d.availability(false),
            Message { topic: "callbox/door-1/availability".into(), payload: "offline".into(), retain: true }
        );
        let odd = HaDevice { user_id: "flat 12/a".into(), ..device() };
        assert_eq!(odd.node(), "flat_12_a");
    }

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerUrl::parse("mqtt://hass.local").unwrap(),
            BrokerUrl { tls: false, host: "hass.local".into(), port: 1883 }
        );
        assert_eq!(
            BrokerUrl::parse("mqtts://10.0.0.2:8884/").unwrap(),
            BrokerUrl { tls: true, host: "10.0.0.2".into(), port: 8884 }
        );
        assert_eq!(
            BrokerUrl::parse("mqtt://[::1]:1884").unwrap(),
            BrokerUrl { tls: false, host: "::1".into(), port: 1884 }
        );
        for bad in ["http://x", "mqtt://", "mqtt://u:p@host", "mqtt://host:0", "mqtt://host:x"] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
