#[rpc::service]
pub trait Session {
    async fn connect(&self, to: String) -> bool;
    async fn clone(&self) -> u64;
    async fn get_user(&self, id: u64) -> String;
    async fn get__user(&self, id: u64) -> String;
}

fn main() {}
