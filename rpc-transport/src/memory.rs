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
    tokio::try_join!(establish(a, limits), establish(b, limits))
}

/// Exchanges prefaces over one end of a raw [`tokio::io::duplex`] pipe and
/// splits it, for tests that drive the other end by hand.
pub async fn establish(io: DuplexStream, limits: Limits) -> Result<MemoryConnection, Error> {
    establish_io(io, limits).await
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
