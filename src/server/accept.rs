//! The accept loop: a task per connection, the connection limit, and the
//! first byte that says which door a connection takes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rpc_core::Error;
use rpc_core::frame::ProtocolError;
use rpc_core::peer::Peer;
use rpc_core::server::ServerState;
use rpc_transport::Limits;
use rpc_transport::admission::{Admission, Newcomer};
#[cfg(feature = "json")]
use rpc_transport::http::Front;
use rpc_transport::sniff::Protocol;
use rpc_transport::stream::{ByteStream, Listener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::no_preface;

/// What every connection's task needs from the server, shared by them all.
pub(super) struct Doors {
    pub(super) state: Arc<ServerState>,
    pub(super) limits: Limits,
    pub(super) preface_timeout: Duration,
    /// Whether clients of the binary protocol are served.
    pub(super) binary: bool,
    /// The HTTP door, if JSON callers are served.
    #[cfg(feature = "json")]
    pub(super) json: Option<Front>,
    /// TLS on every door, when set.
    #[cfg(feature = "tls")]
    pub(super) tls: Option<rpc_transport::tls::Acceptor>,
}

/// How long to pause accepting after an error such as "too many open files",
/// so a full file table does not become a busy loop.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// "Too many open files", for the process and for the system (Linux and
/// the BSDs agree on both numbers).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

/// A connection accepted, with its room under the connection limit.
type Accepted<S> = (OwnedSemaphorePermit, std::io::Result<(S, Peer)>);

pub(super) async fn accept_loop<L: Listener>(listener: L, doors: Arc<Doors>, max_connections: usize) {
    // Owning every connection task here means aborting this future (stop, or
    // the end of a shutdown's grace period) aborts them all.
    let mut connections = JoinSet::new();
    let shutdown = &doors.state.shutdown;
    let room = Arc::new(Semaphore::new(max_connections));
    let admission = Admission::new();
    // A stream, so that a connection accepted while waiting for room is
    // kept when another branch of the loop wakes first.
    let accepted = futures::stream::unfold(
        (listener, Arc::clone(&room), admission.clone(), max_connections),
        |(mut listener, room, admission, max)| async move {
            let accepted = accept_with_room(&mut listener, &room, &admission, max).await;
            Some((accepted, (listener, room, admission, max)))
        },
    );
    // Boxed, so that dropping it at shutdown closes the listener.
    let mut accepted = Box::pin(accepted);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Some((room_taken, accepted)) = accepted.next() => match accepted {
                Ok((stream, peer)) => {
                    let newcomer = admission.admit();
                    connections.spawn(serve_stream(stream, peer, Arc::clone(&doors), newcomer, room_taken));
                }
                Err(err) => {
                    drop(room_taken);
                    // Out of file descriptors, before the connection limit:
                    // a silent connection gives its descriptor back.
                    let out_of_descriptors = matches!(err.raw_os_error(), Some(EMFILE | ENFILE));
                    if out_of_descriptors && admission.evict_oldest() {
                        tracing::debug!("out of file descriptors; closed the oldest silent connection");
                        tokio::task::yield_now().await;
                    } else {
                        tracing::warn!(error = %err, "accepting a connection failed; pausing before the next accept");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            },
        }
    }
    // Graceful shutdown: refuse new connections (dropping the stream drops
    // the listener), let the open ones drain.
    drop(accepted);
    while connections.join_next().await.is_some() {}
}

/// The next connection, once there is room for it. At the limit, a
/// connection that knocks makes the oldest connection that has not spoken
/// yet close; if every connection has spoken, it waits for one to end (and
/// the clients behind it wait in the kernel's accept queue).
async fn accept_with_room<L: Listener>(
    listener: &mut L,
    room: &Arc<Semaphore>,
    admission: &Admission,
    max_connections: usize,
) -> Accepted<L::Stream> {
    if let Ok(taken) = Arc::clone(room).try_acquire_owned() {
        return (taken, listener.accept().await);
    }
    let accepted = listener.accept().await;
    if accepted.is_ok() && !admission.evict_oldest() {
        tracing::warn!(
            max_connections,
            "at the connection limit; a new connection waits until one closes"
        );
    }
    // The semaphore is never closed.
    let taken = loop {
        if let Ok(taken) = Arc::clone(room).acquire_owned().await {
            break taken;
        }
    };
    (taken, accepted)
}

async fn serve_stream<S: ByteStream>(
    mut stream: S,
    peer: Peer,
    doors: Arc<Doors>,
    newcomer: Newcomer,
    _room: OwnedSemaphorePermit,
) {
    // One byte tells TLS, the binary protocol and HTTP apart. The preface
    // timeout covers the wait for it, the TLS handshake, and the rest of
    // the preface.
    let deadline = tokio::time::Instant::now() + doors.preface_timeout;
    let Some((protocol, first)) = first_byte(&mut stream, &peer, &doors, &newcomer, deadline).await else {
        return;
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = &doors.tls {
        // Boxed: inline, a TLS session's state would make every plaintext
        // connection's task as large as its own.
        Box::pin(serve_tls(
            stream, protocol, first, peer, tls, &doors, newcomer, deadline,
        ))
        .await;
        return;
    }
    route(stream, protocol, first, peer, &doors, newcomer, deadline).await;
}

/// Runs the TLS handshake, then serves the connection inside it; refuses a
/// client that speaks plaintext.
#[cfg(feature = "tls")]
#[allow(clippy::too_many_arguments)]
async fn serve_tls<S: ByteStream>(
    mut stream: S,
    protocol: Protocol,
    first: u8,
    peer: Peer,
    tls: &rpc_transport::tls::Acceptor,
    doors: &Doors,
    newcomer: Newcomer,
    deadline: tokio::time::Instant,
) {
    let shutdown = &doors.state.shutdown;
    if protocol != Protocol::Tls {
        // Bounded like a handshake: a peer that never reads the refusal
        // costs its socket until the deadline, no longer.
        let refusing = rpc_transport::tls::accept::refuse_plaintext(&mut stream, protocol);
        tokio::select! {
            refused = tokio::time::timeout_at(deadline, refusing) => {
                if let Ok(why) = refused {
                    tracing::info!(%peer, "{why}");
                }
            }
            () = shutdown.cancelled() => {}
            () = newcomer.evicted() => {}
        }
        return;
    }
    let accepting = tls.accept(rpc_transport::sniff::Rewind::new(first, stream), peer.clone());
    let accepted = tokio::select! {
        accepted = tokio::time::timeout_at(deadline, accepting) => accepted,
        () = shutdown.cancelled() => return,
        () = newcomer.evicted() => {
            tracing::debug!(%peer, "closed a connection whose TLS handshake had not finished, to make room");
            return;
        }
    };
    let (mut stream, peer) = match accepted {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(why)) => {
            tracing::info!(%peer, error = %why, "refused a TLS connection");
            return;
        }
        Err(_) => {
            tracing::info!(
                %peer,
                timeout = ?doors.preface_timeout,
                "refused a TLS connection: its handshake did not finish within the preface timeout"
            );
            return;
        }
    };
    let Some((protocol, first)) = first_byte(&mut stream, &peer, doors, &newcomer, deadline).await else {
        return;
    };
    route(stream, protocol, first, peer, doors, newcomer, deadline).await;
}

/// A connection's first byte, and what it says the connection speaks;
/// `None` if the connection ended, stayed silent past `deadline`, or was
/// closed to make room (each logged).
async fn first_byte<S: ByteStream>(
    stream: &mut S,
    peer: &Peer,
    doors: &Doors,
    newcomer: &Newcomer,
    deadline: tokio::time::Instant,
) -> Option<(Protocol, u8)> {
    let shutdown = &doors.state.shutdown;
    let sniffed = tokio::select! {
        sniffed = tokio::time::timeout_at(deadline, rpc_transport::sniff::sniff(stream)) => sniffed,
        // A graceful shutdown does not wait for half-open handshakes.
        () = shutdown.cancelled() => return None,
        () = newcomer.evicted() => {
            tracing::debug!(%peer, "closed a connection that sent nothing, to make room");
            return None;
        }
    };
    match sniffed {
        Ok(Ok(Some(sniffed))) => Some(sniffed),
        Ok(Ok(None)) => None,
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "reading a new connection failed");
            None
        }
        Err(_) => {
            tracing::info!(%peer, error = %no_preface(doors.preface_timeout), "refused a connection");
            None
        }
    }
}

