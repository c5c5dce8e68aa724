//! Compatible by construction: two builds of one service whose methods
//! changed shape, over real sockets. The old client is refused with
//! `IncompatibleMethod` naming the difference, never handed a wrong value;
//! unchanged methods go on working on the same connection; the
//! breaking-change check lists the same changes.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;

use common::raw;
use rpc::compat::{Contract, Fingerprint, breaking_changes};

/// The service as the old client was built.
mod before {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Span {
        pub lo: u32,
        pub hi: u32,
    }

    #[derive(Serialize, Deserialize)]
    pub struct User {
        pub name: String,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Color {
        Red,
        Green,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    #[rpc::service]
    pub trait Shop {
        async fn add(&self, a: i64, b: i64) -> i64;
        async fn width(&self, span: Span) -> u32;
        async fn save(&self, user: User) -> bool;
        async fn paint(&self, color: Color) -> String;
        async fn count(&self) -> u32;
        async fn ticks(&self, n: u32) -> rpc::Streaming<u32>;
        async fn echo(&self, text: String) -> String;
        async fn locate(&self, at: Point) -> i32;
        async fn nudge(&self, at: Point) -> i32;
    }
}

/// The service as the server runs it now.
mod now {
    use serde::{Deserialize, Serialize};

    /// Fields swapped: the same bytes mean the other field.
    #[derive(Serialize, Deserialize)]
    pub struct Span {
        pub hi: u32,
        pub lo: u32,
    }

    /// A field added.
    #[derive(Serialize, Deserialize)]
    pub struct User {
        pub name: String,
        pub email: String,
    }

    /// Variants reordered.
    #[derive(Serialize, Deserialize)]
    pub enum Color {
        Green,
        Red,
    }

    /// Renamed fields, deliberately: the bytes are the same.
    #[derive(Serialize, Deserialize)]
    pub struct Point {
        pub east: i32,
        pub north: i32,
    }

