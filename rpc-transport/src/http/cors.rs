//! [`Cors`]: which web pages, served from other origins, may call.
//!
//! A browser lets a page call another origin only if that origin says so.
//! The HTTP door says so for the origins it is told to allow: a preflight
//! (`OPTIONS`) is answered with the methods and headers a JSON-RPC call
//! uses, and each answer names the caller's origin. By default no other
//! origin is allowed: a page on the open web cannot make a visitor's
//! browser call a service on their network.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

/// The origins whose pages may call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    allowed: Allowed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Allowed {
    /// Same-origin pages only.
    #[default]
    None,
    /// Pages from any origin (no cookies are sent; a client certificate
    /// may be, see `Cors::any`).
    Any,
    /// Pages from these origins (`https://app.example.com`).
    Listed(Vec<String>),
}

impl Cors {
    /// No other origin may call (the default).
    pub fn none() -> Cors {
        Cors::default()
    }

    /// Pages from any origin may call. With client certificates on
    /// (`ClientAuth::Optional` or `Required`), a browser presents the
    /// visitor's certificate on any page's requests, so any page could call
    /// as the visitor: list the origins instead.
    pub fn any() -> Cors {
        Cors {
            allowed: Allowed::Any,
        }
    }

    /// Pages from these origins may call: scheme, host and port, as a
    /// browser sends them (`https://app.example.com`, `http://localhost:3000`).
    pub fn origins<I, S>(origins: I) -> Cors
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cors {
            allowed: Allowed::Listed(origins.into_iter().map(Into::into).collect()),
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`,
    /// if that origin may call.
    pub(super) fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        let origin = origin?;
        match &self.allowed {
            Allowed::None => None,
            Allowed::Any => Some(HeaderValue::from_static("*")),
            Allowed::Listed(origins) => origins
                .iter()
                .any(|allowed| allowed.as_bytes() == origin.as_bytes())
                .then(|| origin.clone()),
        }
    }
}

/// Refuses a request a browser sent for a page of another origin that may
/// not call. A browser lets any page post a form or open a WebSocket to any
/// address (it only hides the answer), so without this check a page on the
/// open web could make a visitor's browser call a service on their network.
/// Requests with no `Origin` (every client that is not a browser) and from
/// the server's own origin pass.
pub(super) fn refusal<B>(cors: &Cors, request: &Request<B>) -> Option<super::Answer> {
    let origin = request.headers().get(header::ORIGIN)?;
    // A preflight only asks; its answer says whether the origin may call.
    if request.method() == hyper::Method::OPTIONS || cors.allowed(Some(origin)).is_some() {
        return None;
    }
    if same_origin(origin, request.headers().get(header::HOST)) {
        return None;
    }
    let origin = String::from_utf8_lossy(origin.as_bytes());
    let mut refused = Response::new(Full::new(Bytes::from(format!(
        "a page from {origin} may not call this service; allow its origin with `Server::cors`\n"
    ))));
    *refused.status_mut() = StatusCode::FORBIDDEN;
    refused.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(refused)
}

/// Whether `origin` (`http://host:port`) names the host the request was
/// sent to: the page and the service share an origin.
fn same_origin(origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
    let (Ok(origin), Some(Ok(host))) = (origin.to_str(), host.map(HeaderValue::to_str)) else {
        return false;
    };
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|authority| authority.eq_ignore_ascii_case(host))
}

/// Marks an answer as readable by `origin`.
pub(super) fn allow(response: &mut super::Answer, origin: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::VARY, HeaderValue::from_static("Origin"));
}

/// The answer to a preflight: what a JSON-RPC call may use, if its origin
/// may call (the caller adds the origin); a plain `204` otherwise, which a
/// browser reads as "no".
pub(super) fn preflight<B>(cors: &Cors, request: &Request<B>) -> super::Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    if cors.allowed(request.headers().get(header::ORIGIN)).is_some() {
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST, GET, OPTIONS"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, rpc-timeout, authorization, traceparent, tracestate"),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_origins_are_named() {
        let page = HeaderValue::from_static("https://app.example.com");
        assert_eq!(Cors::none().allowed(Some(&page)), None);
        assert_eq!(
            Cors::any().allowed(Some(&page)),
            Some(HeaderValue::from_static("*"))
        );
        let listed = Cors::origins(["https://app.example.com"]);
        assert_eq!(listed.allowed(Some(&page)), Some(page.clone()));
        assert_eq!(
            listed.allowed(Some(&HeaderValue::from_static("https://evil.example"))),
            None
        );
        assert_eq!(listed.allowed(None), None);
    }

    fn request(origin: &'static str, host: &'static str) -> Request<()> {
        Request::post("/rpc")
            .header(header::ORIGIN, origin)
            .header(header::HOST, host)
            .body(())
            .unwrap_or_else(|_| Request::new(()))
    }

    #[test]
    fn pages_of_other_origins_may_not_call_unless_allowed() {
        let none = Cors::none();
        assert!(refusal(&none, &request("http://svc:7000", "svc:7000")).is_none());
        assert!(refusal(&none, &request("https://SVC:7000", "svc:7000")).is_none());
        let refused = refusal(&none, &request("https://evil.example", "svc:7000"));
        assert_eq!(refused.map(|answer| answer.status()), Some(StatusCode::FORBIDDEN));
        assert!(refusal(&none, &request("null", "svc:7000")).is_some());
        let listed = Cors::origins(["https://app.example"]);
        assert!(refusal(&listed, &request("https://app.example", "svc:7000")).is_none());
        assert!(refusal(&Cors::any(), &request("https://evil.example", "svc:7000")).is_none());
        let no_origin = Request::post("/rpc")
            .body(())
            .unwrap_or_else(|_| Request::new(()));
        assert!(refusal(&none, &no_origin).is_none());
    }
}
