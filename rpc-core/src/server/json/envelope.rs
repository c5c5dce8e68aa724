//! JSON-RPC 2.0 envelopes: reading requests (single or batched) and
//! writing responses, byte for byte as the specification gives them.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::server::json::{bounded, codes};

/// A body, parsed as far as the envelope: one request, or a batch.
pub(crate) enum Body<'a> {
    Single(Result<Request<'a>, Invalid<'a>>),
    Batch(Vec<Result<Request<'a>, Invalid<'a>>>),
    /// A batch that is empty or holds more requests than allowed: how many
    /// it holds. None of it was parsed past counting.
    Refused(usize),
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
    pub(crate) why: Cow<'static, str>,
}

/// The longest id a request may have. Ids are echoed in every answer and
/// stream item, so a long one would be copied many times.
pub(crate) const MAX_ID_LEN: usize = 256;

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
/// requests, each valid or not. A batch of more than `max_batch` requests
/// (or none) is only counted.
pub(crate) fn parse(body: &[u8], max_batch: usize) -> Result<Body<'_>, ParseError> {
    let parse_error = |err: serde_json::Error| ParseError(err.to_string());
    match body.iter().find(|byte| !byte.is_ascii_whitespace()) {
        Some(b'[') => {
            let (items, len) = bounded::array(body, max_batch).map_err(parse_error)?;
            if len == 0 || len > max_batch {
                return Ok(Body::Refused(len));
            }
            Ok(Body::Batch(items.into_iter().map(request).collect()))
        }
        // One pass: the members straight from the body.
        Some(b'{') => match serde_json::from_slice::<Members<'_>>(body) {
            Ok(members) => Ok(Body::Single(check(members))),
            Err(err) if bounded::is_syntax(&err) => Err(parse_error(err)),
            Err(err) => Ok(Body::Single(Err(malformed(&err)))),
        },
        _ => {
            let value: &RawValue = serde_json::from_slice(body).map_err(parse_error)?;
            Ok(Body::Single(request(value)))
        }
    }
}

/// Checks one request object of a batch.
pub(crate) fn request(value: &RawValue) -> Result<Request<'_>, Invalid<'_>> {
    if !value.get().starts_with('{') {
        return Err(Invalid {
            id: None,
            why: Cow::Borrowed("a request must be a JSON object"),
        });
    }
    match serde_json::from_str::<Members<'_>>(value.get()) {
        Ok(members) => check(members),
        Err(err) => Err(malformed(&err)),
    }
}

/// A request object whose members JSON-RPC cannot read (a member twice,
/// say).
fn malformed(err: &serde_json::Error) -> Invalid<'static> {
    Invalid {
        id: None,
        why: Cow::Owned(format!("the request's members are malformed: {err}")),
    }
}

/// Checks a request's members.
fn check(members: Members<'_>) -> Result<Request<'_>, Invalid<'_>> {
    let invalid = |id, why: &'static str| Invalid {
        id,
        why: Cow::Borrowed(why),
    };
    let id = match members.id {
        Some(id) if !is_id(id) => return Err(invalid(None, "the id must be a string, a number or null")),
        Some(id) if id.get().len() > MAX_ID_LEN => {
            return Err(invalid(None, "the id is longer than 256 bytes"));
        }
        id => id,
    };
    if let Some(version) = members.jsonrpc
        && version.get() != "\"2.0\""
    {
        return Err(invalid(id, "\"jsonrpc\" must be \"2.0\" (or be left out)"));
    }
    let Some(method) = members.method else {
        return Err(invalid(id, "the request has no \"method\""));
    };
    let Ok(method) = serde_json::from_str::<Cow<'_, str>>(method.get()) else {
        return Err(invalid(id, "\"method\" must be a string"));
    };
    let params = members.params.filter(|params| params.get() != "null");
    if let Some(params) = params
        && !(params.get().starts_with('[') || params.get().starts_with('{'))
    {
        return Err(invalid(id, "\"params\" must be an array or an object"));
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
        match parse(body.as_bytes(), 10).unwrap() {
            Body::Single(request) => request,
            _ => panic!("a batch"),
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
        assert!(parse(br#"{"jsonrpc":"2.0","method":"foobar,"params":"bar","baz]"#, 10).is_err());
        assert!(single(r#"{"jsonrpc":"2.0","method":1,"params":"bar"}"#).is_err());
        assert!(single(r#"{"jsonrpc":"1.0","method":"m","id":1}"#).is_err());
        assert!(single(r#"{"method":"m","params":3,"id":1}"#).is_err());
        assert!(single(r#"{"method":"m","id":{"a":1}}"#).is_err());
        assert!(single("1").is_err());
        match parse(b"[1,2]", 10).unwrap() {
            Body::Batch(items) => assert!(items.iter().all(Result::is_err)),
            _ => panic!("a batch"),
        }
        assert!(
            single(r#"{"method":"m","id":1,"id":2}"#).is_err(),
            "a member twice"
        );
        let long = format!(r#"{{"method":"m","id":"{}"}}"#, "x".repeat(300));
        assert!(single(&long).is_err());
        assert!(matches!(parse(b" [] ", 10), Ok(Body::Refused(0))));
        assert!(matches!(parse(b"[1,2,3]", 2), Ok(Body::Refused(3))));
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