    #[rpc::service]
    pub trait Shop {
        /// A primitive changed.
        async fn add(&self, a: u64, b: i64) -> i64;
        async fn width(&self, span: Span) -> u32;
        async fn save(&self, user: User) -> bool;
        async fn paint(&self, color: Color) -> String;
        /// The result changed.
        async fn count(&self) -> u64;
        /// The stream's item changed.
        async fn ticks(&self, n: u32) -> rpc::Streaming<u64>;
        async fn echo(&self, text: String) -> String;
        /// The old shape is accepted on purpose: only names changed.
        #[rpc(accepts = "a1a7d2d86773cae8")]
        async fn locate(&self, at: Point) -> i32;
        /// Not checked at all.
        #[rpc(unchecked)]
        async fn nudge(&self, at: Point) -> i32;
        /// A method added: old clients never call it.
        async fn added(&self) -> u8;
    }
}

struct Shop;

impl now::Shop for Shop {
    async fn add(&self, a: u64, b: i64) -> i64 {
        a as i64 + b
    }
    async fn width(&self, span: now::Span) -> u32 {
        span.hi.wrapping_sub(span.lo)
    }
    async fn save(&self, _user: now::User) -> bool {
        true
    }
    async fn paint(&self, color: now::Color) -> String {
        match color {
            now::Color::Green => "green".to_owned(),
            now::Color::Red => "red".to_owned(),
        }
    }
    async fn count(&self) -> u64 {
        7
    }
    async fn ticks(&self, n: u32) -> rpc::Streaming<u64> {
        rpc::Streaming::iter(0..u64::from(n))
    }
    async fn echo(&self, text: String) -> String {
        text
    }
    async fn locate(&self, at: now::Point) -> i32 {
        at.east * 10 + at.north
    }
    async fn nudge(&self, at: now::Point) -> i32 {
        at.east + at.north
    }
    async fn added(&self) -> u8 {
        1
    }
}

async fn serve_now() -> (rpc::ServerHandle, SocketAddr) {
    let server = rpc::Server::new()
        .serve(now::ShopServer::new(Shop))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();
    (server, addr)
}

/// The difference an old client's call was refused with.
fn refused<T: std::fmt::Debug>(method: &str, result: Result<T, rpc::Error>) -> String {
    refused_as(&format!("Shop.{method}"), result)
}

fn refused_as<T: std::fmt::Debug>(method: &str, result: Result<T, rpc::Error>) -> String {
    match result {
        Err(rpc::Error::IncompatibleMethod {
            method: named,
            difference,
        }) => {
            assert_eq!(named, method);
            difference
        }
        other => panic!("`{method}` must be refused as incompatible, got {other:?}"),
    }
}

#[tokio::test]
async fn an_old_client_is_refused_for_each_changed_method_and_served_for_the_rest() {
    let (_server, addr) = serve_now().await;
    let old = before::ShopClient::connect(addr).await.unwrap();

    assert_eq!(old.echo("before".to_owned()).await.unwrap(), "before");
    assert_eq!(
        refused("add", old.add(5, 10).await),
        "argument `a`: the client has i64, the server has u64"
    );
    assert_eq!(
        refused("width", old.width(before::Span { lo: 3, hi: 10 }).await),
        "argument `span`: field 1 of `Span` is `lo` in the client and `hi` in the server"
    );
    assert_eq!(
        refused(
            "save",
            old.save(before::User {
                name: "ada".to_owned()
            })
            .await
        ),
        "argument `user`: the server has field `email` of `User` that the client lacks"
    );
    assert_eq!(
        refused("paint", old.paint(before::Color::Red).await),
        "argument `color`: variant 1 of `Color` is `Red` in the client and `Green` in the server"
    );
    assert_eq!(
        refused("count", old.count().await),
        "the result: the client has u32, the server has u64"
    );
    let mut ticks = old.ticks(3);
    assert_eq!(
        refused("ticks", ticks.next().await.unwrap()),
        "the item of the stream the server returns: the client has u32, the server has u64"
    );
    assert!(ticks.next().await.is_none());

    // The whole sentence says what to do about it.
    let err = old.add(5, 10).await.unwrap_err().to_string();
    assert!(
        err.contains("`Shop.add` differs between this client and the server"),
        "{err}"
    );
    assert!(err.contains("docs/COMPATIBILITY.md"), "{err}");

    // The connection and the unchanged method went on throughout.
    assert_eq!(old.echo("after".to_owned()).await.unwrap(), "after");
}

#[tokio::test]
async fn accepted_old_fingerprints_and_unchecked_methods_run() {
    // The literal in `#[rpc(accepts)]` is the old build's fingerprint, as
    // its descriptor (or a refusal) shows it.
    let old_locate = before::ShopRequest::descriptor()
        .method("locate")
        .unwrap()
        .fingerprint()
        .unwrap();
    assert_eq!(old_locate, "a1a7d2d86773cae8".parse::<Fingerprint>().unwrap());
    let new_locate = now::ShopRequest::descriptor().method("locate").unwrap();
    assert_ne!(new_locate.fingerprint(), Some(old_locate));
    assert!(new_locate.admits(old_locate));

    let (_server, addr) = serve_now().await;
    let old = before::ShopClient::connect(addr).await.unwrap();
    assert_eq!(old.locate(before::Point { x: 3, y: 4 }).await.unwrap(), 34);
    assert_eq!(old.nudge(before::Point { x: 3, y: 4 }).await.unwrap(), 7);

    // A new client is, of course, served everywhere.
    let new = now::ShopClient::connect(addr).await.unwrap();
    assert_eq!(new.add(5, 10).await.unwrap(), 15);
    assert_eq!(new.count().await.unwrap(), 7);
    assert_eq!(new.added().await.unwrap(), 1);
}

/// A request written by hand: `Shop.echo` of "hi", with the descriptor
/// of `method` (its fingerprint travels with the call).
struct ByHand {
    method: &'static str,
}

impl rpc::RequestMessage for ByHand {
    fn method(&self) -> &'static str {
        "Shop.echo"
    }
    fn encode_args(&self, out: &mut bytes::BytesMut) -> Result<(), rpc::Error> {
        // `("hi",)` in bincode: the length, then the bytes.
        out.extend_from_slice(&[2, b'h', b'i']);
        Ok(())
    }
    fn descriptor(&self) -> Option<&'static rpc::descriptor::MethodDescriptor> {
        now::ShopRequest::descriptor().method(self.method)
    }
}

