use rpc::Streaming;

#[rpc::service]
pub trait Pipes {
    async fn two(&self, a: Streaming<u8>, b: Streaming<u8>) -> u8;
    #[rpc(no_cancel)]
    async fn stubborn(&self) -> Streaming<u8>;
    #[rpc(idempotent)]
    async fn again(&self, a: Streaming<u8>) -> u8;
    async fn borrowed(&self) -> Streaming<&'static str>;
}

fn main() {}
