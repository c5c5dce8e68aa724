//! In-memory connections, for tests and for running a client and a server
//! in one process without a socket: a connected [`pair`], or a
//! [`MemoryListener`] with the [`MemoryConnector`]s that dial it.

use std::io;

use rpc_core::Error;
use rpc_core::peer::{Peer, PeerAddr};
use rpc_core::transport::Established;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use crate::Limits;
use crate::reader::FrameReader;
use crate::stream::{self, ByteStream, Connector, Listener, ReadHalf};
use crate::writer::FrameWriter;

/// One end of an in-memory connection.
pub type MemoryConnection = Established<
    FrameReader<tokio::io::ReadHalf<DuplexStream>>,
    FrameWriter<tokio::io::WriteHalf<DuplexStream>>,
>;

/// Bytes each direction buffers before the writer waits for the reader, like
/// a socket's buffer.
const PIPE_CAPACITY: usize = 256 * 1024;

impl ByteStream for DuplexStream {
    type Read = tokio::io::ReadHalf<DuplexStream>;
    type Write = tokio::io::WriteHalf<DuplexStream>;

    fn split(self) -> (Self::Read, Self::Write) {
        tokio::io::split(self)
    }
}

impl ReadHalf for DuplexStream {}

/// Two connected ends, prefaces exchanged: give one to a client and the other
/// to a server. Both enforce `limits`.
pub async fn pair(limits: Limits) -> Result<(MemoryConnection, MemoryConnection), Error> {
    let (a, b) = tokio::io::duplex(PIPE_CAPACITY);
    let peer = || Peer::new(PeerAddr::Memory);
    tokio::try_join!(
        stream::establish(a, peer(), limits),
        stream::establish(b, peer(), limits)
    )
}

/// A listener for in-memory connections, and a connector that dials it:
/// a server and its clients in one process, reconnecting like any other.
///
/// ```
/// use rpc_transport::memory;
/// use rpc_transport::stream::{Connector, Listener};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let (mut listener, connector) = memory::listener();
/// let (dialled, accepted) = tokio::join!(connector.connect(), listener.accept());
/// assert!(dialled.is_ok() && accepted.is_ok());
/// # }
/// ```
pub fn listener() -> (MemoryListener, MemoryConnector) {
    // A few connections may wait to be accepted, as in a socket's backlog.
    let (incoming, accept) = mpsc::channel(16);
    (MemoryListener { accept }, MemoryConnector { incoming })
}

/// Accepts in-memory connections from its [`MemoryConnector`]s.
#[derive(Debug)]
pub struct MemoryListener {
    accept: mpsc::Receiver<DuplexStream>,
}

impl Listener for MemoryListener {
    type Stream = DuplexStream;
    type Addr = &'static str;

    async fn accept(&mut self) -> io::Result<(DuplexStream, Peer)> {
        match self.accept.recv().await {
            Some(stream) => Ok((stream, Peer::new(PeerAddr::Memory))),
            // Every connector is gone: nothing will connect again.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> &'static str {
        "memory"
    }
}

/// Dials its [`MemoryListener`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    incoming: mpsc::Sender<DuplexStream>,
}

impl Connector for MemoryConnector {
    type Stream = DuplexStream;

    async fn connect(&self) -> Result<(DuplexStream, Peer), Error> {
        let (ours, theirs) = tokio::io::duplex(PIPE_CAPACITY);
        self.incoming.send(theirs).await.map_err(|_| Error::Connect {
            addr: self.target(),
            source: std::sync::Arc::new(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "the in-memory listener is gone",
            )),
        })?;
        Ok((ours, Peer::new(PeerAddr::Memory)))
    }

    fn target(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rpc_core::frame::{Frame, Kind};
    use rpc_core::transport::{FrameRead, FrameWrite};

    #[tokio::test]
    async fn a_pair_carries_frames_both_ways() {
        let (mut a, mut b) = pair(Limits::default()).await.unwrap();
        assert_eq!(a.preface.max_frame_len as usize, Limits::default().max_frame_len);
        let ping = [Frame::new(Kind::Request, 1, Bytes::from_static(b"ping")).unwrap()];
        a.writer.write_frames(ping.iter()).await.unwrap();
        let got = b.reader.read_frame().await.unwrap().unwrap();
        assert_eq!(&got.payload()[..], b"ping");
        let pong = [Frame::new(Kind::Response, 1, Bytes::from_static(b"pong")).unwrap()];
        b.writer.write_frames(pong.iter()).await.unwrap();
        let got = a.reader.read_frame().await.unwrap().unwrap();
        assert_eq!(
            (got.header().kind(), &got.payload()[..]),
            (Kind::Response, &b"pong"[..])
        );
    }

    #[tokio::test]
    async fn a_connector_fails_clearly_once_its_listener_is_gone() {
        let (listener, connector) = listener();
        drop(listener);
        let err = connector.connect().await.unwrap_err();
        assert!(err.to_string().contains("listener is gone"), "{err}");
    }
}
