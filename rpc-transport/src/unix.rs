//! Unix domain sockets: a [`UnixListener`] bound to a path and a
//! [`UnixConnector`] that dials it. A handler learns the calling process's
//! user, group and process id from its [`Peer`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rpc_core::Error;
use rpc_core::peer::{Credentials, Peer, PeerAddr};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::stream::{ByteStream, Connector, Listener, ReadHalf};

impl ByteStream for UnixStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;

    fn split(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl ReadHalf for OwnedReadHalf {
    const WAITS_FOR_BYTES: bool = true;

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
        OwnedReadHalf::readable(self)
    }
}

/// Accepts connections on a Unix socket. The socket's file is removed when
/// the listener is dropped.
#[derive(Debug)]
pub struct UnixListener {
    inner: tokio::net::UnixListener,
    path: PathBuf,
}

impl UnixListener {
    /// Binds to `path`. A socket file left there by a server that is gone
    /// (nothing answers on it) is replaced; one that a live server listens
    /// on is not.
    pub fn bind(path: impl AsRef<Path>) -> Result<UnixListener, Error> {
        let path = path.as_ref().to_path_buf();
        let bind_error = |err: io::Error| Error::Bind {
            addr: format!("unix:{}", path.display()),
            source: Arc::new(err),
        };
        let inner = match tokio::net::UnixListener::bind(&path) {
            Ok(inner) => inner,
            Err(err) if err.kind() == io::ErrorKind::AddrInUse && is_stale(&path) => {
                std::fs::remove_file(&path).map_err(bind_error)?;
                tokio::net::UnixListener::bind(&path).map_err(bind_error)?
            }
            Err(err) => return Err(bind_error(err)),
        };
        Ok(UnixListener { inner, path })
    }
}

/// Whether `path` is a socket nobody listens on.
fn is_stale(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
    is_socket
        && std::os::unix::net::UnixStream::connect(path)
            .is_err_and(|err| err.kind() == io::ErrorKind::ConnectionRefused)
}

impl Drop for UnixListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Listener for UnixListener {
    type Stream = UnixStream;
    type Addr = PathBuf;

    async fn accept(&mut self) -> io::Result<(UnixStream, Peer)> {
        let (stream, addr) = self.inner.accept().await?;
        let credentials = stream.peer_cred().ok().map(|cred| Credentials {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        });
        let path = addr.as_pathname().map(Path::to_path_buf);
        Ok((stream, Peer::new(PeerAddr::Unix { path, credentials })))
    }

    fn local_addr(&self) -> PathBuf {
        self.path.clone()
    }
}

/// Dials a server's Unix socket.
#[derive(Debug, Clone)]
pub struct UnixConnector {
    path: PathBuf,
}

impl UnixConnector {
    /// A connector to the socket at `path`.
    pub fn new(path: impl AsRef<Path>) -> UnixConnector {
        UnixConnector {
            path: path.as_ref().to_path_buf(),
        }
    }
}

impl Connector for UnixConnector {
    type Stream = UnixStream;

    async fn connect(&self) -> Result<(UnixStream, Peer), Error> {
        let stream = UnixStream::connect(&self.path)
            .await
            .map_err(|err| Error::Connect {
                addr: self.target(),
                source: Arc::new(err),
            })?;
        let peer = Peer::new(PeerAddr::Unix {
            path: Some(self.path.clone()),
            credentials: None,
        });
        Ok((stream, peer))
    }

    fn target(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}
