//! [`Context`]: what a handler may know about the call it is serving.
//!
//! The server runs every handler inside its call's context, held in a tokio
//! task-local, so handlers read it without an extra parameter on every trait
//! method:
//!
//! ```
//! # use rpc_core as rpc;
//! # async fn handler() {
//! if let Some(ctx) = rpc::Context::current() {
//!     println!("call {} to {} from {}, {:?} left", ctx.request_id(), ctx.method(), ctx.peer(), ctx.remaining());
//! }
//! # }
//! ```
//!
//! Calls a handler makes through any client inherit the context's deadline:
//! their budget is the smaller of their own timeout and what remains of the
//! caller's, so a chain A -> B -> C never outlives A's deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::descriptor::MethodDescriptor;
use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::trace::TraceContext;

tokio::task_local! {
    static CURRENT: Context;
}

/// The call a handler is serving: its deadline, id, method and caller.
///
/// Cheap to clone. Tasks spawned by a handler do not inherit the task-local;
/// pass them a clone and run them under [`Context::scope`].
#[derive(Debug, Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

/// What only some calls carry.
#[derive(Debug)]
struct Extras {
    /// What the caller sent beside the arguments.
    metadata: Metadata,
    /// The call's place in a distributed trace.
    trace: Option<TraceContext>,
}

#[derive(Debug)]
struct Inner {
    request_id: u64,
    method: Method,
    deadline: Instant,
    peer: Peer,
    /// Metadata and trace, for the calls that have either (boxed: most
    /// have neither, and every call's context holds this struct).
    extras: Option<Box<Extras>>,
    /// Set when the call ends early; in the same allocation as the rest,
    /// so a call's context costs one allocation, besides `extras` when the
    /// call has metadata or a trace (none when made in a spare, see
    /// [`Context::for_call`]).
    cancelled: AtomicBool,
    /// Set (with `cancelled`) when the server stopped the call because its
    /// deadline passed, so the call still gets its answer.
    expired: AtomicBool,
    /// Set once anyone has waited in [`Context::cancelled`]: a call nobody
    /// listened to (most of them) ends without waking anyone.
    listened: AtomicBool,
    cancel: Notify,
}

impl Inner {
    fn new(request_id: u64, method: Method, deadline: Instant, peer: Peer, metadata: Metadata) -> Inner {
        Inner {
            request_id,
            method,
            deadline,
            peer,
            extras: Inner::extras(metadata),
            cancelled: AtomicBool::new(false),
            expired: AtomicBool::new(false),
            listened: AtomicBool::new(false),
            cancel: Notify::new(),
        }
    }

    /// This context renewed for another call from the same peer: as
    /// [`Inner::new`] would make it, but for the peer it keeps.
    fn renew(&mut self, request_id: u64, method: Method, deadline: Instant, metadata: Metadata) {
        // Every field named, so that one added later cannot be left over
        // from the call before.
        let Inner {
            request_id: id,
            method: named,
            deadline: due,
            peer: _,
            extras,
            cancelled,
            expired,
            listened,
            cancel,
        } = self;
        *id = request_id;
        *named = method;
        *due = deadline;
        *extras = Inner::extras(metadata);
        *cancelled.get_mut() = false;
        *expired.get_mut() = false;
        *listened.get_mut() = false;
        *cancel = Notify::new();
    }

    fn extras(metadata: Metadata) -> Option<Box<Extras>> {
        let trace = crate::observe::server_trace(&metadata);
        (!metadata.is_empty() || trace.is_some()).then(|| Box::new(Extras { metadata, trace }))
    }
}

/// The method a call is for: one the service describes, or (in contexts
/// made by hand, for tests) a name.
#[derive(Debug)]
enum Method {
    Described(&'static MethodDescriptor),
    Named(Box<str>),
}

impl Context {
    /// A context for a call of `method` (its wire name), for tests that run
    /// handler code outside a server. The server makes its own.
    pub fn new(request_id: u64, method: String, deadline: Instant, peer_addr: Option<SocketAddr>) -> Context {
        let peer = peer_addr.map_or_else(Peer::unknown, Peer::from);
        Context::make(
            request_id,
            Method::Named(method.into()),
            deadline,
            peer,
            Metadata::new(),
        )
    }

    /// This context with `metadata`, for tests of handlers that read it.
    pub fn with_metadata(self, metadata: Metadata) -> Context {
        let inner = &self.inner;
        Context::make(
            inner.request_id,
            match &inner.method {
                Method::Described(method) => Method::Described(method),
                Method::Named(name) => Method::Named(name.clone()),
            },
            inner.deadline,
            inner.peer.clone(),
            metadata,
        )
    }

    /// The context of a call the server routed to `method`, made in the
    /// memory of `spare` (a context whose call is over) when nothing else
    /// holds that any more: most calls then allocate none.
    pub(crate) fn for_call(
        spare: Option<Context>,
        request_id: u64,
        method: &'static MethodDescriptor,
        deadline: Instant,
        peer: &Peer,
        metadata: Metadata,
    ) -> Context {
        Context::renewed(
            spare,
            request_id,
            Method::Described(method),
            deadline,
            peer,
            metadata,
        )
    }

