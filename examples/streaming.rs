//! Streaming calls, one of each shape, over one connection:
//!
//! - `tail`: the server streams lines to the client;
//! - `upload`: the client streams chunks to the server, which answers once;
//! - `chat`: both stream at once.
//!
//! ```text
//! cargo run --example streaming
//! ```

use std::time::Duration;

use futures::StreamExt;
use rpc::{Bytes, Streaming};
use serde::{Deserialize, Serialize};

/// One line of a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    /// 1-based line number.
    pub number: u64,
    /// The text.
    pub text: String,
}

/// What an upload amounted to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Chunks received.
    pub chunks: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// A chat message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Msg {
    /// Who wrote it.
    pub from: String,
    /// What they wrote.
    pub text: String,
}

/// Files and conversation, streamed.
#[rpc::service]
pub trait Files {
    /// Streams a file's lines, then ends; an unknown file ends the stream
    /// with an error.
    async fn tail(&self, file: String) -> Streaming<Line>;
    /// Receives a stream of chunks and answers with what arrived.
    async fn upload(&self, chunks: Streaming<Bytes>) -> Summary;
    /// Answers every message as it arrives.
    async fn chat(&self, incoming: Streaming<Msg>) -> Streaming<Msg>;
}

struct FileServer;

const POEM: &str =
    "Streams arrive in order,\nand credit keeps them kind:\na slow reader is never\nleft buffering behind.";

impl Files for FileServer {
    async fn tail(&self, file: String) -> Streaming<Line> {
        if file != "poem.txt" {
            return Streaming::failed(rpc::Error::failed(format!("no such file: {file}")));
        }
        Streaming::iter(POEM.lines().enumerate().map(|(i, text)| Line {
            number: i as u64 + 1,
            text: text.to_owned(),
        }))
    }

    async fn upload(&self, mut chunks: Streaming<Bytes>) -> Summary {
        let mut summary = Summary { chunks: 0, bytes: 0 };
        while let Some(Ok(chunk)) = chunks.next().await {
            summary.chunks += 1;
            summary.bytes += chunk.len() as u64;
        }
        summary
    }

    async fn chat(&self, incoming: Streaming<Msg>) -> Streaming<Msg> {
        Streaming::from_results(incoming.map(|msg| {
            msg.map(|msg| Msg {
                from: "server".to_owned(),
                text: format!("you said {:?}", msg.text),
            })
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), rpc::Error> {
    let server = rpc::Server::new()
        .serve(FilesServer::new(FileServer))
        .bind("127.0.0.1:0")
        .await?;
    let files = FilesClient::connect(server.local_addr()).await?;

    println!("-- tail: the server streams");
    let mut lines = files.tail("poem.txt".to_owned());
    while let Some(line) = lines.next().await {
        let line = line?;
        println!("{:>3}  {}", line.number, line.text);
    }
    let mut missing = files.tail("missing.txt".to_owned());
    if let Some(Err(err)) = missing.next().await {
        println!("tail of a missing file: {err}");
    }

    println!("\n-- upload: the client streams 64 chunks of 256 KiB");
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let chunks = futures::stream::iter(std::iter::repeat_n(chunk, 64));
    let summary = files.with_timeout(Duration::from_secs(60)).upload(chunks).await?;
    println!(
        "the server got {} chunks, {} bytes",
        summary.chunks, summary.bytes
    );

    println!("\n-- chat: both stream at once");
    let said = ["hello", "how is the weather", "bye"].map(|text| Msg {
        from: "client".to_owned(),
        text: text.to_owned(),
    });
    let mut replies = files.chat(futures::stream::iter(said));
    while let Some(reply) = replies.next().await {
        let reply = reply?;
        println!("{}: {}", reply.from, reply.text);
    }

    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
