#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum MathError {
    Network(String),
}

impl From<rpc::Error> for MathError {
    fn from(err: rpc::Error) -> Self {
        MathError::Network(err.to_string())
    }
}

#[rpc::service(transparent)]
pub trait Calculator {
    async fn div(&self, a: i64, b: i64) -> Result<i64, MathError>;
    async fn add(&self, a: i64, b: i64) -> i64;
}

fn main() {}
