//! The server's pure parts: rate limits and device keys.

pub mod device_keys;
pub mod limits;