#[tokio::test]
async fn a_request_written_by_hand_goes_by_its_own_name_whatever_its_descriptor() {
    let (_server, addr) = serve_now().await;
    let client = rpc::ClientBuilder::new().connect(addr).await.unwrap();
    // Its own descriptor: served, checked against its fingerprint.
    let echoed: String = client.call(ByHand { method: "echo" }, None).await.unwrap();
    assert_eq!(echoed, "hi");
    // Another method's: still `Shop.echo` on the wire (not `Shop.count`),
    // with `count`'s fingerprint, so refused, twice over.
    for _ in 0..2 {
        let wrong = client.call::<_, String>(ByHand { method: "count" }, None).await;
        let difference = refused_as("Shop.echo", wrong);
        assert!(difference.contains("argument"), "{difference}");
    }
}

#[tokio::test]
async fn a_client_of_protocol_version_2_is_served_without_a_check() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_server, addr) = serve_now().await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"\x89RPC\r\n\x1a\n\x02\x00\x00\x00\x00\x00\x00\x01")
        .await
        .unwrap();
    let mut preface = [0u8; 16];
    socket.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface[8..10], &[2, 0], "the server answers in version 2");

    // `Shop.count()` in version 2: budget, name, empty metadata, no
    // arguments. Nothing says which shape the client has, so the call runs.
    let mut payload = 1_000_000u64.to_le_bytes().to_vec();
    payload.push(10);
    payload.extend_from_slice(b"Shop.count");
    payload.extend_from_slice(&[0, 0]);
    socket.write_all(&raw::frame(1, 1, &payload)).await.unwrap();
    assert_eq!(raw::read_frame(&mut socket).await, (2, 1, vec![7]), "a response");
}

#[tokio::test]
async fn a_refusal_on_the_wire_is_a_sentence_and_the_servers_form() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_server, addr) = serve_now().await;
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"\x89RPC\r\n\x1a\n\x03\x00\x00\x00\x00\x00\x00\x01")
        .await
        .unwrap();
    let mut preface = [0u8; 16];
    socket.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface[8..10], &[3, 0]);

    // `Shop.count()` with a fingerprint no build has.
    let mut payload = 1_000_000u64.to_le_bytes().to_vec();
    payload.push(10);
    payload.extend_from_slice(b"Shop.count");
    payload.extend_from_slice(&0x1234u64.to_le_bytes());
    payload.extend_from_slice(&[0, 0]);
    socket.write_all(&raw::frame(1, 1, &payload)).await.unwrap();
    let (kind, _, answer) = raw::read_frame(&mut socket).await;
    assert_eq!(kind, 3, "an error");
    assert_eq!(answer[0], 14, "incompatible method");
    let message = String::from_utf8(answer[1..].to_vec()).unwrap();
    let (sentence, form) = message.split_once('\n').unwrap();
    let ours = now::ShopRequest::descriptor().method("count").unwrap();
    assert_eq!(
        sentence,
        format!(
            "`Shop.count` has another shape on the server: count() -> u64 (fingerprint {}; the client's is 0000000000001234)",
            ours.fingerprint().unwrap()
        )
    );
    let form: rpc::compat::MethodForm = serde_json::from_str(form).unwrap();
    assert_eq!(&form, ours.form().unwrap());
}

