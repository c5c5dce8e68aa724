#[rpc::service]
pub trait Fine: Send + Sync + 'static {
    async fn ok(&self);
}

#[rpc::service]
pub trait NotFine: Clone + std::fmt::Debug {
    async fn nope(&self);
}

fn main() {}
