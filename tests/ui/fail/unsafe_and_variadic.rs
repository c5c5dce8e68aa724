#[rpc::service]
pub unsafe trait Danger {
    async unsafe fn run(&self);
}

fn main() {}
