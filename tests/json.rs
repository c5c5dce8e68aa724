//! JSON-RPC 2.0 callers, over real sockets: the specification's own
//! examples over HTTP and WebSocket, every shape the binary side carries,
//! names, errors, deadlines, streams, CORS and the OpenRPC document, and a
//! Rust client on the same port at the same time.
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use common::json::{Http, Ws};
use common::{MathError, ShapesClient, User};
use futures::StreamExt;
use hyper::StatusCode;
use rpc::Streaming;
use rpc::json::codes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Fails a test that hangs, rather than letting it run for ever. Never
/// reached when the code is right.
async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test hung")
}

// ---------------------------------------------------------------------------
// The specification's examples (JSON-RPC 2.0, section 7).

/// The methods the specification's examples call.
#[rpc::service]
pub trait Spec {
    async fn subtract(&self, minuend: i64, subtrahend: i64) -> i64;
    async fn update(&self, a: i64, b: i64, c: i64, d: i64, e: i64);
    async fn sum(&self, a: i64, b: i64, c: i64) -> i64;
    async fn notify_hello(&self, n: i64);
    async fn notify_sum(&self, a: i64, b: i64, c: i64);
    async fn get_data(&self) -> (String, i64);
}

#[derive(Default)]
struct SpecImpl {
    notified: AtomicUsize,
}

impl Spec for Arc<SpecImpl> {
    async fn subtract(&self, minuend: i64, subtrahend: i64) -> i64 {
        minuend - subtrahend
    }
    async fn update(&self, _a: i64, _b: i64, _c: i64, _d: i64, _e: i64) {
        self.notified.fetch_add(1, Ordering::SeqCst);
    }
    async fn sum(&self, a: i64, b: i64, c: i64) -> i64 {
        a + b + c
    }
    async fn notify_hello(&self, _n: i64) {
        self.notified.fetch_add(1, Ordering::SeqCst);
    }
    async fn notify_sum(&self, _a: i64, _b: i64, _c: i64) {
        self.notified.fetch_add(1, Ordering::SeqCst);
    }
    async fn get_data(&self) -> (String, i64) {
        ("hello".to_owned(), 5)
    }
}

/// A JSON caller through either door.
enum Door {
    Http(Http),
    Ws(Box<Ws>),
}

const SENTINEL: &str = r#"{"jsonrpc":"2.0","method":"subtract","params":[1,1],"id":"sentinel"}"#;

impl Door {
    /// Sends `body`; the answer, or `None` when the server (rightly, if
    /// `expect` is false) sends none.
    async fn exchange(&mut self, body: &str, expect: bool) -> Option<Value> {
        match self {
            Door::Http(http) => {
                let answer = http.post(body.to_owned()).await;
                if expect {
                    assert_eq!(answer.status, StatusCode::OK, "{body}: {}", answer.text());
                    Some(answer.json())
                } else {
                    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{body}: {}", answer.text());
                    assert!(answer.body.is_empty(), "{body}: {}", answer.text());
                    None
                }
            }
            Door::Ws(ws) => {
                ws.send(body).await;
                if expect {
                    return ws.next().await;
                }
                // Nothing must come back: the next message is the answer to
                // a call sent after it.
                ws.send(SENTINEL).await;
                let next = ws.next().await.unwrap();
                assert_eq!(next["id"], "sentinel", "{body} was answered: {next}");
                None
            }
        }
    }
}

/// Asserts an error response: its code, its id, and a message that starts
/// as the specification's does.
fn assert_error(answer: &Value, code: i64, id: Value, message: &str) {
    assert_eq!(answer["jsonrpc"], "2.0", "{answer}");
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["error"]["code"], code, "{answer}");
    let said = answer["error"]["message"].as_str().unwrap();
    assert!(
        said.starts_with(message),
        "{said:?} should start with {message:?}"
    );
    assert!(answer.get("result").is_none(), "{answer}");
}

