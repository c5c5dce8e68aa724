#[rpc::service]
pub struct Calculator;

fn main() {}
