//! The JSON-RPC door of a [`Server`](crate::Server): its settings, and the
//! front they make when the server starts.

use std::sync::Arc;

use rpc_core::server::ServerState;
use rpc_core::server::json::{JsonConfig, JsonRpc};
use rpc_transport::http::{Front, HttpConfig};

/// How a server serves JSON callers.
#[derive(Debug, Clone)]
pub(crate) struct Door {
    /// Whether HTTP connections are served at all.
    pub(crate) enabled: bool,
    pub(crate) http: HttpConfig,
    pub(crate) json: JsonConfig,
}

impl Default for Door {
    fn default() -> Self {
        Door {
            enabled: true,
            http: HttpConfig::default(),
            json: JsonConfig::default(),
        }
    }
}

impl Door {
    /// The front JSON callers call, now that the services and limits are
    /// final; `None` if the door is closed.
    pub(crate) fn open(&self, state: &Arc<ServerState>, max_frame_len: usize) -> Option<Front> {
        if !self.enabled {
            return None;
        }
        let http = HttpConfig {
            max_body: max_frame_len,
            write_timeout: state.config.write_timeout,
            ..self.http.clone()
        };
        let json = JsonConfig {
            max_answer: max_frame_len,
            ..self.json.clone()
        };
        Some(Front::new(Arc::new(JsonRpc::new(Arc::clone(state), json)), http))
    }
}
