//! JSON-RPC over WebSocket: the upgrade, then the connection's messages to
//! and from its [`Session`].

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rpc_core::peer::Peer;
use rpc_core::server::json::{Caller, JsonRpc, Session};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::{Answer, HttpConfig};

/// An accepted upgrade, to be served once the HTTP connection lets go of
/// its stream.
pub(super) struct Upgrade {
    upgrade: OnUpgrade,
    json: Arc<JsonRpc>,
    /// The connection's caller: the same connection, now a WebSocket.
    caller: Caller,
}

/// Whether a request asks for a WebSocket.
pub(super) fn is_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|upgrade| upgrade.to_str().ok())
        .is_some_and(|upgrade| upgrade.eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket handshake (RFC 6455, version 13), or says why it
/// is refused.
pub(super) fn accept(
    mut request: Request<Incoming>,
    json: &Arc<JsonRpc>,
    caller: &Caller,
) -> Result<(Answer, Upgrade), String> {
    let headers = request.headers();
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err("a WebSocket upgrade needs Sec-WebSocket-Version: 13".to_owned());
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err("a WebSocket upgrade needs a Sec-WebSocket-Key".to_owned());
    };
    // The deadline header of the upgrade request applies to every call
    // made over the socket.
    let timeout = match headers.get(super::TIMEOUT_HEADER).map(super::parse_timeout) {
        None => None,
        Some(Ok(timeout)) => Some(timeout),
        Some(Err(bad)) => return Err(bad),
    };
    // So do its headers, as metadata.
    let metadata = super::metadata(headers)?;
    let accept = derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(&mut request);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let upgrade = Upgrade {
        upgrade,
        json: Arc::clone(json),
        caller: caller.with_timeout(timeout).with_metadata(metadata),
    };
    Ok((response, upgrade))
}

/// Serves an upgraded connection: every message to the session, every
/// answer and stream item back, until either side closes or the server
/// shuts down (then calls in progress finish, and the socket closes).
pub(super) async fn serve(upgrade: Upgrade, peer: Peer, config: &HttpConfig, shutdown: CancellationToken) {
    let io = match upgrade.upgrade.await {
        Ok(io) => io,
        Err(err) => {
            tracing::debug!(%peer, error = %err, "the WebSocket upgrade did not complete");
            return;
        }
    };
    let settings = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(config.max_body))
        .max_frame_size(Some(config.max_body))
        // Pongs to a flood of pings from a client that does not read would
        // otherwise pile up here.
        .max_write_buffer_size(config.max_body.saturating_mul(2));
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(io), Role::Server, Some(settings)).await;
    let (mut sink, mut stream) = socket.split();
    let (mut session, mut outgoing) = Session::new(upgrade.json, upgrade.caller);
    let idle = config.idle_timeout;
    let reading = async move {
        let shutting_down = loop {
            let next = tokio::select! {
                next = tokio::time::timeout(idle, stream.next()) => next,
                () = shutdown.cancelled() => break true,
            };
            match next {
                Ok(Some(Ok(Message::Text(text)))) => {
                    // Waits while the socket is full of calls; a shutdown
                    // still ends the wait.
                    tokio::select! {
                        () = session.message(Bytes::from(text)) => {}
                        () = shutdown.cancelled() => break true,
                    }
                }
                Ok(Some(Ok(Message::Binary(bytes)))) => {
                    tokio::select! {
                        () = session.message(bytes) => {}
                        () = shutdown.cancelled() => break true,
                    }
                }
                // Pings are answered by the WebSocket layer itself.
                Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                Ok(Some(Ok(Message::Close(_))) | None) => break false,
                Ok(Some(Err(err))) => {
                    tracing::debug!(%peer, error = %err, "WebSocket read failed");
                    break false;
                }
                // Quiet, but a call (a long stream, say) is still running.
                Err(_) if !session.is_idle() => {}
                Err(_) => {
                    tracing::debug!(%peer, ?idle, "closing an idle WebSocket");
                    break false;
                }
            }
        };
        if shutting_down {
            // Calls already taken are answered; nothing new is read.
            session.finish().await;
        }
        // Otherwise the caller has gone: dropping the session stops its
        // calls, as a Rust client's dropped future does.
        drop(session);
    };
    let writing = async move {
        while let Some(message) = outgoing.recv().await {
            let Ok(text) = Utf8Bytes::try_from(message) else {
                continue;
            };
            if sink.send(Message::Text(text)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    tokio::join!(reading, writing);
}
