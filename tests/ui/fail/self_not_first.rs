// Not even Rust accepts this; the parser's own message comes through.
#[rpc::service]
pub trait Counter {
    async fn first(x: u64, &self) -> u64;
}

fn main() {}
