//! JSON-RPC 2.0 envelopes: reading requests (single or batched) and
//! writing responses, byte for byte as the specification gives them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::server::json::codes;

/// A body, parsed as far as the envelope: one request, or a batch.
pub(crate) enum Body<'a> {
    Single(Result<Request<'a>, Invalid<'a>>),
    Batch(Vec<Result<Request<'a>, Invalid<'a>>>),
}

/// One well-formed request.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    /// `None` for a notification, which gets no response.
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) method: Cow<'a, str>,
    /// An array (by position) or an object (by name); `None` when absent.
    pub(crate) params: Option<&'a RawValue>,
}

/// A request that is not one: answered with "invalid request".
#[derive(Debug)]
pub(crate) struct Invalid<'a> {
    /// The id, when the request had a usable one.
    pub(crate) id: Option<&'a RawValue>,
    pub(crate) why: &'static str,
}

/// Why a body could not be read as JSON at all.
#[derive(Debug)]
pub(crate) struct ParseError(pub(crate) String);

/// The members of a request object, unchecked.
#[derive(Deserialize)]
struct Members<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(default, borrow)]
    method: Option<&'a RawValue>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    /// `Some` even for `"id": null`: only an absent id makes a notification.
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Reads a body: malformed JSON is a parse error; anything else becomes
/// requests, each valid or not.
pub(crate) fn parse(body: &[u8]) -> Result<Body<'_>, ParseError> {
    let value: &RawValue = serde_json::from_slice(body).map_err(|err| ParseError(err.to_string()))?;
    let text = value.get();
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|err| ParseError(err.to_string()))?;
        Ok(Body::Batch(items.into_iter().map(request).collect()))
    } else {
        Ok(Body::Single(request(value)))
    }
}

/// Checks one request object.
pub(crate) fn request(value: &RawValue) -> Result<Request<'_>, Invalid<'_>> {
    let invalid = |id, why| Invalid { id, why };
    if !value.get().starts_with('{') {
        return Err(invalid(None, "a request must be a JSON object"));
    }
    let members: Members<'_> = serde_json::from_str(value.get())
        .map_err(|_| invalid(None, "the request's members are malformed"))?;
    let id = match members.id {
        Some(id) if !is_id(id) => return Err(invalid(None, "the id must be a string, a number or null")),
        id => id,
    };
    if let Some(version) = members.jsonrpc {
        if version.get() != "\"2.0\"" {
            return Err(invalid(id, "\"jsonrpc\" must be \"2.0\" (or be left out)"));
        }
    }
    let Some(method) = members.method else {
        return Err(invalid(id, "the request has no \"method\""));
    };
    let Ok(method) = serde_json::from_str::<Cow<'_, str>>(method.get()) else {
        return Err(invalid(id, "\"method\" must be a string"));
    };
    let params = members.params.filter(|params| params.get() != "null");
    if let Some(params) = params {
        if !(params.get().starts_with('[') || params.get().starts_with('{')) {
            return Err(invalid(id, "\"params\" must be an array or an object"));
        }
    }
    Ok(Request { id, method, params })
}

/// Whether a raw value may be an id: a string, a number or null.
fn is_id(id: &RawValue) -> bool {
    matches!(
        id.get().as_bytes().first(),
        Some(b'"' | b'-' | b'0'..=b'9' | b'n')
    )
}

