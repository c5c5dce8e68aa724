#[rpc::service]
pub trait Jobs {
    #[rpc(retry)]
    async fn run(&self);
    #[rpc(timeout = "soon")]
    async fn later(&self);
    #[rpc(timeout = "0s")]
    async fn never(&self);
    #[rpc(accepts = "0000000000000000")]
    async fn zero(&self);
    #[rpc(accepts = "not-hex")]
    async fn typo(&self);
}

#[rpc::service(unknown)]
pub trait Other {
    async fn x(&self);
}

fn main() {}
