//! Every streaming shape, with a transparent client, compiled and called.
#![deny(missing_docs, warnings)]

use futures::StreamExt;
use rpc::Streaming;

/// Every shape of stream.
#[rpc::service(transparent)]
pub trait Pipes {
    /// Server streaming.
    async fn down(&self, n: u8) -> Streaming<u8>;
    /// Client streaming, with other arguments around the stream.
    async fn up(&self, offset: u8, items: Streaming<u8>, scale: u8) -> Result<u32, PipeError>;
    /// Both ways.
    async fn both(&self, items: Streaming<u8>) -> Streaming<u8>;
}

/// The service's error.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum PipeError {
    /// The network failed.
    Network(String),
}

impl From<rpc::Error> for PipeError {
    fn from(err: rpc::Error) -> Self {
        PipeError::Network(err.to_string())
    }
}

struct P;

impl Pipes for P {
    async fn down(&self, n: u8) -> Streaming<u8> {
        Streaming::iter(0..n)
    }
    async fn up(&self, offset: u8, items: Streaming<u8>, scale: u8) -> Result<u32, PipeError> {
        let sum = items.values().fold(0u32, |acc, x| async move { acc + u32::from(x) }).await;
        Ok((sum + u32::from(offset)) * u32::from(scale))
    }
    async fn both(&self, items: Streaming<u8>) -> Streaming<u8> {
        Streaming::new(items.values().map(|x| x * 2))
    }
}

/// Generic over local and remote.
async fn total(pipes: &impl Pipes) -> u32 {
    let down: Vec<u8> = pipes.down(4).await.values().collect().await;
    let up = pipes.up(1, Streaming::iter(down), 2).await.unwrap_or(0);
    let both: Vec<u8> = pipes.both(Streaming::iter([1, 2])).await.values().collect().await;
    up + both.iter().map(|x| u32::from(*x)).sum::<u32>()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), rpc::Error> {
    let server = rpc::Server::new().serve(PipesServer::new(P)).bind("127.0.0.1:0").await?;
    let client = PipesClient::connect(server.local_addr()).await?;
    assert_eq!(total(&P).await, 20);
    assert_eq!(total(&client).await, 20);
    let direct: Vec<_> = client.down(3).collect().await;
    assert_eq!(direct.len(), 3);
    assert_eq!(client.up(0, futures::stream::iter([5u8, 5]), 1).await?.unwrap_or(0), 10);
    server.stop().await;
    Ok(())
}
