//! What a client adds to its calls: metadata, and middleware around them.

use std::sync::Arc;

use bytes::Bytes;
use tower::util::BoxCloneSyncService;

use super::unary::Start;
use super::waiter::Payload;
use super::{Client, Deadline};
use crate::descriptor::MethodDescriptor;
use crate::error::Error;
use crate::metadata::{Metadata, MetadataError, MetadataValue};
use crate::middleware::{BoxError, ClientCall, ClientService};
use crate::service::RequestMessage;
use crate::trace::TraceContext;

/// What a client adds to its calls.
#[derive(Clone)]
pub(super) struct Extras {
    /// What its calls send beside their arguments; a key that could not be
    /// set fails each call, saying why.
    pub(super) metadata: Result<Arc<Metadata>, MetadataError>,
    /// Its middleware.
    pub(super) stack: Option<ClientService>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            metadata: Ok(Arc::default()),
            stack: None,
        }
    }
}

impl Client {
    /// A client whose calls send `key: value` as metadata, beside what this
    /// one sends (replacing a value under the same key). Shares the
    /// connection. A key that is not lowercase ASCII (`authorization`,
    /// `x-tenant`) fails each call, saying why.
    ///
    /// Handlers read it with `Context::metadata()`. It is not passed on to
    /// the calls a handler makes: each hop sends its own.
    pub fn with_metadata(&self, key: &str, value: impl Into<MetadataValue>) -> Client {
        let mut extras = self.extras.as_deref().cloned().unwrap_or_default();
        extras.metadata = extras.metadata.and_then(|metadata| {
            let mut metadata = Arc::unwrap_or_clone(metadata);
            metadata.insert(key, value)?;
            Ok(Arc::new(metadata))
        });
        Client {
            shared: Arc::clone(&self.shared),
            extras: Some(Arc::new(extras)),
        }
    }

    /// The client's middleware, if it has any.
    pub(super) fn stack(&self) -> Option<&ClientService> {
        self.extras.as_ref()?.stack.as_ref()
    }

    /// What this client's calls send as metadata.
    pub fn metadata(&self) -> &Metadata {
        static NONE: std::sync::OnceLock<Metadata> = std::sync::OnceLock::new();
        match self.extras.as_deref().map(|extras| &extras.metadata) {
            Some(Ok(metadata)) => metadata,
            None | Some(Err(_)) => NONE.get_or_init(Metadata::new),
        }
    }

    /// The metadata a call of `method` sends (with `trace` as its trace
    /// parent), or why it cannot.
    pub(super) fn outgoing(
        &self,
        method: &str,
        trace: Option<&TraceContext>,
    ) -> Result<Option<Arc<Metadata>>, Error> {
        let metadata = match self.extras.as_deref().map(|extras| &extras.metadata) {
            None => None,
            Some(Ok(metadata)) if metadata.is_empty() => None,
            Some(Ok(metadata)) => Some(Arc::clone(metadata)),
            Some(Err(err)) => {
                return Err(Error::BadRequest {
                    method: method.to_owned(),
                    reason: err.to_string(),
                });
            }
        };
        let Some(trace) = trace else {
            return Ok(metadata);
        };
        let mut metadata = metadata.map(Arc::unwrap_or_clone).unwrap_or_default();
        trace.inject(&mut metadata);
        Ok(Some(Arc::new(metadata)))
    }

    /// This client with `wrap`'s layers around each of its calls (those
    /// that return one value; streams go straight to the network).
    #[doc(hidden)]
    pub fn with_layers(&self, wrap: &(dyn Fn(ClientService) -> ClientService + Send + Sync)) -> Client {
        // The metadata travels in the `ClientCall`, so middleware can see
        // and change it.
        let direct = Client {
            shared: Arc::clone(&self.shared),
            extras: None,
        };
        let base = || {
            BoxCloneSyncService::new(tower::service_fn(move |call: ClientCall| {
                let client = direct.clone();
                async move {
                    let deadline = Deadline {
                        at: call.deadline,
                        budget: call.remaining(),
                    };
                    let metadata = (!call.metadata.is_empty()).then(|| Arc::new(call.metadata));
                    let request = Encoded {
                        method: call.method,
                        descriptor: call.descriptor,
                        args: call.args,
                        idempotent: call.idempotent,
                    };
                    let start = Start::Layers(Box::new((deadline, metadata)));
                    let raw = |_: &Client, _: &'static str, payload: Payload| Ok(payload.into_bytes());
                    client.unary(request, start, raw).await.map_err(BoxError::from)
                }
            }))
        };
        let stack = match self.stack() {
            // Layers added later wrap those added before.
            Some(stack) => wrap(stack.clone()),
            None => wrap(base()),
        };
        let mut extras = self.extras.as_deref().cloned().unwrap_or_default();
        extras.stack = Some(stack);
        Client {
            shared: Arc::clone(&self.shared),
            extras: Some(Arc::new(extras)),
        }
    }
}

/// A request whose arguments are encoded already: what the innermost
/// client middleware sends.
struct Encoded {
    method: &'static str,
    descriptor: Option<&'static MethodDescriptor>,
    args: Bytes,
    idempotent: bool,
}

impl RequestMessage for Encoded {
    fn method(&self) -> &'static str {
        self.method
    }

    fn encode_args(&self, out: &mut bytes::BytesMut) -> Result<(), Error> {
        out.extend_from_slice(&self.args);
        Ok(())
    }

    fn idempotent(&self) -> bool {
        self.idempotent
    }

    fn descriptor(&self) -> Option<&'static MethodDescriptor> {
        self.descriptor
    }
}