#[test]
fn the_breaking_change_check_lists_each_change() {
    let old = before::ShopRequest::descriptor().contract();
    let new = now::ShopRequest::descriptor().contract();
    let listed: Vec<String> = breaking_changes(&old, &new)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        listed,
        [
            "`Shop.add`: argument `a`: the old version has i64, the new version has u64",
            "`Shop.width`: argument `span`: field 1 of `Span` is `lo` in the old version and `hi` in the new version",
            "`Shop.width`: argument `span`: field 2 of `Span` is `hi` in the old version and `lo` in the new version",
            "`Shop.save`: argument `user`: the new version has field `email` of `User` that the old version lacks",
            "`Shop.paint`: argument `color`: variant 1 of `Color` is `Red` in the old version and `Green` in the new version",
            "`Shop.paint`: argument `color`: variant 2 of `Color` is `Green` in the old version and `Red` in the new version",
            "`Shop.count`: the result: the old version has u32, the new version has u64",
            "`Shop.ticks`: the item of the stream the server returns: the old version has u32, the new version has u64",
            "`Shop.nudge`: argument `at`: field 1 of `Point` is `x` in the old version and `east` in the new version",
            "`Shop.nudge`: argument `at`: field 2 of `Point` is `y` in the old version and `north` in the new version",
        ]
    );

    // Going back removes `added`, which clients of the new build call.
    let back: Vec<String> = breaking_changes(&new, &old)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        back.contains(
            &"`Shop.added`: the method was removed (old clients get \"unknown method\")".to_owned()
        ),
        "{back:?}"
    );

    // A contract survives being written and read back.
    let json = now::ShopServer::<Shop>::descriptor_json();
    assert_eq!(Contract::from_json(&json).unwrap(), new);
    assert!(breaking_changes(&new, &Contract::from_json(&json).unwrap()).is_empty());
}

/// Compatible changes: a method added, a type renamed, docs and markers.
mod grown {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Range {
        pub lo: u32,
        pub hi: u32,
    }

    #[derive(Serialize, Deserialize)]
    pub struct User {
        pub name: String,
    }

    #[derive(Serialize, Deserialize)]
    pub enum Color {
        Red,
        Green,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Point {
        pub x: i32,
        pub y: i32,
    }

