//! The one way a task sleeps until its sans-IO core's next deadline.

use std::time::Instant;

/// Sleeps until `deadline`, or for ever without one (a core with nothing due).
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}
