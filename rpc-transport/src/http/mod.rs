//! The HTTP door: JSON-RPC 2.0 over HTTP/1.1 (one request or a batch per
//! `POST`, keep-alive) and over WebSocket (`GET` with an upgrade, on the
//! same path), for callers in any language, on the same port as the binary
//! protocol. hyper speaks HTTP, tokio-tungstenite the WebSocket; the calls
//! themselves go to the server's JSON-RPC front
//! (`rpc_core::server::json::JsonRpc`).
//!
//! | request | answer |
//! | --- | --- |
//! | `POST <path>` (and `POST /`) | the JSON-RPC response, or `204` when there is none (notifications) |
//! | `GET <path>` with `Upgrade: websocket` | a WebSocket of JSON-RPC messages |
//! | `GET <path>/openrpc.json` | the OpenRPC document |
//! | `OPTIONS` | a CORS preflight answer, for the allowed origins |
//! | anything else | `404` or `405`, saying what is served here |

mod cors;
mod ws;

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rpc_core::metadata::{Metadata, MetadataValue};
use rpc_core::peer::Peer;
use rpc_core::server::json::{Caller, JsonRpc};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;

use crate::admission::Newcomer;

pub use cors::Cors;

/// What every request gets back: a whole body, never a stream.
type Answer = Response<Full<Bytes>>;

/// How the HTTP door serves.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where JSON-RPC requests go. Default `/rpc` (`/` is accepted too).
    pub path: String,
    /// Which web pages may call from other origins.
    pub cors: Cors,
    /// The largest request body, in bytes. Default 16 MiB.
    pub max_body: usize,
    /// How long a request's headers may take to arrive, which is also how
    /// long a kept-alive connection may sit idle between requests.
    /// Default 30 s.
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive. Default 30 s.
    pub body_timeout: Duration,
    /// How long a WebSocket may sit with no message and no call in
    /// progress. Default 10 minutes.
    pub idle_timeout: Duration,
    /// How long one write to the client may wait for it to read, before the
    /// client is taken to have stopped reading and the connection closes.
    /// Default 30 s.
    pub write_timeout: Duration,
    /// What `GET /metrics` answers (Prometheus text), if anything.
    pub metrics: Option<MetricsPage>,
}

/// Renders the server's metrics as text (Prometheus's exposition format,
/// say), for `GET /metrics`.
#[derive(Clone)]
pub struct MetricsPage(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsPage")
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            path: "/rpc".to_owned(),
            cors: Cors::default(),
            max_body: rpc_core::frame::DEFAULT_MAX_FRAME_LEN,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(30),
            metrics: None,
        }
    }
}

/// The header a caller sets a call's deadline with: `rpc-timeout: 500ms`
/// (`ms`, `s`, `m` or `h`; a bare number is milliseconds).
pub const TIMEOUT_HEADER: &str = "rpc-timeout";

/// The HTTP door of one server: its JSON-RPC front and its settings.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Front {
    json: Arc<JsonRpc>,
    config: Arc<HttpConfig>,
}

impl Front {
    /// A door to `json`, served as `config` says.
    pub fn new(json: Arc<JsonRpc>, config: HttpConfig) -> Front {
        Front {
            json,
            config: Arc::new(config),
        }
    }

    /// Serves one HTTP connection until the client leaves or `shutdown` is
    /// cancelled (then it finishes the request in progress and closes). A
    /// WebSocket upgrade goes on serving in this same task. Until its first
    /// request arrives the connection is a `newcomer`, closed if the server
    /// evicts it.
    pub async fn serve<S>(&self, stream: S, peer: Peer, newcomer: Newcomer, shutdown: CancellationToken)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let config = Arc::clone(&self.config);
        let caller = Caller::new(&self.json, peer.clone());
        let evicted = newcomer.eviction();
        // An upgraded request's handle comes back here, to be served after
        // the HTTP connection hands over its stream.
        let (upgrades, mut upgraded) = mpsc::channel(1);
        let door = Arc::new(Door {
            json: Arc::clone(&self.json),
            config: Arc::clone(&config),
            caller,
            upgrades,
            newcomer: Mutex::new(Some(newcomer)),
        });
        let service = hyper::service::service_fn(move |request| {
            let door = Arc::clone(&door);
            async move { Ok::<_, Infallible>(door.answer(request).await) }
        });
        // A client that stops reading cannot hold the connection (and the
        // answers queued for it) for ever.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(config.write_timeout));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(Box::pin(stream)), service)
            .with_upgrades();
        tokio::pin!(connection);
        let served = tokio::select! {
            served = connection.as_mut() => served,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            // Only a connection that has sent no request is evicted.
            () = evicted.cancelled() => {
                tracing::debug!(%peer, "closed an HTTP connection that sent no request, to make room");
                return;
            }
        };
        if let Err(err) = served {
            tracing::debug!(%peer, error = %err, "HTTP connection ended");
        }
        if let Ok(socket) = upgraded.try_recv() {
            ws::serve(socket, peer, &config, shutdown).await;
        }
    }
}

