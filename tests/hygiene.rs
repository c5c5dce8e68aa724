//! Generated code names every path absolutely, so it compiles beside user
//! items that shadow the prelude.
#![allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    non_camel_case_types,
    clippy::unwrap_used
)]

mod shadowed {
    pub struct Result;
    pub struct Option;
    pub struct Box;
    pub struct Vec;
    pub struct String;
    pub struct Future;
    pub struct Error;
    pub struct Arc;
    pub struct Send;
    pub struct Clone;
    pub struct Client;
    pub struct Server;
    pub struct Service;
    pub struct Bytes;
    pub trait Sync {}

    #[rpc::service]
    pub trait Weird {
        async fn id(&self, n: u32) -> u32;
        async fn r#type(&self, r#match: ::std::string::String) -> ::std::string::String;
    }

    pub struct W;

    impl Weird for W {
        async fn id(&self, n: u32) -> u32 {
            n
        }
        async fn r#type(&self, r#match: ::std::string::String) -> ::std::string::String {
            r#match
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_beside_shadowed_prelude_names_works_end_to_end() {
    use shadowed::{W, WeirdClient, WeirdServer};
    let server = rpc::Server::new()
        .serve(WeirdServer::new(W))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = WeirdClient::connect(server.local_addr()).await.unwrap();
    assert_eq!(client.id(9).await.unwrap(), 9);
    assert_eq!(client.r#type("raw".to_owned()).await.unwrap(), "raw");
    server.stop().await;
}

#[no_implicit_prelude]
mod without_prelude {
    #[::rpc::service]
    pub trait Bare {
        /// Doubles.
        async fn double(&self, n: u64) -> u64;
        async fn maybe(
            &self,
            n: ::std::option::Option<u8>,
        ) -> ::std::result::Result<u8, ::std::string::String>;
        /// Echoes a blob.
        async fn blob(&self, data: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8>;
    }

    pub struct B;

    impl Bare for B {
        async fn double(&self, n: u64) -> u64 {
            n * 2
        }
        async fn maybe(
            &self,
            n: ::std::option::Option<u8>,
        ) -> ::std::result::Result<u8, ::std::string::String> {
            n.ok_or_else(|| ::std::borrow::ToOwned::to_owned("none"))
        }
        async fn blob(&self, data: ::std::vec::Vec<u8>) -> ::std::vec::Vec<u8> {
            data
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_declared_without_the_prelude_works_end_to_end() {
    use without_prelude::{B, BareClient, BareServer};
    let server = rpc::Server::new()
        .serve(BareServer::new(B))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let client = BareClient::connect(server.local_addr()).await.unwrap();
    assert_eq!(client.double(21).await.unwrap(), 42);
    assert_eq!(client.maybe(None).await.unwrap(), Err("none".to_owned()));
    // Long enough to be answered from where it lies.
    let blob = vec![5u8; 8 * 1024];
    assert_eq!(client.blob(blob.clone()).await.unwrap(), blob);
    server.stop().await;
}
