#[rpc::service]
pub trait Geometry {
    async fn area(&self, (w, h): (u32, u32)) -> u32;
    async fn double(&self, mut x: u32) -> u32;
    async fn skip(&self, _: u32);
}

fn main() {}
