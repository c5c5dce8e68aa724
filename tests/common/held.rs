//! A server a test can hold still: it runs on a current-thread runtime of
//! its own thread, and a handler can block that thread ([`Hold::wait`])
//! until the test lets it go ([`Release::release`]). What the server did
//! before it was held (an answer it sent, or did not) is then plain to
//! see from a socket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

/// The handler's side: where it waits.
pub struct Hold {
    go_on: Mutex<mpsc::Receiver<()>>,
    let_go: Arc<AtomicBool>,
}

/// The test's side: what lets the handler go.
pub struct Release {
    go: mpsc::Sender<()>,
    let_go: Arc<AtomicBool>,
}

/// A hold and what releases it.
pub fn hold() -> (Hold, Release) {
    let (go, go_on) = mpsc::channel();
    let let_go = Arc::new(AtomicBool::new(false));
    let hold = Hold {
        go_on: Mutex::new(go_on),
        let_go: Arc::clone(&let_go),
    };
    (hold, Release { go, let_go })
}

impl Hold {
    /// Blocks the thread (the server's only one: nothing else of the
    /// server runs meanwhile) until the test releases it. The timeout only
    /// keeps a broken server from hanging the test.
    pub fn wait(&self) {
        let heard = self.go_on.lock().unwrap().recv_timeout(Duration::from_secs(20));
        self.let_go.store(heard.is_ok(), Ordering::SeqCst);
    }
}

impl Release {
    /// Lets the waiting handler go.
    pub fn release(&self) {
        self.go.send(()).unwrap();
    }

    /// Whether the handler went on because the test released it, not
    /// because its wait timed out. Read it once the handler has answered.
    pub fn was_released(&self) -> bool {
        self.let_go.load(Ordering::SeqCst)
    }
}

/// A server on a thread of its own, on a current-thread runtime.
pub struct ThreadServer {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// Starts the server `bind` makes, on a thread of its own with a
/// current-thread runtime. Tasks that gave way run again only once the
/// others have run: tokio otherwise lets them in early every 61st turn of
/// its loop, which would leave a test of who runs first to chance.
pub async fn on_its_thread<F, Fut>(bind: F) -> ThreadServer
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = rpc::ServerHandle>,
{
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .event_interval(u32::MAX)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = bind().await;
            addr_tx.send(server.local_addr()).unwrap();
            stopped.await.ok();
            server.stop().await;
        });
    });
    ThreadServer {
        addr: addr_rx.await.unwrap(),
        stop,
        thread,
    }
}

impl ThreadServer {
    /// Stops the server and waits for its thread.
    pub fn stop(self) {
        self.stop.send(()).unwrap();
        self.thread.join().unwrap();
    }
}
