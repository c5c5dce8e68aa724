#[rpc::service]
pub trait Greeter {
    async fn hello(&self) -> String {
        "hello".to_owned()
    }
}

fn main() {}