/// What answers each request of one connection.
struct Door {
    json: Arc<JsonRpc>,
    config: Arc<HttpConfig>,
    caller: Caller,
    upgrades: mpsc::Sender<ws::Upgrade>,
    /// The connection's place among the newcomers, until it sends a request.
    newcomer: Mutex<Option<Newcomer>>,
}

impl Door {
    async fn answer(&self, request: Request<Incoming>) -> Answer {
        drop(
            self.newcomer
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let origin = self.config.cors.allowed(request.headers().get(header::ORIGIN));
        let mut response = self.route(request).await;
        if let Some(origin) = origin {
            cors::allow(&mut response, origin);
        }
        response
    }

    async fn route(&self, request: Request<Incoming>) -> Answer {
        if let Some(refused) = cors::refusal(&self.config.cors, &request) {
            return refused;
        }
        let path = request.uri().path();
        let rpc = path == self.config.path || path == "/";
        let discovery = path.strip_suffix("/openrpc.json") == Some(self.config.path.trim_end_matches('/'));
        match (request.method(), rpc, discovery) {
            (&Method::OPTIONS, _, _) => cors::preflight(&self.config.cors, &request),
            (&Method::POST, true, _) => self.post(request).await,
            (&Method::GET, true, _) if ws::is_upgrade(&request) => {
                match ws::accept(request, &self.json, &self.caller) {
                    Ok((response, upgrade)) => {
                        let _ = self.upgrades.try_send(upgrade);
                        response
                    }
                    // The caller meant to leave HTTP; a refused upgrade ends the connection.
                    Err(why) => closing(text(StatusCode::BAD_REQUEST, format!("{why}\n"))),
                }
            }
            (&Method::GET, _, true) => json_response(StatusCode::OK, self.json.discover().to_vec()),
            (&Method::GET, false, false) if path == "/metrics" && self.config.metrics.is_some() => {
                let page = self
                    .config
                    .metrics
                    .as_ref()
                    .map(|page| (page.0)())
                    .unwrap_or_default();
                let mut answer = Response::new(Full::new(Bytes::from(page)));
                answer.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                answer
            }
            (_, true, _) => {
                let mut answer = text(
                    StatusCode::METHOD_NOT_ALLOWED,
                    format!(
                        "POST JSON-RPC 2.0 requests to {} (or open a WebSocket there); GET {}/openrpc.json describes the service\n",
                        self.config.path, self.config.path
                    ),
                );
                answer
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST, GET, OPTIONS"));
                answer
            }
            _ => text(
                StatusCode::NOT_FOUND,
                format!("nothing here; JSON-RPC is served at {}\n", self.config.path),
            ),
        }
    }

    async fn post(&self, request: Request<Incoming>) -> Answer {
        let max = self.config.max_body;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|len| len.to_str().ok())
            .and_then(|len| len.parse::<u64>().ok());
        if let Some(len) = declared.filter(|len| *len > max as u64) {
            return too_large(Some(len), max);
        }
        let timeout = match request.headers().get(TIMEOUT_HEADER).map(parse_timeout) {
            None => None,
            Some(Ok(timeout)) => Some(timeout),
            Some(Err(bad)) => return invalid(StatusCode::BAD_REQUEST, &bad),
        };
        let metadata = match metadata(request.headers()) {
            Ok(metadata) => metadata,
            Err(why) => return invalid(StatusCode::BAD_REQUEST, &why),
        };
        let collecting = Limited::new(request.into_body(), max).collect();
        let body = match tokio::time::timeout(self.config.body_timeout, collecting).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => return too_large(None, max),
            Ok(Err(err)) => {
                return closing(invalid(
                    StatusCode::BAD_REQUEST,
                    &format!("the body did not arrive whole: {err}"),
                ));
            }
            Err(_) => {
                let why = format!(
                    "the body took longer than {:?} to arrive",
                    self.config.body_timeout
                );
                return closing(invalid(StatusCode::REQUEST_TIMEOUT, &why));
            }
        };
        let caller = self.caller.with_timeout(timeout).with_metadata(metadata);
        match self.json.answer(&body, &caller).await {
            Some(answer) => json_response(StatusCode::OK, answer),
            None => empty(StatusCode::NO_CONTENT),
        }
    }
}

