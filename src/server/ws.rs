//! One WebSocket connection at `/ws/v1`: a reader that decodes and size-checks messages for
//! the hub, and a writer that drains the connection's queue.

use axum::extract::ws::{Message, WebSocket};
use futures_util::{SinkExt, StreamExt};

use super::accept::Pending;
use super::hub::{Hub, ToConn};
use crate::proto::{ClientMsg, ErrorCode};

/// Frames larger than this close the connection outright (before any parsing).
pub const MAX_FRAME_BYTES: usize = 1 << 20;
/// Read and write buffer of each WebSocket (grown as needed for a larger frame).
pub const BUFFER_BYTES: usize = 4 * 1024;

/// Serves one upgraded socket until it closes. `pending` is the connection's slot among
/// the unauthenticated ones, given back at login.
pub async fn serve(socket: WebSocket, hub: Hub, pending: Option<Pending>, peer: Option<std::net::IpAddr>) {
    let (conn, mut queue, _live) = hub.connect(peer).await;
    let (mut sink, mut stream) = socket.split();
    let writer = tokio::spawn(async move {
        // Held until login: the connection counts as unauthenticated until then.
        let mut pending = pending;
        while let Some(item) = queue.recv().await {
            match item {
                ToConn::Authenticated => drop(pending.take()),
                ToConn::Text(t) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                ToConn::Close => break,
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = sink.close().await;
    });
    let max = hub.max_message_bytes();
    let mut writer = writer;
    loop {
        let frame = tokio::select! {
            f = stream.next() => f,
            _ = &mut writer => break, // the hub closed this connection
        };
        let text = match frame {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                hub.invalid(conn, ErrorCode::MALFORMED_MESSAGE, "binary frames are not part of the protocol".into())
                    .await;
                continue;
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue, // ping/pong are answered by the library
        };
        if text.len() > max {
            hub.invalid(conn, ErrorCode::MESSAGE_TOO_LARGE, format!("message of {} bytes exceeds {max}", text.len()))
                .await;
            continue;
        }
        match serde_json::from_str::<ClientMsg>(text.as_str()) {
            Ok(msg) => hub.message(conn, msg).await,
            Err(e) => hub.invalid(conn, ErrorCode::MALFORMED_MESSAGE, format!("cannot decode message: {e}")).await,
        }
    }
    hub.disconnect(conn).await;
    writer.abort();
}
