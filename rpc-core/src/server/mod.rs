//! The server side: a [`Router`] of services by name, and
//! [`serve_connection`], which runs one connection's calls.

mod connection;
mod router;

pub use connection::serve_connection;
pub use router::Router;
