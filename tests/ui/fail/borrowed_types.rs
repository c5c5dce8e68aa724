

#[rpc::service]
pub trait Names {
    async fn greet(&self, name: &str) -> String;
    async fn maybe(&self, name: Option<&str>) -> String;
    async fn cow(&self, name: std::borrow::Cow<'static, str>) -> String;
    async fn borrowed_cow<'a>(&self, name: std::borrow::Cow<'a, str>) -> String;
    async fn any(&self, name: impl Into<String>) -> String;
    async fn boxed(&self, name: Box<dyn std::fmt::Display>) -> String;
    async fn slice(&self) -> &'static [u8];
    async fn later(&self) -> impl std::future::Future<Output = u8>;
    async fn myself(&self, other: Box<Self>);
}

fn main() {}