    /// A context for a call from `peer`, made in the memory of `spare` if
    /// nothing else holds that.
    fn renewed(
        spare: Option<Context>,
        request_id: u64,
        method: Method,
        deadline: Instant,
        peer: &Peer,
        metadata: Metadata,
    ) -> Context {
        if let Some(mut spare) = spare
            && let Some(held) = Arc::get_mut(&mut spare.inner)
        {
            // Held by no one else, no clone or weak reference: nobody
            // can tell it from a new one. The connection's calls share
            // its peer: kept, rather than counted up and down again.
            match held.peer.is(peer) {
                true => held.renew(request_id, method, deadline, metadata),
                false => *held = Inner::new(request_id, method, deadline, peer.clone(), metadata),
            }
            return spare;
        }
        Context::make(request_id, method, deadline, peer.clone(), metadata)
    }

    /// This context, whose call is over, kept for the connection's next
    /// call to be made in ([`Context::for_call`]) if nothing else holds
    /// it. What the call carried goes now, not when the next call comes:
    /// its metadata may hold a slice of the read buffer it arrived in.
    pub(crate) fn into_spare(mut self) -> Option<Context> {
        Arc::get_mut(&mut self.inner)?.extras = None;
        Some(self)
    }

    fn make(request_id: u64, method: Method, deadline: Instant, peer: Peer, metadata: Metadata) -> Context {
        Context {
            inner: Arc::new(Inner::new(request_id, method, deadline, peer, metadata)),
        }
    }

    /// The context of the call this task is serving, if it is serving one.
    pub fn current() -> Option<Context> {
        CURRENT.try_with(Context::clone).ok()
    }

    /// Whether this task serves a call that has a trace.
    pub(crate) fn in_traced_call() -> bool {
        CURRENT.try_with(|ctx| ctx.trace().is_some()).unwrap_or(false)
    }

    /// A child of the current call's trace, if this task is serving a
    /// call that has one: what a call made from its handler carries.
    pub(crate) fn current_trace_child() -> Option<Box<TraceContext>> {
        CURRENT
            .try_with(|ctx| ctx.trace().map(|trace| Box::new(trace.child())))
            .ok()
            .flatten()
    }

    /// The deadline of the current call, if this task is serving one.
    pub fn current_deadline() -> Option<Instant> {
        CURRENT.try_with(|ctx| ctx.inner.deadline).ok()
    }

    /// Runs `future` with this context as the current one.
    pub fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CURRENT.scope(self, future)
    }

    /// What the caller sent beside the arguments: an auth token, a tenant,
    /// a trace context. Over JSON, the request's HTTP headers (see
    /// `docs/JSON.md`).
    pub fn metadata(&self) -> &Metadata {
        static NONE: Metadata = Metadata::new();
        self.inner
            .extras
            .as_ref()
            .map_or(&NONE, |extras| &extras.metadata)
    }