/// Headers that are HTTP's own business, or a browser's, and never
/// metadata: hop-by-hop and framing headers, content negotiation, CORS and
/// WebSocket handshakes, and cookies (which a browser attaches to any
/// page's request, so a handler must not mistake them for the caller's
/// choice).
const NOT_METADATA: [&str; 24] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "accept-language",
    "user-agent",
    "origin",
    "referer",
    "cookie",
    "expect",
    "access-control-request-method",
    "access-control-request-headers",
    "cache-control",
    "pragma",
    TIMEOUT_HEADER,
];

/// A request's metadata: its headers, minus HTTP's own ([`NOT_METADATA`],
/// `sec-*`, `proxy-*`), as text (or bytes, for values that are not
/// UTF-8), in their order. Headers whose names cannot be metadata keys are
/// left out, and so are those past the bounds (proxies and CDNs add
/// headers of their own; a request is not refused for them): the
/// metadata holds what fits.
pub(super) fn metadata(headers: &hyper::HeaderMap) -> Result<Metadata, String> {
    let mut metadata = Metadata::new();
    for (name, value) in headers {
        let name = name.as_str();
        if NOT_METADATA.contains(&name) || name.starts_with("sec-") || name.starts_with("proxy-") {
            continue;
        }
        let value = match value.to_str() {
            Ok(text) => MetadataValue::from(text),
            Err(_) => MetadataValue::from(value.as_bytes().to_vec()),
        };
        let mut with = metadata.clone();
        // A repeated header keeps its last value.
        if with.insert(name, value).is_ok() && with.check().is_ok() {
            metadata = with;
        } else {
            tracing::debug!(
                header = name,
                "a request header was left out of the metadata, past its bounds"
            );
        }
    }
    Ok(metadata)
}

/// Reads `rpc-timeout`: `250ms`, `5s`, `2m`, `1h`, or a bare number of
/// milliseconds.
fn parse_timeout(value: &HeaderValue) -> Result<Duration, String> {
    let bad = || format!("the {TIMEOUT_HEADER} header must be a duration such as 500ms or 5s, not {value:?}");
    let text = value.to_str().map_err(|_| bad())?.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let duration = match unit.trim() {
        "" | "ms" => Duration::from_millis(number),
        "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number.saturating_mul(60)),
        "h" => Duration::from_secs(number.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    Ok(duration)
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn text(status: StatusCode, body: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn empty(status: StatusCode) -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// A JSON-RPC "invalid request" error as the whole answer, with `status`.
fn invalid(status: StatusCode, why: &str) -> Answer {
    json_response(status, rpc_core::server::json::invalid_request(why))
}

/// A body over the limit: refused before (or while) it is read, and the
/// connection closed, since the rest of the body is not read.
fn too_large(len: Option<u64>, max: usize) -> Answer {
    let size = len.map_or_else(|| "a body".to_owned(), |len| format!("a body of {len} bytes"));
    let why = format!("{size} is over the limit of {max} bytes; send less, or raise `Server::max_frame_len`");
    closing(invalid(StatusCode::PAYLOAD_TOO_LARGE, &why))
}

/// The response, with the connection closed after it.
fn closing(mut response: Answer) -> Answer {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_read_as_users_write_them() {
        let read = |text: &'static str| parse_timeout(&HeaderValue::from_static(text));
        assert_eq!(read("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(read("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(read("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(read("2m"), Ok(Duration::from_secs(120)));
        assert!(read("soon").is_err());
        assert!(read("5 fortnights").is_err());
    }
}