/// `{"jsonrpc":"2.0","result":..,"id":..}`.
pub(crate) fn result(id: &RawValue, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + result.len() + id.get().len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","result":"#);
    out.extend_from_slice(result);
    out.extend_from_slice(br#","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.push(b'}');
    out
}

/// An error object, `{"code":..,"message":..}` with `data` when there is
/// some: what a response or an item's failure carries.
#[derive(Debug, Clone)]
pub(crate) struct ErrorObject {
    pub(crate) code: i64,
    pub(crate) message: String,
    /// JSON text.
    pub(crate) data: Option<Vec<u8>>,
}

impl ErrorObject {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> ErrorObject {
        ErrorObject {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A parse error, for a body that is not JSON.
    pub(crate) fn parse(err: &ParseError) -> ErrorObject {
        ErrorObject::new(codes::PARSE_ERROR, format!("Parse error: {}", err.0))
    }

    /// An invalid request.
    pub(crate) fn invalid(why: &str) -> ErrorObject {
        ErrorObject::new(codes::INVALID_REQUEST, format!("Invalid Request: {why}"))
    }
}

/// `{"jsonrpc":"2.0","error":{..},"id":..}`; `id` null when there is none.
pub(crate) fn error(id: Option<&RawValue>, error: &ErrorObject) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + error.message.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","error":{"code":"#);
    out.extend_from_slice(error.code.to_string().as_bytes());
    out.extend_from_slice(br#","message":"#);
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &error.message);
    if let Some(data) = &error.data {
        out.extend_from_slice(br#","data":"#);
        out.extend_from_slice(data);
    }
    out.extend_from_slice(br#"},"id":"#);
    out.extend_from_slice(id.map_or("null", |id| id.get()).as_bytes());
    out.push(b'}');
    out
}

/// A batch's responses as one array; `None` when there are none (a batch
/// of notifications gets no response at all).
pub(crate) fn batch(responses: Vec<Vec<u8>>) -> Option<Vec<u8>> {
    if responses.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(responses.iter().map(|r| r.len() + 1).sum::<usize>() + 1);
    out.push(b'[');
    for (i, response) in responses.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(response);
    }
    out.push(b']');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(body: &str) -> Result<Request<'_>, Invalid<'_>> {
        match parse(body.as_bytes()).unwrap() {
            Body::Single(request) => request,
            Body::Batch(_) => panic!("a batch"),
        }
    }

    #[test]
    fn requests_and_notifications_are_told_apart_by_the_id_alone() {
        let call = single(r#"{"jsonrpc":"2.0","method":"subtract","params":[42,23],"id":1}"#).unwrap();
        assert_eq!(
            (call.method.as_ref(), call.id.map(|id| id.get())),
            ("subtract", Some("1"))
        );
        let null_id = single(r#"{"jsonrpc":"2.0","method":"m","id":null}"#).unwrap();
        assert_eq!(null_id.id.map(|id| id.get()), Some("null"));
        let notification = single(r#"{"jsonrpc":"2.0","method":"update","params":[1,2]}"#).unwrap();
        assert!(notification.id.is_none());
        // Hand-written clients often leave "jsonrpc" out.
        assert!(single(r#"{"method":"m","id":"a"}"#).is_ok());
    }

    #[test]
    fn malformed_requests_are_invalid_and_malformed_json_is_a_parse_error() {
        assert!(parse(br#"{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]"#).is_err());
        assert!(single(r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#).is_err());
        assert!(single(r#"{"jsonrpc":"1.0","method":"m","id":1}"#).is_err());
        assert!(single(r#"{"method":"m","params":3,"id":1}"#).is_err());
        assert!(single(r#"{"method":"m","id":{"a":1}}"#).is_err());
        assert!(single("1").is_err());
        match parse(b"[1,2]").unwrap() {
            Body::Batch(items) => assert!(items.iter().all(Result::is_err)),
            Body::Single(_) => panic!("a batch"),
        }
    }

    #[test]
    fn responses_are_written_as_the_specification_spells_them() {
        let id = RawValue::from_string("1".to_owned()).unwrap();
        assert_eq!(result(&id, b"19"), br#"{"jsonrpc":"2.0","result":19,"id":1}"#);
        let missing = ErrorObject::new(codes::METHOD_NOT_FOUND, "Method not found");
        assert_eq!(
            String::from_utf8(error(Some(&id), &missing)).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":1}"#
        );
        assert_eq!(
            String::from_utf8(error(None, &ErrorObject::parse(&ParseError("x".into())))).unwrap(),
            r#"{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error: x"},"id":null}"#
        );
        assert_eq!(batch(Vec::new()), None);
    }
}
