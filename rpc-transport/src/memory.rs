//! An in-memory connection pair, for tests and for running a client and a
//! server in one process without a socket.

use rpc_core::Error;
use rpc_core::transport::Connection;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadHalf, WriteHalf};

use crate::Limits;
use crate::handshake;
use crate::io::{FrameReader, FrameWriter};

/// One end of an in-memory connection.
pub type MemoryConnection =
    Connection<FrameReader<ReadHalf<DuplexStream>>, FrameWriter<WriteHalf<DuplexStream>>>;

/// Bytes each direction buffers before the writer waits for the reader, like
/// a socket's buffer.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Two connected ends, prefaces exchanged: give one to a client and the other
/// to a server. Both enforce `limits`.
pub async fn pair(limits: Limits) -> Result<(MemoryConnection, MemoryConnection), Error> {
    let (a, b) = tokio::io::duplex(PIPE_CAPACITY);
    tokio::try_join!(establish_io(a, limits), establish_io(b, limits))
}

/// Exchanges prefaces over any byte stream and splits it into a frame
/// reader and writer: what [`tcp`](crate::tcp) and [`pair`] do, for other
/// transports (Unix sockets, TLS streams).
pub async fn establish_io<IO>(
    mut io: IO,
    limits: Limits,
) -> Result<Connection<FrameReader<ReadHalf<IO>>, FrameWriter<WriteHalf<IO>>>, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let peer = handshake::exchange(&mut io, limits.preface()).await?;
    let (read, write) = tokio::io::split(io);
    Ok(Connection {
        reader: limits.reader(read),
        writer: FrameWriter::new(write),
        peer,
        peer_addr: None,
    })
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
        assert_eq!(a.peer.max_frame_len as usize, Limits::default().max_frame_len);
        let ping = Frame::new(Kind::Request, 1, Bytes::from_static(b"ping")).unwrap();
        a.writer.write_frames(&mut vec![ping]).await.unwrap();
        let got = b.reader.read_frame().await.unwrap().unwrap();
        assert_eq!(&got.payload()[..], b"ping");
        let pong = Frame::new(Kind::Response, 1, Bytes::from_static(b"pong")).unwrap();
        b.writer.write_frames(&mut vec![pong]).await.unwrap();
        let got = a.reader.read_frame().await.unwrap().unwrap();
        assert_eq!(
            (got.header().kind(), &got.payload()[..]),
            (Kind::Response, &b"pong"[..])
        );
    }
}