    #[rpc::service]
    pub trait Shop {
        #[rpc(idempotent)]
        async fn add(&self, a: i64, b: i64) -> i64;
        /// `Span` is called `Range` now.
        async fn width(&self, span: Range) -> u32;
        async fn save(&self, user: User) -> bool;
        #[rpc(timeout = "5s")]
        async fn paint(&self, color: Color) -> String;
        async fn count(&self) -> u32;
        async fn ticks(&self, n: u32) -> rpc::Streaming<u32>;
        async fn echo(&self, text: String) -> String;
        async fn locate(&self, at: Point) -> i32;
        async fn nudge(&self, at: Point) -> i32;
        async fn size(&self) -> u64;
    }
}

#[test]
fn compatible_changes_pass_the_check_and_keep_every_fingerprint() {
    let old = before::ShopRequest::descriptor().contract();
    let new = grown::ShopRequest::descriptor().contract();
    assert_eq!(breaking_changes(&old, &new), []);
    for method in &old.methods {
        let grown = new.methods.iter().find(|m| m.name == method.name).unwrap();
        assert_eq!(grown.fingerprint, method.fingerprint, "{}", method.name);
    }
}

/// The calculator of `examples/calculator`, whose descriptor is checked in
/// at `tests/descriptors/Calculator.json`.
#[path = "../examples/calculator/service.rs"]
#[allow(dead_code)]
mod calculator;

const CHECKED_IN: &str = include_str!("descriptors/Calculator.json");

#[test]
fn the_calculator_keeps_its_checked_in_contract() {
    let checked_in = Contract::from_json(CHECKED_IN).unwrap();
    let built = calculator::CalculatorRequest::descriptor().contract();
    let breaking = breaking_changes(&checked_in, &built);
    assert!(
        breaking.is_empty(),
        "the Calculator changed in ways its old clients would be refused for:\n{}\n\
         (if that is intended, write the new descriptor with \
         `cargo run --example calculator -- descriptor > tests/descriptors/Calculator.json`)",
        breaking
            .iter()
            .map(|change| format!("  {change}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The calculator with `add` changed as in the issue that asked for this.
mod changed_calculator {
    #[rpc::service]
    pub trait Calculator {
        async fn add(&self, a: u64, b: i64) -> i64;
    }
}

#[test]
fn the_calculator_check_fails_on_an_incompatible_change() {
    let checked_in = Contract::from_json(CHECKED_IN).unwrap();
    let mut changed = changed_calculator::CalculatorRequest::descriptor().contract();
    // Only `add` is compared: the rest of the calculator is as checked in.
    for method in &checked_in.methods {
        if method.name != "add" {
            changed.methods.push(method.clone());
        }
    }
    let breaking: Vec<String> = breaking_changes(&checked_in, &changed)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        breaking,
        ["`Calculator.add`: argument `a`: the old version has i64, the new version has u64"]
    );
}

/// Types the fingerprint has to think about: one that contains itself, and
/// one whose `Deserialize` cannot be traced.
mod odd {
    use serde::{Deserialize, Deserializer, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct Tree {
        pub value: u32,
        pub kids: Vec<Tree>,
    }

    /// Reads whatever comes, as self-describing formats allow: serde cannot
    /// say what shape that is.
    #[derive(Debug, Serialize)]
    pub struct Anything(pub u32);

    impl<'de> Deserialize<'de> for Anything {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Anything, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = Anything;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a number")
                }
                fn visit_u32<E>(self, v: u32) -> Result<Anything, E> {
                    Ok(Anything(v))
                }
                fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Anything, E> {
                    u32::try_from(v).map(Anything).map_err(E::custom)
                }
            }
            deserializer.deserialize_any(Visitor)
        }
    }

    /// An enum inside other types, with an enum inside one of its variants.
    #[derive(Serialize, Deserialize)]
    pub enum Role {
        Guest,
        Admin { level: u8 },
        Owner(Option<Grant>),
    }

    #[derive(Serialize, Deserialize)]
    pub enum Grant {
        Read,
        Write,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Member {
        pub name: String,
        pub role: Role,
    }

    #[rpc::service]
    pub trait Odd {
        async fn sum(&self, tree: Tree) -> u64;
        async fn any(&self, value: u32) -> Anything;
        async fn promote(&self, member: Member) -> Vec<Role>;
    }
}

/// `odd` with the nested enum's inner variants reordered.
mod odd_later {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub enum Role {
        Guest,
        Admin { level: u8 },
        Owner(Option<Grant>),
    }

    #[derive(Serialize, Deserialize)]
    pub enum Grant {
        Write,
        Read,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Member {
        pub name: String,
        pub role: Role,
    }

    #[rpc::service]
    pub trait Odd {
        async fn promote(&self, member: Member) -> Vec<Role>;
    }
}

struct Odd;

impl odd::Odd for Odd {
    async fn sum(&self, tree: odd::Tree) -> u64 {
        u64::from(tree.value) + tree.kids.into_iter().map(|kid| u64::from(kid.value)).sum::<u64>()
    }
    async fn any(&self, value: u32) -> odd::Anything {
        odd::Anything(value)
    }
    async fn promote(&self, member: odd::Member) -> Vec<odd::Role> {
        vec![member.role]
    }
}

#[test]
fn enums_inside_other_types_are_traced_to_their_last_variant() {
    let promote = odd::OddRequest::descriptor().method("promote").unwrap();
    let json = serde_json::to_string(promote.form().unwrap()).unwrap();
    for variant in ["Guest", "Admin", "Owner", "Read", "Write"] {
        assert!(
            json.contains(&format!("\"{variant}\"")),
            "{variant} missing from {json}"
        );
    }
    let later = odd_later::OddRequest::descriptor().method("promote").unwrap();
    assert_ne!(promote.fingerprint(), later.fingerprint());
    let old = odd::OddRequest::descriptor().contract();
    let new = odd_later::OddRequest::descriptor().contract();
    let changes: Vec<String> = breaking_changes(&old, &new)
        .iter()
        .filter(|change| change.method == "Odd.promote")
        .map(|change| change.change.clone())
        .collect();
    assert_eq!(
        changes[0],
        "argument `member`, field `Member.role`, variant `Role::Owner`, inside the `Option`: variant 1 of `Grant` is `Read` in the old version and `Write` in the new version"
    );
}

#[tokio::test]
async fn recursive_types_are_fingerprinted_and_untraceable_ones_go_unchecked() {
    let descriptor = odd::OddRequest::descriptor();
    let sum = descriptor.method("sum").unwrap();
    assert_eq!(sum.form().unwrap().to_string(), "(tree: Tree) -> u64");
    assert!(sum.fingerprint().is_some());
    let any = descriptor.method("any").unwrap();
    assert_eq!(any.fingerprint(), None);
    let why = any.form().unwrap_err();
    assert!(why.starts_with("the result type could not be traced"), "{why}");
    let contract = descriptor.contract();
    assert_eq!(contract.methods[1].untraceable.as_deref(), Some(why));
    assert_eq!(contract.methods[1].signature, "any(value: u32) -> Anything");

    let server = rpc::Server::new()
        .serve(odd::OddServer::new(Odd))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = odd::OddClient::connect(server.local_addr()).await.unwrap();
    let tree = odd::Tree {
        value: 1,
        kids: vec![odd::Tree {
            value: 2,
            kids: Vec::new(),
        }],
    };
    assert_eq!(client.sum(tree).await.unwrap(), 3);
    // bincode cannot read `Anything` either (it is not self-describing),
    // but the call is not refused for its shape: it fails as it always did.
    let err = client.any(5).await.unwrap_err();
    assert!(matches!(err, rpc::Error::BadResponse { .. }), "{err:?}");
}

/// Two shapes of a method whose signature alone is longer than the
/// smallest frame a client may accept.
mod long_before {
    #[rpc::service]
    pub trait Long {
        #[allow(clippy::too_many_arguments)]
        async fn many(
            &self,
            argument_number_00_with_a_really_quite_long_descriptive_name: u8,
            argument_number_01_with_a_really_quite_long_descriptive_name: u8,
            argument_number_02_with_a_really_quite_long_descriptive_name: u8,
            argument_number_03_with_a_really_quite_long_descriptive_name: u8,
            argument_number_04_with_a_really_quite_long_descriptive_name: u8,
            argument_number_05_with_a_really_quite_long_descriptive_name: u8,
            argument_number_06_with_a_really_quite_long_descriptive_name: u8,
            argument_number_07_with_a_really_quite_long_descriptive_name: u8,
            argument_number_08_with_a_really_quite_long_descriptive_name: u8,
            argument_number_09_with_a_really_quite_long_descriptive_name: u8,
            argument_number_10_with_a_really_quite_long_descriptive_name: u8,
            argument_number_11_with_a_really_quite_long_descriptive_name: u8,
            argument_number_12_with_a_really_quite_long_descriptive_name: u8,
            argument_number_13_with_a_really_quite_long_descriptive_name: u8,
            argument_number_14_with_a_really_quite_long_descriptive_name: u8,
            argument_number_15_with_a_really_quite_long_descriptive_name: u8,
        ) -> u8;
        async fn ping(&self) -> u8;
    }
}

mod long_now {
    #[rpc::service]
    pub trait Long {
        #[allow(clippy::too_many_arguments)]
        async fn many(
            &self,
            argument_number_00_with_a_really_quite_long_descriptive_name: u8,
            argument_number_01_with_a_really_quite_long_descriptive_name: u8,
            argument_number_02_with_a_really_quite_long_descriptive_name: u8,
            argument_number_03_with_a_really_quite_long_descriptive_name: u8,
            argument_number_04_with_a_really_quite_long_descriptive_name: u8,
            argument_number_05_with_a_really_quite_long_descriptive_name: u8,
            argument_number_06_with_a_really_quite_long_descriptive_name: u8,
            argument_number_07_with_a_really_quite_long_descriptive_name: u8,
            argument_number_08_with_a_really_quite_long_descriptive_name: u8,
            argument_number_09_with_a_really_quite_long_descriptive_name: u8,
            argument_number_10_with_a_really_quite_long_descriptive_name: u8,
            argument_number_11_with_a_really_quite_long_descriptive_name: u8,
            argument_number_12_with_a_really_quite_long_descriptive_name: u8,
            argument_number_13_with_a_really_quite_long_descriptive_name: u8,
            argument_number_14_with_a_really_quite_long_descriptive_name: u8,
            argument_number_15_with_a_really_quite_long_descriptive_name: u16,
        ) -> u8;
        async fn ping(&self) -> u8;
    }
}

struct Long;

impl long_now::Long for Long {
    async fn many(
        &self,
        _a00: u8,
        _a01: u8,
        _a02: u8,
        _a03: u8,
        _a04: u8,
        _a05: u8,
        _a06: u8,
        _a07: u8,
        _a08: u8,
        _a09: u8,
        _a10: u8,
        _a11: u8,
        _a12: u8,
        _a13: u8,
        _a14: u8,
        _a15: u16,
    ) -> u8 {
        0
    }
    async fn ping(&self) -> u8 {
        1
    }
}

#[tokio::test]
async fn a_refusal_fits_the_smallest_frame_a_client_accepts() {
    let server = rpc::Server::new()
        .serve(long_now::LongServer::new(Long))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = long_before::LongClient::from_client(
        rpc::ClientBuilder::new()
            .max_frame_len(1024)
            .connect(server.local_addr())
            .await
            .unwrap(),
    );
    let signature = long_now::LongRequest::descriptor()
        .method("many")
        .unwrap()
        .form()
        .unwrap()
        .to_string();
    assert!(signature.len() > 1024, "{}", signature.len());
    // The server's form does not fit, so the client has the server's
    // sentence, cut to its limit; the connection goes on.
    let difference = refused_as(
        "Long.many",
        client.many(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1).await,
    );
    assert!(
        difference.starts_with("`Long.many` has another shape on the server: many("),
        "{difference}"
    );
    assert!(difference.len() < 1024);
    assert_eq!(client.ping().await.unwrap(), 1);
}

/// Recursion is told apart by where it points, not by type names.
mod recursive_p {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct A {
        pub x: (u8, Option<Box<A>>),
        pub z: u16,
    }

    #[derive(Serialize, Deserialize)]
    pub struct Tree {
        pub kids: Vec<Tree>,
    }

    #[rpc::service]
    pub trait Rec {
        async fn walk(&self, a: A) -> u8;
        async fn grow(&self, tree: Tree) -> u8;
    }
}

mod recursive_q {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub struct A {
        pub x: T,
        pub z: u16,
    }

    #[derive(Serialize, Deserialize)]
    pub struct T(u8, Option<Box<T>>);

    #[derive(Serialize, Deserialize)]
    pub struct Tree {
        pub kids: Vec<Tree>,
    }

    /// A newtype around a recursive type: the same bytes.
    #[derive(Serialize, Deserialize)]
    pub struct Forest(Tree);

    #[rpc::service]
    pub trait Rec {
        async fn walk(&self, a: A) -> u8;
        async fn grow(&self, tree: Forest) -> u8;
    }
}

#[test]
fn recursive_types_differ_by_where_they_point() {
    let p = recursive_p::RecRequest::descriptor();
    let q = recursive_q::RecRequest::descriptor();
    let fingerprint =
        |d: &rpc::descriptor::ServiceDescriptor, m: &str| d.method(m).unwrap().fingerprint().unwrap();
    assert_ne!(fingerprint(p, "walk"), fingerprint(q, "walk"));
    assert_eq!(fingerprint(p, "grow"), fingerprint(q, "grow"));
}

/// A server of protocol version 2, as the build before fingerprints
/// behaves: it sends its preface, closes on a client of another version,
/// and answers `Shop.count` with 7 after checking the version 2 head
/// (budget, name, metadata, no arguments) to the byte.
async fn version_2_server() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                socket
                    .write_all(b"\x89RPC\r\n\x1a\n\x02\x00\x00\x01\x00\x00\x00\x01")
                    .await
                    .unwrap();
                let mut theirs = [0u8; 16];
                if socket.read_exact(&mut theirs).await.is_err() || theirs[8] != 2 {
                    return;
                }
                loop {
                    let mut peek = [0u8; 1];
                    if socket.peek(&mut peek).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let (_, id, payload) = raw::read_frame(&mut socket).await;
                    let name_len = usize::from(payload[8]);
                    assert_eq!(&payload[9..9 + name_len], b"Shop.count");
                    let rest = &payload[9 + name_len..];
                    let metadata = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
                    assert_eq!(rest.len(), 2 + metadata, "no fingerprint, no arguments");
                    socket.write_all(&raw::frame(2, id, &[7])).await.unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_server_of_protocol_version_2_is_called_without_a_fingerprint() {
    let addr = version_2_server().await;
    let client = before::ShopClient::connect(addr).await.unwrap();
    assert_eq!(client.count().await.unwrap(), 7);
    assert_eq!(
        client.with_metadata("tenant", "a").count().await.unwrap(),
        7,
        "metadata still travels in version 2"
    );
}

/// A server of protocol version 3 written by hand: it answers `Shop.nudge`
/// with 7 and `Shop.echo` with "hi", and hands over each request's method
/// name and the fingerprint field of its head.
async fn version_3_server() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, [u8; 8])>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket
            .write_all(b"\x89RPC\r\n\x1a\n\x03\x00\x00\x01\x00\x00\x00\x01")
            .await
            .unwrap();
        let mut theirs = [0u8; 16];
        socket.read_exact(&mut theirs).await.unwrap();
        loop {
            let (_, id, payload) = raw::read_frame(&mut socket).await;
            let name_len = usize::from(payload[8]);
            let name = String::from_utf8(payload[9..9 + name_len].to_vec()).unwrap();
            let fingerprint: [u8; 8] = payload[9 + name_len..17 + name_len].try_into().unwrap();
            // `7` as an i32 (zigzag), or `"hi"`.
            let answer: &[u8] = match name.as_str() {
                "Shop.nudge" => &[14],
                _ => &[2, b'h', b'i'],
            };
            socket.write_all(&raw::frame(2, id, answer)).await.unwrap();
            heads.send((name, fingerprint)).unwrap();
        }
    });
    (addr, received)
}

#[tokio::test]
async fn each_request_carries_its_methods_fingerprint_and_an_unchecked_one_none() {
    let (addr, mut heads) = version_3_server().await;
    let client = now::ShopClient::connect(addr).await.unwrap();
    let echo = now::ShopRequest::descriptor()
        .method("echo")
        .unwrap()
        .fingerprint()
        .unwrap();
    // Twice each: the first call makes the head's fixed part, the second
    // reuses it.
    for _ in 0..2 {
        assert_eq!(client.echo("hi".to_owned()).await.unwrap(), "hi");
        assert_eq!(
            heads.recv().await.unwrap(),
            ("Shop.echo".to_owned(), echo.get().to_le_bytes())
        );
        assert_eq!(client.nudge(now::Point { east: 1, north: 2 }).await.unwrap(), 7);
        assert_eq!(
            heads.recv().await.unwrap(),
            ("Shop.nudge".to_owned(), [0; 8]),
            "no fingerprint"
        );
    }
}
