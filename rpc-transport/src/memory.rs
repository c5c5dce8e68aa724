//! An in-memory connection pair, for tests and for running a client and a
//! server in one process without a socket.

use rpc_core::Error;
use rpc_core::transport::Connection;
use tokio::io::{DuplexStream, ReadHalf, WriteHalf};

use crate::handshake;
use crate::io::{FrameReader, FrameWriter};

/// One end of an in-memory connection.
pub type MemoryConnection =
    Connection<FrameReader<ReadHalf<DuplexStream>>, FrameWriter<WriteHalf<DuplexStream>>>;

/// Bytes each direction buffers before the writer waits for the reader, like
/// a socket's buffer.
const PIPE_CAPACITY: usize = 256 * 1024;

/// Two connected ends, prefaces exchanged: give one to a client and the other
/// to a server. Both accept frames up to `max_frame_len`.
pub async fn pair(max_frame_len: usize) -> Result<(MemoryConnection, MemoryConnection), Error> {
    let (a, b) = tokio::io::duplex(PIPE_CAPACITY);
    tokio::try_join!(establish(a, max_frame_len), establish(b, max_frame_len))
}

/// Exchanges prefaces over one end of a raw [`tokio::io::duplex`] pipe and
/// splits it, for tests that drive the other end by hand.
pub async fn establish(mut io: DuplexStream, max_frame_len: usize) -> Result<MemoryConnection, Error> {
    let peer = handshake::exchange(&mut io, max_frame_len).await?;
    let (read, write) = tokio::io::split(io);
    Ok(Connection {
        reader: FrameReader::new(read, max_frame_len),
        writer: FrameWriter::new(write),
        peer,
        peer_addr: None,
    })
}