async fn conformance(door: &mut Door) {
    // rpc call with positional parameters
    let answer = door
        .exchange(
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}"#,
            true,
        )
        .await;
    assert_eq!(answer, Some(json!({"jsonrpc": "2.0", "result": 19, "id": 1})));
    let answer = door
        .exchange(
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}"#,
            true,
        )
        .await;
    assert_eq!(answer, Some(json!({"jsonrpc": "2.0", "result": -19, "id": 2})));

    // rpc call with named parameters
    let answer = door
        .exchange(
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}"#,
            true,
        )
        .await;
    assert_eq!(answer, Some(json!({"jsonrpc": "2.0", "result": 19, "id": 3})));
    let answer = door
        .exchange(
            r#"{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}"#,
            true,
        )
        .await;
    assert_eq!(answer, Some(json!({"jsonrpc": "2.0", "result": 19, "id": 4})));

    // a Notification
    door.exchange(
        r#"{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}"#,
        false,
    )
    .await;
    door.exchange(r#"{"jsonrpc": "2.0", "method": "foobar"}"#, false)
        .await;

    // rpc call of non-existent method
    let answer = door
        .exchange(r#"{"jsonrpc": "2.0", "method": "foobar", "id": "1"}"#, true)
        .await
        .unwrap();
    assert_error(&answer, -32601, json!("1"), "Method not found");
    assert!(answer["error"]["message"].as_str().unwrap().contains("foobar"));

    // rpc call with invalid JSON
    let answer = door
        .exchange(
            r#"{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]"#,
            true,
        )
        .await
        .unwrap();
    assert_error(&answer, -32700, Value::Null, "Parse error");

    // rpc call with invalid Request object
    let answer = door
        .exchange(r#"{"jsonrpc": "2.0", "method": 1, "params": "bar"}"#, true)
        .await
        .unwrap();
    assert_error(&answer, -32600, Value::Null, "Invalid Request");

    // rpc call Batch, invalid JSON
    let answer = door
        .exchange(
            r#"[
              {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
              {"jsonrpc": "2.0", "method"
            ]"#,
            true,
        )
        .await
        .unwrap();
    assert_error(&answer, -32700, Value::Null, "Parse error");

    // rpc call with an empty Array
    let answer = door.exchange("[]", true).await.unwrap();
    assert_error(&answer, -32600, Value::Null, "Invalid Request");

    // rpc call with an invalid Batch (but not empty)
    let answer = door.exchange("[1]", true).await.unwrap();
    assert_eq!(answer.as_array().unwrap().len(), 1, "{answer}");
    assert_error(&answer[0], -32600, Value::Null, "Invalid Request");

    // rpc call with invalid Batch
    let answer = door.exchange("[1,2,3]", true).await.unwrap();
    let answers = answer.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{answer}");
    for answer in answers {
        assert_error(answer, -32600, Value::Null, "Invalid Request");
    }

    // rpc call Batch
    let answer = door
        .exchange(
            r#"[
                {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
                {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
                {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
                {"foo": "boo"},
                {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
                {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
            ]"#,
            true,
        )
        .await
        .unwrap();
    // The specification lets a batch's answers come in any order.
    let mut by_id: HashMap<String, Value> = HashMap::new();
    for answer in answer.as_array().unwrap() {
        by_id.insert(answer["id"].to_string(), answer.clone());
    }
    assert_eq!(by_id.len(), 5, "{answer}");
    assert_eq!(by_id[r#""1""#], json!({"jsonrpc": "2.0", "result": 7, "id": "1"}));
    assert_eq!(
        by_id[r#""2""#],
        json!({"jsonrpc": "2.0", "result": 19, "id": "2"})
    );
    assert_error(&by_id["null"], -32600, Value::Null, "Invalid Request");
    assert_error(&by_id[r#""5""#], -32601, json!("5"), "Method not found");
    assert_eq!(
        by_id[r#""9""#],
        json!({"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"})
    );

    // rpc call Batch (all notifications)
    door.exchange(
        r#"[
            {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
            {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
        ]"#,
        false,
    )
    .await;
}

async fn spec_server() -> (rpc::ServerHandle, Arc<SpecImpl>, SocketAddr) {
    let spec = Arc::new(SpecImpl::default());
    let server = rpc::Server::new()
        .serve(SpecServer::new(Arc::clone(&spec)))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    (server, spec, addr)
}

#[tokio::test]
async fn the_specifications_examples_over_http() {
    let (server, spec, addr) = spec_server().await;
    let mut door = Door::Http(Http::connect(addr).await);
    within(conformance(&mut door)).await;
    // Over HTTP a request's notifications have run before its answer.
    assert_eq!(spec.notified.load(Ordering::SeqCst), 4);
    server.stop().await;
}

#[tokio::test]
async fn the_specifications_examples_over_websocket() {
    let (server, spec, addr) = spec_server().await;
    let mut door = Door::Ws(Box::new(Ws::connect(addr).await));
    within(conformance(&mut door)).await;
    // Notifications run, unanswered, alongside what follows them.
    within(async {
        while spec.notified.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn ids_come_back_as_they_were_sent_and_the_version_may_be_left_out() {
    let (server, _, addr) = spec_server().await;
    let mut http = Http::connect(addr).await;
    for id in [
        json!(7),
        json!(-1.5),
        json!("a string"),
        Value::Null,
        json!(18446744073709551615u64),
    ] {
        let answer = http
            .call(json!({"jsonrpc": "2.0", "method": "subtract", "params": [3, 2], "id": id}))
            .await;
        assert_eq!(answer, json!({"jsonrpc": "2.0", "result": 1, "id": id}));
    }
    // Many hand-written clients omit "jsonrpc".
    let answer = http
        .call(json!({"method": "subtract", "params": [3, 2], "id": 1}))
        .await;
    assert_eq!(answer, json!({"jsonrpc": "2.0", "result": 1, "id": 1}));
    // A version that is not 2.0 is not JSON-RPC 2.0.
    let answer = http
        .call(json!({"jsonrpc": "1.0", "method": "subtract", "params": [3, 2], "id": 1}))
        .await;
    assert_error(&answer, -32600, json!(1), "Invalid Request");
    // Objects and arrays are not ids.
    let answer = http
        .call(json!({"jsonrpc": "2.0", "method": "subtract", "params": [3, 2], "id": [1]}))
        .await;
    assert_error(&answer, -32600, Value::Null, "Invalid Request");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Shapes: what JSON callers get is what Rust callers get.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Figure {
    Point,
    Circle { radius: f64 },
    Square(f64),
    Segment(i32, i32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meters(pub f64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker;

#[rpc::service]
pub trait Kinds {
    async fn tally(&self, words: Vec<String>) -> BTreeMap<String, u32>;
    async fn index(&self, names: HashMap<u32, String>) -> Vec<(u32, String)>;
    async fn grow(&self, figure: Figure) -> Figure;
    async fn blob(&self, data: rpc::Bytes) -> rpc::Bytes;
    async fn swap(&self, pair: (u8, String)) -> (String, u8);
    async fn maybe(&self, n: u32, extra: Option<u32>) -> Option<u32>;
    async fn walk(&self, distance: Meters, marker: Marker) -> (Meters, Marker);
    async fn nested(&self, matrix: Vec<Vec<Option<i8>>>) -> usize;
    async fn find_user(&self, user_id: u64, include_tags: bool) -> Result<User, String>;
}

struct KindsImpl;

impl Kinds for KindsImpl {
    async fn tally(&self, words: Vec<String>) -> BTreeMap<String, u32> {
        let mut counts = BTreeMap::new();
        for word in words {
            *counts.entry(word).or_default() += 1;
        }
        counts
    }
    async fn index(&self, names: HashMap<u32, String>) -> Vec<(u32, String)> {
        let mut names: Vec<_> = names.into_iter().collect();
        names.sort();
        names
    }
    async fn grow(&self, figure: Figure) -> Figure {
        match figure {
            Figure::Point => Figure::Circle { radius: 1.0 },
            Figure::Circle { radius } => Figure::Circle { radius: radius * 2.0 },
            Figure::Square(side) => Figure::Square(side * 2.0),
            Figure::Segment(a, b) => Figure::Segment(a * 2, b * 2),
        }
    }
    async fn blob(&self, data: rpc::Bytes) -> rpc::Bytes {
        data.iter().rev().copied().collect::<Vec<u8>>().into()
    }
    async fn swap(&self, pair: (u8, String)) -> (String, u8) {
        (pair.1, pair.0)
    }
    async fn maybe(&self, n: u32, extra: Option<u32>) -> Option<u32> {
        extra.map(|extra| n + extra)
    }
    async fn walk(&self, distance: Meters, marker: Marker) -> (Meters, Marker) {
        (Meters(distance.0 + 1.0), marker)
    }
    async fn nested(&self, matrix: Vec<Vec<Option<i8>>>) -> usize {
        matrix.iter().flatten().flatten().count()
    }
    async fn find_user(&self, user_id: u64, include_tags: bool) -> Result<User, String> {
        match user_id {
            0 => Err("no user 0".to_owned()),
            id => Ok(User {
                id,
                name: format!("user {id}"),
                tags: if include_tags {
                    vec!["a".to_owned()]
                } else {
                    vec![]
                },
                manager: Some(Box::new(User {
                    id: 1,
                    name: "boss".to_owned(),
                    tags: vec![],
                    manager: None,
                })),
            }),
        }
    }
}

async fn shapes_server() -> (rpc::ServerHandle, SocketAddr) {
    let (server, _, addr) = common::start_with(|server| server.serve(KindsServer::new(KindsImpl))).await;
    (server, addr)
}

/// What a JSON caller got, in the form serde gives the Rust value: a
/// fallible method's answer as `{"Ok": ..}` or `{"Err": ..}`.
fn as_rust(answer: &Value, fallible: bool) -> Value {
    if let Some(result) = answer.get("result") {
        return if fallible {
            json!({"Ok": result})
        } else {
            result.clone()
        };
    }
    assert!(fallible, "{answer}");
    assert_eq!(answer["error"]["code"], codes::APPLICATION_ERROR, "{answer}");
    json!({"Err": answer["error"]["data"]})
}

/// Calls `method` from Rust and from JSON at the same time, on one server,
/// and asserts both got the same answer.
macro_rules! same {
    ($http:expr, $rust:expr, $method:literal, $params:tt) => {
        same!($http, $rust, $method, $params, false)
    };
    ($http:expr, $rust:expr, $method:literal, $params:tt, $fallible:expr) => {{
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": $method, "params": $params});
        let (rust, answer) = tokio::join!($rust, $http.call(request));
        let rust = serde_json::to_value(rust.unwrap()).unwrap();
        assert_eq!(as_rust(&answer, $fallible), rust, "{}", $method);
        rust
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_round_trips_and_json_callers_get_what_rust_callers_get() {
    let (server, addr) = shapes_server().await;
    let shapes = ShapesClient::connect(addr).await.unwrap();
    let kinds = KindsClient::from_client(shapes.rpc_client().clone());
    let mut http = Http::connect(addr).await;
    within(async {
        assert_eq!(same!(http, shapes.add(2, 3), "Shapes.add", [2, 3]), json!(5));
        assert_eq!(
            same!(http, shapes.div(7, 2), "Shapes.div", [7, 2], true),
            json!({"Ok": 3})
        );
        assert_eq!(
            same!(http, shapes.div(7, 0), "Shapes.div", [7, 0], true),
            json!({"Err": "DivisionByZero"})
        );
        same!(http, shapes.greet("Ada".to_owned()), "Shapes.greet", ["Ada"]);
        same!(http, shapes.reverse(vec![1, 2, 3]), "Shapes.reverse", [[1, 2, 3]]);
        let user = User {
            id: 7,
            name: "Ada".to_owned(),
            tags: vec!["x".to_owned()],
            manager: Some(Box::new(User {
                id: 1,
                name: "Grace".to_owned(),
                tags: vec![],
                manager: None,
            })),
        };
        let promoted = same!(
            http,
            shapes.promote(user.clone()),
            "Shapes.promote",
            [serde_json::to_value(&user).unwrap()]
        );
        assert_eq!(promoted["tags"], json!(["x", "promoted"]));
        assert_eq!(same!(http, shapes.nothing(), "Shapes.nothing", []), Value::Null);
        assert_eq!(same!(http, shapes.answer(), "Shapes.answer", []), json!(42));
        assert_eq!(
            same!(http, shapes.halves("a b".to_owned()), "Shapes.halves", ["a b"]),
            json!(["a", "b"])
        );
        assert_eq!(
            same!(http, shapes.halves("a".to_owned()), "Shapes.halves", ["a"]),
            json!(["a", null])
        );

        let words = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
        assert_eq!(
            same!(http, kinds.tally(words), "Kinds.tally", [["a", "b", "a"]]),
            json!({"a": 2, "b": 1})
        );
        let names = HashMap::from([(2, "two".to_owned()), (1, "one".to_owned())]);
        assert_eq!(
            same!(http, kinds.index(names), "Kinds.index", [{"2": "two", "1": "one"}]),
            json!([[1, "one"], [2, "two"]])
        );
        assert_eq!(
            same!(http, kinds.grow(Figure::Point), "Kinds.grow", ["Point"]),
            json!({"Circle": {"radius": 1.0}})
        );
        same!(
            http,
            kinds.grow(Figure::Circle { radius: 1.5 }),
            "Kinds.grow",
            [{"Circle": {"radius": 1.5}}]
        );
        same!(http, kinds.grow(Figure::Square(2.0)), "Kinds.grow", [{"Square": 2.0}]);
        assert_eq!(
            same!(http, kinds.grow(Figure::Segment(1, -2)), "Kinds.grow", [{"Segment": [1, -2]}]),
            json!({"Segment": [2, -4]})
        );
        assert_eq!(
            same!(
                http,
                kinds.blob(rpc::Bytes::from_static(b"\x00\x01\xff")),
                "Kinds.blob",
                [[0, 1, 255]]
            ),
            json!([255, 1, 0])
        );
        assert_eq!(
            same!(
                http,
                kinds.swap((9, "nine".to_owned())),
                "Kinds.swap",
                [[9, "nine"]]
            ),
            json!(["nine", 9])
        );
        assert_eq!(
            same!(http, kinds.maybe(1, Some(2)), "Kinds.maybe", [1, 2]),
            json!(3)
        );
        assert_eq!(
            same!(http, kinds.maybe(1, None), "Kinds.maybe", [1, null]),
            Value::Null
        );
        // A trailing `Option` may be left out, by position or by name.
        assert_eq!(same!(http, kinds.maybe(1, None), "Kinds.maybe", [1]), Value::Null);
        assert_eq!(
            same!(http, kinds.maybe(1, None), "Kinds.maybe", {"n": 1}),
            Value::Null
        );
        assert_eq!(
            same!(http, kinds.walk(Meters(1.5), Marker), "Kinds.walk", [1.5, null]),
            json!([2.5, null])
        );
        assert_eq!(
            same!(
                http,
                kinds.nested(vec![vec![Some(1), None], vec![Some(-3)]]),
                "Kinds.nested",
                [[[1, null], [-3]]]
            ),
            json!(2)
        );
        let found = same!(http, kinds.find_user(5, true), "Kinds.find_user", [5, true], true);
        assert_eq!(found["Ok"]["manager"]["name"], "boss");
        assert_eq!(
            same!(http, kinds.find_user(0, true), "Kinds.find_user", [0, true], true),
            json!({"Err": "no user 0"})
        );
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_and_json_callers_share_one_port_at_the_same_time() {
    let (server, addr) = shapes_server().await;
    let rust = ShapesClient::connect(addr).await.unwrap();
    let rust_calls = async {
        for n in 0..200i64 {
            assert_eq!(rust.add(n, n).await.unwrap(), 2 * n);
        }
    };
    let http_calls = async {
        let mut http = Http::connect(addr).await;
        for n in 0..200i64 {
            let answer = http
                .call(json!({"id": n, "method": "add", "params": [n, 1]}))
                .await;
            assert_eq!(answer["result"], n + 1);
        }
    };
    let ws_calls = async {
        let mut ws = Ws::connect(addr).await;
        for n in 0..200i64 {
            let answer = ws
                .call(json!({"id": n, "method": "Echo.echo", "params": [n.to_string()]}))
                .await;
            assert_eq!(answer["result"], n.to_string());
        }
        ws.close().await;
    };
    within(async { tokio::join!(rust_calls, http_calls, ws_calls) }).await;
    let stats = server.stats();
    assert!(stats.requests_received >= 600, "{stats:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Names: full, bare, camelCase; arguments by name.

#[rpc::service]
pub trait Users {
    async fn get_user_by_id(&self, user_id: u64, with_manager: Option<bool>) -> String;
    async fn add(&self, a: i64, b: i64) -> i64;
    /// Runs to its end once started, whoever leaves.
    #[rpc(no_cancel)]
    async fn commit(&self, n: u64) -> u64;
    /// Never answers by itself; its own deadline ends it.
    #[rpc(timeout = "50ms")]
    async fn stall(&self) -> u64;
}

#[derive(Default)]
struct UsersImpl {
    started: AtomicUsize,
    committed: AtomicUsize,
    release: tokio::sync::Notify,
}

impl Users for Arc<UsersImpl> {
    async fn get_user_by_id(&self, user_id: u64, with_manager: Option<bool>) -> String {
        format!("user {user_id} {with_manager:?}")
    }
    async fn add(&self, a: i64, b: i64) -> i64 {
        a * 1000 + b
    }
    async fn commit(&self, n: u64) -> u64 {
        let released = self.release.notified();
        self.started.fetch_add(1, Ordering::SeqCst);
        released.await;
        self.committed.fetch_add(1, Ordering::SeqCst);
        n
    }
    async fn stall(&self) -> u64 {
        std::future::pending().await
    }
}

#[tokio::test]
async fn methods_and_arguments_answer_to_every_spelling_a_caller_writes() {
    let users = Arc::new(UsersImpl::default());
    let (server, _, addr) = common::start_with(|server| server.serve(UsersServer::new(users))).await;
    let mut http = Http::connect(addr).await;
    let mut call = async |method: &str, params: Value| {
        http.call(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
            .await
    };
    for method in [
        "Users.get_user_by_id",
        "Users.getUserById",
        "get_user_by_id",
        "getUserById",
    ] {
        let answer = call(method, json!({"userId": 7, "withManager": true})).await;
        assert_eq!(answer["result"], "user 7 Some(true)", "{method}");
        let answer = call(method, json!({"user_id": 8})).await;
        assert_eq!(answer["result"], "user 8 None", "{method}");
        let answer = call(method, json!([9])).await;
        assert_eq!(answer["result"], "user 9 None", "{method}");
    }
    // Two services have `add`: the bare name is ambiguous, and says so.
    let answer = call("add", json!([1, 2])).await;
    assert_error(&answer, codes::METHOD_NOT_FOUND, json!(1), "Method not found");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`Shapes.add`") && message.contains("`Users.add`"),
        "{message}"
    );
    assert_eq!(call("Users.add", json!([1, 2])).await["result"], 1002);
    assert_eq!(call("Shapes.add", json!([1, 2])).await["result"], 3);
    // Names are exact otherwise.
    let answer = call("users.add", json!([1, 2])).await;
    assert_error(
        &answer,
        codes::METHOD_NOT_FOUND,
        json!(1),
        "Method not found: `users.add`",
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Errors: each with its code and words.

#[tokio::test]
async fn invalid_params_say_which_argument_and_why() {
    let (server, _, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let mut call = async |params: Value| {
        let answer = http
            .call(json!({"jsonrpc": "2.0", "id": 1, "method": "Shapes.add", "params": params}))
            .await;
        assert_eq!(answer["error"]["code"], codes::INVALID_PARAMS, "{answer}");
        answer["error"]["message"].as_str().unwrap().to_owned()
    };
    let message = call(json!([1, "two"])).await;
    assert!(
        message.starts_with("Invalid params") && message.contains("`b`"),
        "{message}"
    );
    let message = call(json!([1])).await;
    assert!(message.contains("argument `b` is missing"), "{message}");
    assert!(message.contains("(a: i64, b: i64)"), "{message}");
    let message = call(json!([1, 2, 3])).await;
    assert!(message.contains("3 arguments were given"), "{message}");
    let message = call(json!({"a": 1, "c": 2})).await;
    assert!(message.contains("there is no argument `c`"), "{message}");
    let message = call(json!({"a": 1})).await;
    assert!(message.contains("argument `b` is missing"), "{message}");
    // An out-of-range number names its argument too.
    let message = call(json!([1, 1e300])).await;
    assert!(message.contains("`b`"), "{message}");
    // `null` params are taken as none.
    let message = call(Value::Null).await;
    assert!(message.contains("no params were given"), "{message}");
    // Params that are neither an array nor an object make no request.
    for params in [json!("1, 2"), json!(3), json!(true)] {
        let answer = http
            .call(json!({"jsonrpc": "2.0", "id": 1, "method": "Shapes.add", "params": params}))
            .await;
        assert_error(&answer, codes::INVALID_REQUEST, json!(1), "Invalid Request");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_is_an_internal_error_with_the_binary_protocols_words() {
    let (server, _, addr) = common::start().await;
    let rust = ShapesClient::connect(addr).await.unwrap();
    let rust_error = rust.explode("kaboom".to_owned()).await.unwrap_err().to_string();
    let mut http = Http::connect(addr).await;
    let answer = http
        .call(json!({"jsonrpc": "2.0", "id": 1, "method": "explode", "params": ["kaboom"]}))
        .await;
    assert_eq!(answer["error"]["code"], codes::INTERNAL_ERROR, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("panicked") && message.contains("kaboom"),
        "{message}"
    );
    assert!(rust_error.contains("kaboom"), "{rust_error}");
    // The server goes on serving.
    assert_eq!(
        http.call(json!({"id": 2, "method": "add", "params": [1, 1]}))
            .await["result"],
        2
    );
    server.stop().await;
}

#[rpc::service]
pub trait Keeps {
    /// Answers at once; its caller runs it.
    async fn answer(&self) -> u64;
    /// Answers at once, and runs to its end whatever its caller does: it
    /// gets a task of its own from the start.
    #[rpc(no_cancel)]
    async fn keep(&self) -> u64;
}

struct Keeper;

impl Keeps for Keeper {
    async fn answer(&self) -> u64 {
        7
    }

    async fn keep(&self) -> u64 {
        9
    }
}

/// A JSON call that panics outside its handler (a subscriber failed) is
/// answered as a panicking handler's is, whether its caller runs it or it
/// runs to its end in a task of its own (which would otherwise take the
/// answer with it).
#[tokio::test]
async fn a_panic_outside_the_handler_of_a_json_call_is_answered() {
    let (server, _, addr) = common::start_with(|server| server.serve(KeepsServer::new(Keeper))).await;
    let mut http = Http::connect(addr).await;
    for (method, value) in [("Keeps.answer", 7), ("Keeps.keep", 9)] {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": []});
        assert_eq!(http.call(request.clone()).await["result"], value, "{method}");
        {
            // This runtime's one thread runs the server, the call's task and
            // the test.
            let failing = common::failing::Fails::at(common::failing::FailsAt::ServerSpan);
            let _guard = tracing::subscriber::set_default(failing);
            let answer = within(http.call(request.clone())).await;
            assert_eq!(
                answer["error"]["code"],
                codes::INTERNAL_ERROR,
                "{method}: {answer}"
            );
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(message.contains("the subscriber failed"), "{method}: {message}");
        }
        assert_eq!(http.call(request).await["result"], value, "{method}");
    }
    let stats = server.stats();
    assert_eq!((stats.calls_succeeded, stats.handler_panics), (4, 2), "{stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_application_error_is_an_error_object_with_the_value_in_data() {
    let (server, _, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let answer = http
        .call(json!({"jsonrpc": "2.0", "id": 1, "method": "div", "params": [1, 0]}))
        .await;
    assert_eq!(
        answer,
        json!({
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "code": codes::APPLICATION_ERROR,
                "message": "`Shapes.div` returned an error",
                "data": serde_json::to_value(MathError::DivisionByZero).unwrap(),
            }
        })
    );
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_travels_in_a_header_and_the_call_is_stopped_when_it_passes() {
    let (server, shapes, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "wait_for_release", "params": [1]}).to_string();
    // The handler waits for ever; only the deadline can answer.
    let answer = within(http.post_to("/rpc", body.clone(), &[("rpc-timeout", "50ms")])).await;
    assert_eq!(answer.status, StatusCode::OK);
    let answer = answer.json();
    assert_eq!(answer["error"]["code"], codes::DEADLINE_EXCEEDED, "{answer}");
    assert_eq!(shapes.waiting.load(Ordering::SeqCst), 1);
    // A header that is not a duration is refused, saying what it must be.
    let answer = http.post_to("/rpc", body, &[("rpc-timeout", "soon")]).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.text().contains("500ms"), "{}", answer.text());
    // The deadline counted as such.
    let stats = server.stats();
    assert_eq!(stats.calls_in_progress, 0, "{stats:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_caller_that_hangs_up_stops_its_call() {
    let (server, shapes, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let call = http.post(json!({"id": 1, "method": "wait_for_release", "params": [1]}).to_string());
    tokio::select! {
        _ = call => panic!("the handler never returns"),
        () = common::until_waiting(&shapes, 1) => {}
    }
    drop(http);
    within(async {
        while server.stats().calls_in_progress > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.stats().calls_cancelled, 1, "{:?}", server.stats());
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_caller_that_leaves_stops_its_calls() {
    let (server, shapes, addr) = common::start().await;
    let mut ws = Ws::connect(addr).await;
    for tag in 0..3 {
        ws.send(json!({"id": tag, "method": "wait_for_release", "params": [tag]}).to_string())
            .await;
    }
    within(common::until_waiting(&shapes, 3)).await;
    assert_eq!(server.stats().calls_in_progress, 3);
    ws.close().await;
    within(async {
        while server.stats().calls_in_progress > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.stats().calls_cancelled, 3, "{:?}", server.stats());
    assert_eq!(server.stats().open_connections, 0, "{:?}", server.stats());
    server.stop().await;
}

#[tokio::test]
async fn markers_hold_for_json_callers_too() {
    let users = Arc::new(UsersImpl::default());
    let (server, _, addr) =
        common::start_with(|server| server.serve(UsersServer::new(Arc::clone(&users)))).await;
    // A method's own deadline, when the caller sets none.
    let mut http = Http::connect(addr).await;
    let answer = within(http.call(json!({"id": 1, "method": "Users.stall"}))).await;
    assert_eq!(answer["error"]["code"], codes::DEADLINE_EXCEEDED, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("50ms"),
        "{answer}"
    );
    // `no_cancel`: the caller hangs up, the call runs on to its end.
    let call = http.post(json!({"id": 2, "method": "Users.commit", "params": [7]}).to_string());
    tokio::select! {
        _ = call => panic!("commit waits for its release"),
        () = async { while users.started.load(Ordering::SeqCst) == 0 { tokio::task::yield_now().await } } => {}
    }
    drop(http);
    // Give the server every chance to (wrongly) stop it: the connection's
    // end is seen before the release.
    within(async {
        while server.stats().open_connections > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    users.release.notify_waiters();
    within(async {
        while users.committed.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(server.stats().calls_cancelled, 0, "{:?}", server.stats());
    server.stop().await;
}

#[tokio::test]
async fn a_websocket_cancel_with_an_id_is_answered_and_the_upgrades_deadline_applies() {
    let (server, shapes, addr) = common::start().await;
    let mut ws = Ws::connect(addr).await;
    ws.send(json!({"id": "slow", "method": "wait_for_release", "params": [1]}).to_string())
        .await;
    within(common::until_waiting(&shapes, 1)).await;
    let answer = ws
        .call(json!({"id": 9, "method": "rpc.cancel", "params": {"call": "slow"}}))
        .await;
    assert_eq!(answer, json!({"jsonrpc": "2.0", "result": true, "id": 9}));
    let answer = ws
        .call(json!({"id": 10, "method": "rpc.cancel", "params": ["gone"]}))
        .await;
    assert_eq!(answer["result"], false);
    ws.close().await;

    // `rpc-timeout` on the upgrade request: every call on the socket.
    let upgrade = hyper::Request::get(format!("ws://{addr}/rpc"))
        .header("host", addr.to_string())
        .header("rpc-timeout", "50ms")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut socket, _) = tokio_tungstenite::client_async(upgrade, stream).await.unwrap();
    let request = json!({"id": 1, "method": "wait_for_release", "params": [2]}).to_string();
    futures::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::text(request),
    )
    .await
    .unwrap();
    let answer = within(socket.next()).await.unwrap().unwrap();
    let answer: Value = serde_json::from_str(answer.to_text().unwrap()).unwrap();
    assert_eq!(answer["error"]["code"], codes::DEADLINE_EXCEEDED, "{answer}");
    server.stop().await;
}

#[tokio::test]
async fn a_batchs_answers_add_up_to_no_more_than_one_answer_may_be() {
    let (server, _, addr) = common::start_with(|server| server.max_frame_len(16 * 1024)).await;
    let mut http = Http::connect(addr).await;
    // Each result is 6 000 bytes of JSON (`[7,7,...]`); two fit in 16 KiB.
    let batch: Vec<Value> = (0..3)
        .map(|id| json!({"id": id, "method": "sized", "params": [3000]}))
        .collect();
    let answers = http.call(Value::Array(batch)).await;
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3);
    let fitted = answers.iter().filter(|a| a.get("result").is_some()).count();
    let refused = answers
        .iter()
        .filter(|a| a["error"]["code"] == codes::TOO_LARGE)
        .count();
    assert_eq!((fitted, refused), (2, 1), "{answers:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_graceful_shutdown_tells_json_callers_their_call_was_interrupted() {
    let (server, shapes, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    let call = http.post(json!({"id": 1, "method": "wait_for_release", "params": [1]}).to_string());
    let shutdown = async {
        common::until_waiting(&shapes, 1).await;
        server.shutdown(Duration::ZERO).await;
    };
    let (answer, ()) = within(async { tokio::join!(call, shutdown) }).await;
    let answer = answer.json();
    assert_eq!(answer["error"]["code"], codes::INTERRUPTED, "{answer}");
}

// ---------------------------------------------------------------------------
// HTTP: paths, methods, CORS, the OpenRPC document.

#[tokio::test]
async fn http_paths_and_methods_get_answers_that_say_where_to_go() {
    let (server, _, addr) =
        common::start_with(|server| server.json_path("/api/v1").cors(rpc::Cors::none())).await;
    let mut http = Http::connect(addr).await;
    let body = json!({"id": 1, "method": "add", "params": [1, 2]}).to_string();
    assert_eq!(
        http.post_to("/api/v1", body.clone(), &[]).await.json()["result"],
        3
    );
    assert_eq!(http.post_to("/", body.clone(), &[]).await.json()["result"], 3);
    let missing = http.post_to("/rpc", body, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.text().contains("/api/v1"), "{}", missing.text());
    let wrong = http.get("/api/v1").await;
    assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(wrong.text().contains("POST"), "{}", wrong.text());
    let document = http.get("/api/v1/openrpc.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.json()["openrpc"], "1.3.2");
    server.stop().await;
}

async fn preflight(http: &mut Http, origin: &str) -> common::json::Answer {
    let request = hyper::Request::options("/rpc")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, rpc-timeout")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    http.send(request).await
}

#[tokio::test]
async fn browsers_on_allowed_origins_may_call_and_others_are_not_told_they_may() {
    let allowed = "https://app.example.com";
    let (server, _, addr) = common::start_with(|server| server.cors(rpc::Cors::origins([allowed]))).await;
    let mut http = Http::connect(addr).await;

    let answer = preflight(&mut http, allowed).await;
    assert!(answer.status.is_success(), "{answer:?}");
    let headers = &answer.headers;
    assert_eq!(headers["access-control-allow-origin"], allowed);
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed_headers.contains("content-type") && allowed_headers.contains("rpc-timeout"),
        "{allowed_headers}"
    );
    let body = json!({"id": 1, "method": "add", "params": [1, 2]}).to_string();
    let answer = http.post_to("/rpc", body.clone(), &[("origin", allowed)]).await;
    assert_eq!(answer.headers["access-control-allow-origin"], allowed);
    assert_eq!(answer.json()["result"], 3);

    let answer = preflight(&mut http, "https://evil.example").await;
    assert!(
        answer.headers.get("access-control-allow-origin").is_none(),
        "{answer:?}"
    );
    // A page elsewhere cannot make a visitor's browser call: not by a
    // form post, not by a WebSocket (neither needs a preflight).
    let answer = http
        .post_to("/rpc", body.clone(), &[("origin", "https://evil.example")])
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{answer:?}");
    assert!(answer.text().contains("Server::cors"), "{}", answer.text());
    assert!(answer.headers.get("access-control-allow-origin").is_none());
    let upgrade = hyper::Request::get(format!("ws://{addr}/rpc"))
        .header("host", addr.to_string())
        .header("origin", "https://evil.example")
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let refused = tokio_tungstenite::client_async(upgrade, stream).await;
    assert!(refused.is_err(), "a WebSocket from another origin is refused");
    // The server's own pages may call, and so may anything that is not a
    // browser (no Origin).
    let own = format!("http://{addr}");
    assert_eq!(
        http.post_to("/rpc", body.clone(), &[("origin", own.as_str())])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(http.post_to("/rpc", body, &[]).await.status, StatusCode::OK);
    server.stop().await;

    let (server, _, addr) = common::start_with(|server| server.cors(rpc::Cors::any())).await;
    let mut http = Http::connect(addr).await;
    let answer = preflight(&mut http, "https://anywhere.example").await;
    assert_eq!(answer.headers["access-control-allow-origin"], "*");
    server.stop().await;
}

#[tokio::test]
async fn the_openrpc_document_describes_every_method_its_params_results_and_errors() {
    let (server, addr) = shapes_server().await;
    let mut http = Http::connect(addr).await;
    let by_get = http.get("/rpc/openrpc.json").await;
    assert_eq!(by_get.status, StatusCode::OK);
    assert_eq!(by_get.headers["content-type"], "application/json");
    let document = by_get.json();
    let by_call = http
        .call(json!({"jsonrpc": "2.0", "id": 1, "method": "rpc.discover"}))
        .await;
    assert_eq!(by_call["result"], document);

    assert_eq!(document["openrpc"], "1.3.2");
    let methods = document["methods"].as_array().unwrap();
    let method = |name: &str| {
        methods
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in {methods:?}"))
            .clone()
    };
    for name in [
        "Shapes.add",
        "Shapes.promote",
        "Echo.echo",
        "Kinds.grow",
        "Kinds.find_user",
    ] {
        method(name);
    }
    let add = method("Shapes.add");
    assert_eq!(add["params"][0]["name"], "a");
    assert_eq!(add["params"][0]["required"], true);
    assert_eq!(add["params"][0]["schema"]["type"], "integer");
    assert_eq!(add["result"]["schema"]["type"], "integer");

    // User types are described by their serde shape, under components.
    let promote = method("Shapes.promote");
    let user_ref = promote["params"][0]["schema"]["$ref"].as_str().unwrap();
    assert_eq!(user_ref, "#/components/schemas/User");
    let user = &document["components"]["schemas"]["User"];
    assert_eq!(user["type"], "object");
    for field in ["id", "name", "tags", "manager"] {
        assert!(user["properties"].get(field).is_some(), "{user}");
    }
    let figure = &document["components"]["schemas"]["Figure"];
    assert!(figure.get("oneOf").is_some(), "{figure}");

    // An optional trailing argument is not required.
    let maybe = method("Kinds.maybe");
    assert_eq!(maybe["params"][1]["required"], false);

    // The errors a method can answer with, and its own error's data.
    let find_user = method("Kinds.find_user");
    let errors = find_user["errors"].as_array().unwrap();
    let app = errors
        .iter()
        .find(|e| e["code"] == codes::APPLICATION_ERROR)
        .unwrap();
    assert_eq!(app["data"]["type"], "string", "{app}");
    assert!(errors.iter().any(|e| e["code"] == codes::INVALID_PARAMS));
    assert!(errors.iter().any(|e| e["code"] == codes::DEADLINE_EXCEEDED));
    // The canonical name is the trait's; the camelCase spelling is noted.
    assert_eq!(find_user["x-camelCase"], "Kinds.findUser");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Streams over WebSocket.

#[rpc::service]
pub trait Feed {
    async fn count(&self, n: u32) -> Streaming<u32>;
    async fn sum(&self, numbers: Streaming<u32>) -> u64;
    async fn endless(&self, size: usize) -> Streaming<String>;
    async fn fail_after(&self, n: u32) -> Streaming<u32>;
}

#[derive(Default)]
struct FeedImpl {
    produced: Arc<AtomicU64>,
    stopped: Arc<AtomicU64>,
}

/// Counts the streams whose producer was dropped.
struct OnDrop(Arc<AtomicU64>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Feed for Arc<FeedImpl> {
    async fn count(&self, n: u32) -> Streaming<u32> {
        Streaming::iter(0..n)
    }
    async fn sum(&self, mut numbers: Streaming<u32>) -> u64 {
        let mut total = 0;
        while let Some(Ok(n)) = numbers.next().await {
            total += u64::from(n);
        }
        total
    }
    async fn endless(&self, size: usize) -> Streaming<String> {
        let produced = Arc::clone(&self.produced);
        let guard = OnDrop(Arc::clone(&self.stopped));
        Streaming::new(futures::stream::iter(0u64..).map(move |n| {
            let _alive = &guard;
            produced.fetch_add(1, Ordering::SeqCst);
            format!("{n}{}", ".".repeat(size))
        }))
    }
    async fn fail_after(&self, n: u32) -> Streaming<u32> {
        Streaming::from_results(
            futures::stream::iter(0..n)
                .map(Ok)
                .chain(futures::stream::once(async {
                    Err(rpc::Error::failed("the source ran dry"))
                })),
        )
    }
}

async fn feed_server() -> (rpc::ServerHandle, Arc<FeedImpl>, SocketAddr) {
    let feed = Arc::new(FeedImpl::default());
    let server = rpc::Server::new()
        .serve(FeedServer::new(Arc::clone(&feed)))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    (server, feed, addr)
}

#[tokio::test]
async fn a_stream_over_websocket_is_items_then_a_final_response() {
    let (server, _, addr) = feed_server().await;
    let mut ws = Ws::connect(addr).await;
    within(async {
        ws.send(json!({"jsonrpc": "2.0", "id": "c1", "method": "count", "params": [3]}).to_string())
            .await;
        for n in 0..3 {
            let item = ws.next().await.unwrap();
            assert_eq!(
                item,
                json!({"jsonrpc": "2.0", "method": "rpc.item", "params": {"call": "c1", "item": n}})
            );
        }
        assert_eq!(
            ws.next().await.unwrap(),
            json!({"jsonrpc": "2.0", "id": "c1", "result": null})
        );

        // A stream that fails ends with an error response after its items.
        ws.send(json!({"id": 2, "method": "fail_after", "params": [2]}).to_string())
            .await;
        assert_eq!(ws.next().await.unwrap()["params"]["item"], 0);
        assert_eq!(ws.next().await.unwrap()["params"]["item"], 1);
        let end = ws.next().await.unwrap();
        assert_eq!(end["id"], 2);
        assert_eq!(end["error"]["code"], codes::FAILED, "{end}");
        assert!(
            end["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the source ran dry"),
            "{end}"
        );

        // A stream from the caller cannot be sent as JSON.
        let answer = ws
            .call(json!({"id": 3, "method": "sum", "params": [[1, 2]]}))
            .await;
        assert_eq!(answer["error"]["code"], codes::NEEDS_STREAM, "{answer}");
    })
    .await;
    ws.close().await;

    // Over plain HTTP a stream is refused, pointing at the WebSocket.
    let mut http = Http::connect(addr).await;
    let answer = http
        .call(json!({"id": 1, "method": "count", "params": [3]}))
        .await;
    assert_eq!(answer["error"]["code"], codes::NEEDS_STREAM, "{answer}");
    assert!(
        answer["error"]["message"].as_str().unwrap().contains("WebSocket"),
        "{answer}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_cancels_a_stream_and_its_producer_stops() {
    let (server, feed, addr) = feed_server().await;
    let mut ws = Ws::connect(addr).await;
    within(async {
        ws.send(json!({"id": 41, "method": "endless", "params": [8]}).to_string())
            .await;
        for _ in 0..10 {
            assert_eq!(ws.next().await.unwrap()["params"]["call"], 41);
        }
        ws.send(json!({"method": "rpc.cancel", "params": {"call": 41}}).to_string())
            .await;
        while feed.stopped.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // The connection goes on: drain what was in flight, then call.
        ws.send(json!({"id": "after", "method": "count", "params": [1]}).to_string())
            .await;
        loop {
            let message = ws.next().await.unwrap();
            if message["id"] == "after" {
                break;
            }
            assert!(message["id"] != 41, "a cancelled call is not answered: {message}");
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_reader_that_stops_reading_holds_its_stream_back() {
    let (server, feed, addr) = feed_server().await;
    let mut ws = Ws::connect(addr).await;
    let item_len = 64 * 1024;
    within(async {
        ws.send(json!({"id": 1, "method": "endless", "params": [item_len]}).to_string())
            .await;
        assert_eq!(ws.next().await.unwrap()["params"]["call"], 1);
    })
    .await;
    // Stop reading. The producer can run ahead by what the queue and the
    // sockets' buffers hold, and no further, however long it is given.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let produced = feed.produced.load(Ordering::SeqCst);
    // 256 queued messages, plus what fits in loopback buffers (a few MiB).
    let bound = 256 + (32 * 1024 * 1024) / item_len as u64;
    assert!(
        produced < bound,
        "produced {produced} items of {item_len} bytes with nobody reading"
    );
    // Reading again lets it go on.
    within(async {
        for _ in 0..(produced + 10) {
            ws.next().await.unwrap();
        }
    })
    .await;
    assert!(feed.produced.load(Ordering::SeqCst) > produced);
    drop(ws);
    within(async {
        while feed.stopped.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The doors can be closed.

#[tokio::test]
async fn each_door_can_be_closed() {
    let (server, _, addr) = common::start_with(|server| server.binary(false)).await;
    let mut http = Http::connect(addr).await;
    assert_eq!(
        http.call(json!({"id": 1, "method": "add", "params": [1, 2]}))
            .await["result"],
        3
    );
    let refused = ShapesClient::connect(addr).await;
    assert!(refused.is_err(), "the binary protocol is switched off");
    server.stop().await;

    let (server, _, addr) = common::start_with(|server| server.json(false)).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = hyper::client::conn::http1::handshake::<_, http_body_util::Full<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await;
    let (mut sender, connection) = handshake.unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::post("/rpc")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"{}")))
        .unwrap();
    assert!(
        sender.send_request(request).await.is_err(),
        "the JSON door is switched off"
    );
    let rust = ShapesClient::connect(addr).await.unwrap();
    assert_eq!(rust.add(1, 2).await.unwrap(), 3);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Node: a JavaScript caller, as users would write one.

/// The calculator example's service, for its JavaScript client to call.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/calculator/service.rs"]
mod calculator;

/// The microservices example's services.
#[allow(dead_code, unreachable_pub)]
#[path = "../examples/microservices/services.rs"]
mod microservices;

/// Runs `examples/js/<script>` against `url`; fails the test if node is
/// installed and the script fails.
async fn run_node(script: &str, url: String) {
    let Some(node) = node() else {
        eprintln!("node is not on the PATH; the JavaScript caller was not run");
        return;
    };
    let script = format!("{}/examples/js/{script}", env!("CARGO_MANIFEST_DIR"));
    let output = tokio::process::Command::new(&node.path)
        .args(node.flags())
        .arg(&script)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output = within(output).await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node {script} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("all calls answered as expected"),
        "{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_example_calls_the_calculator_over_http_and_websocket() {
    let server = rpc::Server::new()
        .serve(calculator::CalculatorServer::new(calculator::Calc))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    run_node("calculator.mjs", format!("http://{}/rpc", server.local_addr())).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_example_places_orders_through_both_protocols() {
    let users = microservices::serve_users("127.0.0.1:0").await.unwrap();
    let orders = microservices::serve_orders("127.0.0.1:0", users.local_addr())
        .await
        .unwrap();
    run_node("microservices.mjs", format!("http://{}/rpc", orders.local_addr())).await;
    orders.stop().await;
    users.stop().await;
}

/// Node, if installed, and its major version.
struct Node {
    path: String,
    major: u32,
}

impl Node {
    /// Node 21 and older need a flag for the `WebSocket` global.
    fn flags(&self) -> Vec<&'static str> {
        if self.major < 22 {
            vec!["--experimental-websocket"]
        } else {
            vec![]
        }
    }
}

fn node() -> Option<Node> {
    let output = std::process::Command::new("node")
        .arg("--version")
        .output()
        .ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    let major = version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()?;
    assert!(
        major >= 18,
        "node {version} is too old for the JavaScript example (18 or newer)"
    );
    Some(Node {
        path: "node".to_owned(),
        major,
    })
}

/// A JSON call that panics outside its handler is answered as a panicked
/// handler's would be, and the connection goes on.
#[tokio::test]
async fn a_json_call_that_panics_outside_its_handler_is_answered() {
    let (server, _, addr) = common::start().await;
    let mut http = Http::connect(addr).await;
    // This runtime's one thread runs both sides: the subscriber is theirs.
    let answer = {
        let _guard = tracing::subscriber::set_default(common::failing::Fails::at(
            common::failing::FailsAt::ServerSpan,
        ));
        http.call(json!({"jsonrpc": "2.0", "id": 1, "method": "add", "params": [1, 2]}))
            .await
    };
    assert_eq!(answer["error"]["code"], codes::INTERNAL_ERROR, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("the subscriber failed"), "{message}");
    assert_eq!(
        http.call(json!({"id": 2, "method": "add", "params": [2, 3]}))
            .await["result"],
        5
    );
    assert_eq!(server.stats().handler_panics, 1);
    server.stop().await;
}
