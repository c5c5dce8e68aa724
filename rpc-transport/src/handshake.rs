//! The connection preface exchange that opens every connection.

use rpc_core::Error;
use rpc_core::frame::{PREFACE_LEN, Preface, ProtocolError, looks_like_http, looks_like_tls};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Sends our preface, `ours`, and reads and checks the peer's. Both sides run the same exchange, so neither waits for the other
/// before speaking.
///
/// Reads exactly the preface's 16 bytes: whatever the peer sent after it
/// stays in `io` for the frame reader.
pub async fn exchange<IO>(io: &mut IO, ours: Preface) -> Result<Preface, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    exchange_after(io, ours, None).await
}

/// The same exchange, for a server that has already read the peer's first
/// byte (to tell the binary protocol from HTTP): `first`.
pub async fn exchange_after<IO>(io: &mut IO, ours: Preface, first: Option<u8>) -> Result<Preface, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&ours.to_bytes())
        .await
        .map_err(|err| Error::io("sending the connection preface failed", &err))?;
    io.flush()
        .await
        .map_err(|err| Error::io("sending the connection preface failed", &err))?;

    read_preface(io, first).await
}

/// The server's side of the exchange: reads the client's preface (whose
/// `first` byte may have been read already), then answers with `ours`,
/// speaking the client's version when it is an older one this build still
/// speaks, so clients of the previous version keep working. A preface
/// that cannot be accepted is still answered with `ours`, so a confused
/// peer (a TLS client, say) sees that this is not what it expected.
pub async fn answer<IO>(io: &mut IO, ours: Preface, first: Option<u8>) -> Result<Preface, Error>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let theirs = read_preface(io, first).await;
    let ours = match &theirs {
        Ok(theirs) => ours.with_version(theirs.version.min(ours.version)),
        Err(_) => ours,
    };
    let sent = async {
        io.write_all(&ours.to_bytes()).await?;
        io.flush().await
    };
    let sent = sent
        .await
        .map_err(|err| Error::io("sending the connection preface failed", &err));
    let theirs = theirs?;
    sent?;
    Ok(theirs)
}

/// Reads and checks the peer's preface, whose `first` byte may have been
/// read already.
async fn read_preface<IO: AsyncRead + Unpin>(io: &mut IO, first: Option<u8>) -> Result<Preface, Error> {
    let mut theirs = [0u8; PREFACE_LEN];
    let mut got = 0;
    if let (Some(first), Some(slot)) = (first, theirs.first_mut()) {
        *slot = first;
        got = 1;
    }
    while got < PREFACE_LEN {
        let read = io
            .read(theirs.get_mut(got..).unwrap_or_default())
            .await
            .map_err(|err| Error::io("reading the connection preface failed", &err))?;
        if read == 0 {
            let sent = theirs.get(..got).unwrap_or_default();
            return Err(if looks_like_http(sent) {
                ProtocolError::HttpPeer.into()
            } else if looks_like_tls(sent) {
                ProtocolError::TlsPeer.into()
            } else if got == 0 {
                Error::disconnected("the peer closed the connection before sending its preface")
            } else {
                ProtocolError::Truncated {
                    got,
                    expected: PREFACE_LEN,
                }
                .into()
            });
        }
        got += read;
    }
    Ok(Preface::parse(&theirs)?)
}

/// Reads and discards whatever the peer still sends, for up to a second or
/// 64 KiB, before a connection is closed after a failed exchange.
pub async fn linger<IO: AsyncRead + Unpin>(io: &mut IO) {
    // On the heap: an array would make every connection's future larger.
    let mut scratch = vec![0u8; 4096];
    let mut left = 64 * 1024usize;
    let discard = async {
        while left > 0 {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), discard).await;
}
