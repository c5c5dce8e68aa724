#[rpc::service]
pub trait Jobs {
    #[rpc(retry)]
    async fn run(&self);
    #[rpc(timeout = "soon")]
    async fn later(&self);
    #[rpc(timeout = "0s")]
    async fn never(&self);
}

#[rpc::service(unknown)]
pub trait Other {
    async fn x(&self);
}

fn main() {}
