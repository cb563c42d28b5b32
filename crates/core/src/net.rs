//! Addresses of a connection, as the shells report them to the cores.

use std::net::SocketAddr;

/// Where a connection to the server runs: this host's address on it and the server's
/// (resolved and connected, so no lookup is needed to know the route again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// This end.
    pub local: SocketAddr,
    /// The server's end.
    pub server: SocketAddr,
}
