//! Webhooks: what the server tells an integrator's backend, as a sans-IO part. The registry
//! says what happened ([`Hook`]); the [`Outbox`] keeps each app's events in order per room,
//! signs each delivery ([`sign`]) and decides when to retry; the server's delivery task only
//! moves the requests and their results.
//!
//! The interface integrators code against: a JSON `POST` to the app's `webhook_url` with
//! `Callbox-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` and a body
//! with `id` (the same on every retry: receivers deduplicate by it), `event`, `app_id`,
//! `room_id`, `ts` (unix milliseconds of the event) and the event's own fields.

mod event;
mod outbox;
pub mod sign;

pub use event::{Hook, HookEvent};
pub use outbox::{AppStats, Delivery, Outbox, OutboxConfig, Pushed};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Callbox-Signature";
