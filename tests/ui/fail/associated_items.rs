#[rpc::service]
pub trait Store {
    type Key;
    const LIMIT: usize;
    async fn get(&self, key: String) -> Option<String>;
}

fn main() {}
