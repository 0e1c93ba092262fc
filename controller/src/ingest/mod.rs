//! Ingest: the controller's end of the agents' gRPC streams.
//!
//! [`service`] checks each stream's Hello against its client certificate, stores every finding
//! and action result through a [`FindingSink`] before acking it, keeps the live [`Fleet`] and
//! forwards new findings toward the policy stage on a bounded queue. [`server`] runs the TLS
//! listener.

pub mod error;
pub mod fleet;
pub mod limit;
pub mod server;
pub mod service;
pub mod sink;

pub use error::{SendActionError, ServeError, SinkError};
pub use fleet::{Fleet, HostView};
pub use server::{bind, serve, serve_all};
pub use service::{Forwarded, IngestStats, Ingested, Limits, LinkService, PeerAuth};
pub use sink::{FileSink, FindingSink, MemorySink, Record, Stored};
