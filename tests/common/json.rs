//! JSON callers for the tests: hyper's HTTP/1.1 client and
//! tokio-tungstenite's WebSocket client, as a program in another language
//! would use any HTTP or WebSocket library.

use std::net::SocketAddr;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// One kept-alive HTTP/1.1 connection.
pub struct Http {
    sender: SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

/// An HTTP answer: its status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; panics (failing the test) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Http {
    pub async fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Http { sender, addr }
    }

    /// Sends `request` (its URI a path), with `Host` set.
    pub async fn send(&mut self, mut request: Request<Full<Bytes>>) -> Answer {
        request
            .headers_mut()
            .insert(hyper::header::HOST, self.addr.to_string().parse().unwrap());
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// Posts `body` to `/rpc`.
    pub async fn post(&mut self, body: impl Into<Bytes>) -> Answer {
        self.post_to("/rpc", body, &[]).await
    }

    /// Posts `body` to `path` with extra headers.
    pub async fn post_to(&mut self, path: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::post(path).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        self.send(request.body(Full::new(body.into())).unwrap()).await
    }

    /// Posts `request` and parses the answer as JSON.
    pub async fn call(&mut self, request: Value) -> Value {
        let answer = self.post(request.to_string()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send(Request::get(path).body(Full::new(Bytes::new())).unwrap())
            .await
    }
}

/// One WebSocket connection to `/rpc`.
pub struct Ws {
    socket: WebSocketStream<TcpStream>,
}

impl Ws {
    pub async fn connect(addr: SocketAddr) -> Ws {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (socket, response) = tokio_tungstenite::client_async(format!("ws://{addr}/rpc"), stream)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        Ws { socket }
    }

    pub async fn send(&mut self, text: impl Into<String>) {
        self.socket.send(Message::text(text.into())).await.unwrap();
    }

    /// The next text message, as JSON; `None` once the socket closes.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.socket.next().await? {
                Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Sends `request` and returns the next message.
    pub async fn call(&mut self, request: Value) -> Value {
        self.send(request.to_string()).await;
        self.next().await.expect("the server closed the WebSocket")
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
