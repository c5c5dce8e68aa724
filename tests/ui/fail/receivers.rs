// Every mistake in the trait is reported at once, each at its own place.
#[rpc::service]
pub trait Counter {
    async fn bump(&mut self);
    async fn take(self) -> u64;
    async fn make() -> u64;
}

fn main() {}
