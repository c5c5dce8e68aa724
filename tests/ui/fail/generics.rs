#[rpc::service]
pub trait Store<T> {
    async fn get(&self, key: String) -> Option<String>;
}

#[rpc::service]
pub trait Convert {
    async fn parse<T: std::str::FromStr>(&self, text: String) -> Option<u32>;
    async fn bounded(&self, text: String) -> u32 where Self: Sized;
}

fn main() {}
