//! Two services calling each other: an order service whose `create_order`
//! calls a user service's `get_user`. Shows deadlines flowing through the
//! chain and what a caller sees when the service behind it is down.
//!
//! ```text
//! cargo run --example microservices                     # everything in one process
//! cargo run --example microservices -- users 127.0.0.1:7001
//! cargo run --example microservices -- orders 127.0.0.1:7002 127.0.0.1:7001
//! cargo run --example microservices -- client 127.0.0.1:7002
//! node examples/js/microservices.mjs http://127.0.0.1:7002/rpc   # a JavaScript caller
//! ```

use std::net::SocketAddr;
use std::time::Duration;

pub mod services;

use services::{OrdersClient, serve_orders, serve_users};

async fn place(orders: &OrdersClient, user_id: u64, item: &str, timeout: Duration) {
    println!("client: create_order({user_id}, {item:?}) with a {timeout:?} deadline");
    match orders
        .with_timeout(timeout)
        .create_order(user_id, item.to_owned())
        .await
    {
        Ok(Ok(order)) => println!("client: placed {order:?}\n"),
        Ok(Err(refused)) => println!("client: the order service said no: {refused:?}\n"),
        Err(err) => println!("client: the call failed: {err}\n"),
    }
}

async fn run_client(orders_addr: SocketAddr) -> Result<(), rpc::Error> {
    let orders = OrdersClient::connect(orders_addr).await?;
    place(&orders, 1, "keyboard", Duration::from_secs(2)).await;
    place(&orders, 99, "mouse", Duration::from_secs(2)).await;
    println!("-- user 7 takes 400 ms to look up; the client gives the whole chain 150 ms:");
    place(&orders, 7, "monitor", Duration::from_millis(150)).await;
    Ok(())
}

async fn everything_in_one_process() -> Result<(), rpc::Error> {
    let users = serve_users("127.0.0.1:0").await?;
    let orders = serve_orders("127.0.0.1:0", users.local_addr()).await?;
    println!(
        "users on {}, orders on {}\n",
        users.local_addr(),
        orders.local_addr()
    );
    run_client(orders.local_addr()).await?;

    println!("-- the user service goes down:");
    users.shutdown(Duration::from_secs(1)).await;
    let client = OrdersClient::connect(orders.local_addr()).await?;
    place(&client, 2, "laptop", Duration::from_secs(2)).await;
    orders.shutdown(Duration::from_secs(1)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result: Result<(), Box<dyn std::error::Error>> = async {
        match args.as_slice() {
            [] => everything_in_one_process().await?,
            ["users", addr] => {
                let server = serve_users(addr).await?;
                println!("users listening on {}", server.local_addr());
                server
                    .serve_until(rpc::shutdown_signal(), rpc::DEFAULT_GRACE)
                    .await;
            }
            ["orders", addr, users] => {
                let server = serve_orders(addr, users.parse()?).await?;
                println!("orders listening on {}", server.local_addr());
                server
                    .serve_until(rpc::shutdown_signal(), rpc::DEFAULT_GRACE)
                    .await;
            }
            ["client", orders] => run_client(orders.parse()?).await?,
            _ => {
                return Err(
                    "usage: microservices [users ADDR | orders ADDR USERS_ADDR | client ORDERS_ADDR]".into(),
                );
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