    /// The call's place in a distributed trace: continued from the
    /// caller's `traceparent`, or started here when a subscriber listens to
    /// `rpc` spans; `None` otherwise. Calls the handler makes carry it on.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.inner.extras.as_ref()?.trace.as_ref()
    }

    /// The request id the client gave the call (unique per connection).
    pub fn request_id(&self) -> u64 {
        self.inner.request_id
    }

    /// The method's wire name, e.g. `Calculator.add`.
    pub fn method(&self) -> &str {
        match &self.inner.method {
            Method::Described(method) => method.full_name,
            Method::Named(name) => name,
        }
    }

    /// What the service says about the method: its arguments, result and
    /// markers. `None` only for contexts made by hand with
    /// [`Context::new`].
    pub fn descriptor(&self) -> Option<&'static MethodDescriptor> {
        match self.inner.method {
            Method::Described(method) => Some(method),
            Method::Named(_) => None,
        }
    }

    /// When the caller stops waiting (by the server's clock).
    pub fn deadline(&self) -> Instant {
        self.inner.deadline
    }

    /// Time left before the deadline; zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.inner.deadline.saturating_duration_since(Instant::now())
    }

    /// Who called: the client's address by transport (TCP, Unix socket
    /// with the caller's process credentials, in-memory).
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// The client's IP address and port, for TCP connections.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.inner.peer.socket_addr()
    }

    /// Whether the call was cancelled or ran out of time.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire) || Instant::now() >= self.inner.deadline
    }

    /// Completes when the call is cancelled or its deadline passes.
    ///
    /// The handler's own future is dropped when the call is cancelled, or
    /// when the connection's deadline sweep reaches it (at the deadline, to
    /// the timer's millisecond); this is for work the handler handed to
    /// other tasks.
    pub async fn cancelled(&self) {
        // Before the flag is looked at, as `cancel` sets the flag before
        // it looks at this (both in one total order): either this sees
        // the flag, or `cancel` sees a listener and wakes it.
        self.inner.listened.store(true, Ordering::SeqCst);
        let cancelled = async {
            loop {
                let notified = self.inner.cancel.notified();
                if self.inner.cancelled.load(Ordering::SeqCst) {
                    return;
                }
                notified.await;
            }
        };
        tokio::select! {
            () = cancelled => {}
            () = tokio::time::sleep_until(self.inner.deadline) => {}
        }
    }

    /// Marks the call cancelled; [`Context::cancelled`] completes.
    pub(crate) fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        if self.inner.listened.load(Ordering::SeqCst) {
            self.inner.cancel.notify_waiters();
        }
    }

    /// Marks the call stopped by its deadline (and so cancelled).
    pub(crate) fn expire(&self) {
        self.inner.expired.store(true, Ordering::Release);
        self.cancel();
    }

    /// Whether the server stopped the call because its deadline passed.
    pub(crate) fn expired(&self) -> bool {
        self.inner.expired.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cancelled_completes_on_cancel_and_at_the_deadline() {
        let ctx = Context::new(
            1,
            "S.m".to_owned(),
            Instant::now() + Duration::from_secs(60),
            None,
        );
        let waiter = tokio::spawn({
            let ctx = ctx.clone();
            async move { ctx.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        assert!(!ctx.is_cancelled());
        let cancelled_at = Instant::now();
        ctx.cancel();
        waiter.await.unwrap();
        assert!(ctx.is_cancelled());
        // Woken by the cancel, not by the paused clock jumping to the
        // deadline.
        assert_eq!(cancelled_at.elapsed(), Duration::ZERO);
        // Cancelled before anyone listened: a listener returns at once.
        let unheard = Context::new(
            3,
            "S.m".to_owned(),
            Instant::now() + Duration::from_secs(60),
            None,
        );
        unheard.cancel();
        unheard.cancelled().await;
        assert_eq!(cancelled_at.elapsed(), Duration::ZERO);

        let later = Context::new(2, "S.m".to_owned(), Instant::now() + Duration::from_secs(5), None);
        later.cancelled().await;
        assert!(later.is_cancelled());
        assert_eq!(later.remaining(), Duration::ZERO);
    }

    /// Call `request_id`'s context, from `peer`, in `spare` if it can be.
    /// (Its method and deadline, a minute apart, tell the calls apart.)
    fn call(spare: Option<Context>, request_id: u64, peer: &Peer) -> Context {
        let deadline = Instant::now() + Duration::from_secs(60 * request_id);
        Context::renewed(
            spare,
            request_id,
            Method::Named(format!("S.m{request_id}").into()),
            deadline,
            peer,
            Metadata::new(),
        )
    }

    #[tokio::test]
    async fn a_spare_context_nobody_holds_is_renewed_in_place() {
        let peer = Peer::unknown();
        let spare = call(None, 1, &peer);
        spare.inner.listened.store(true, Ordering::SeqCst);
        spare.expire();
        let memory = Arc::as_ptr(&spare.inner);
        let first_deadline = spare.deadline();
        let next = call(Some(spare), 2, &peer);
        assert_eq!(Arc::as_ptr(&next.inner), memory, "the same memory");
        assert_eq!((next.request_id(), next.method()), (2, "S.m2"));
        assert!(next.deadline() > first_deadline + Duration::from_secs(30));
        assert!(
            !next.is_cancelled() && !next.expired() && !next.inner.listened.load(Ordering::SeqCst),
            "a new call's context starts afresh"
        );
        assert!(next.peer().is(&peer), "the call's peer is the connection's");
    }

    #[tokio::test]
    async fn a_spare_renewed_for_another_peer_takes_that_peer() {
        let (first, second) = (Peer::unknown(), Peer::unknown());
        let spare = call(None, 1, &first);
        let memory = Arc::as_ptr(&spare.inner);
        let next = call(Some(spare), 2, &second);
        assert_eq!(Arc::as_ptr(&next.inner), memory, "the same memory");
        assert!(next.peer().is(&second) && !next.peer().is(&first));
    }

    #[tokio::test]
    async fn a_spare_keeps_nothing_its_call_carried_and_only_what_nobody_holds_is_kept() {
        let mut metadata = Metadata::new();
        metadata.insert("token", "secret").unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let ctx = Context::renewed(
            None,
            1,
            Method::Named("S.m".into()),
            deadline,
            &Peer::unknown(),
            metadata,
        );
        assert_eq!(ctx.metadata().get_str("token"), Some("secret"));
        let spare = ctx.into_spare().expect("nobody else holds it");
        assert!(spare.metadata().is_empty(), "the metadata went with its call");
        let kept = spare.clone();
        assert!(
            spare.into_spare().is_none(),
            "a context someone holds is left to them"
        );
        assert_eq!(kept.request_id(), 1);
    }

    #[tokio::test]
    async fn a_spare_context_someone_still_holds_is_left_to_them() {
        let peer = Peer::unknown();
        let spare = call(None, 1, &peer);
        let kept = spare.clone();
        spare.cancel();
        let next = call(Some(spare), 2, &peer);
        assert_ne!(Arc::as_ptr(&next.inner), Arc::as_ptr(&kept.inner));
        assert_eq!((kept.request_id(), next.request_id()), (1, 2));
        assert!(kept.is_cancelled() && !next.is_cancelled());
    }
}