/// Serves a connection by the door its first byte chose.
async fn route<S: ByteStream>(
    stream: S,
    protocol: Protocol,
    first: u8,
    peer: Peer,
    doors: &Doors,
    newcomer: Newcomer,
    deadline: tokio::time::Instant,
) {
    let shutdown = &doors.state.shutdown;
    #[cfg(feature = "json")]
    if let (Protocol::Http, Some(front)) = (protocol, &doors.json) {
        let stream = rpc_transport::sniff::Rewind::new(first, stream);
        // Boxed: inline, the HTTP connection's state would make every
        // binary connection's task as large as its own.
        Box::pin(front.serve(stream, peer, newcomer, shutdown.child_token())).await;
        return;
    }
    if protocol == Protocol::Binary && !doors.binary {
        tracing::info!(%peer, "refused a binary-protocol connection: this server serves JSON-RPC only (`Server::binary(false)`)");
        return;
    }
    let establishing = rpc_transport::stream::accept(stream, peer.clone(), doors.limits, Some(first));
    let established = tokio::select! {
        established = tokio::time::timeout_at(deadline, establishing) => {
            established.unwrap_or_else(|_| Err(no_preface(doors.preface_timeout)))
        }
        () = shutdown.cancelled() => return,
        () = newcomer.evicted() => {
            tracing::debug!(%peer, "closed a connection whose preface had not arrived, to make room");
            return;
        }
    };
    drop(newcomer);
    match established {
        Ok(conn) => rpc_core::server::serve_connection(Arc::clone(&doors.state), conn).await,
        // `stream::accept` has already said so, in words.
        Err(Error::Protocol(ProtocolError::HttpPeer)) => {}
        Err(err) => tracing::info!(%peer, error = %err, "refused a connection"),
    }
}
