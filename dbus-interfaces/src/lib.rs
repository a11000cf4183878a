//! The contract between `layerd` and its clients.
//!
//! Everything both sides must agree on lives here and nowhere else: the bus name and object
//! paths, the typed status structures (sent over D-Bus as `a{sv}` dictionaries whose keys are
//! the `rpm-ostree status --json` keys), the typed D-Bus errors, and the zbus proxies. The
//! introspection XML in this crate's folder documents the same API for non-Rust callers; a
//! daemon test keeps the two in step.
//!
//! This crate deliberately does not link libostree or glib so `layerctl` stays small.

pub mod error;
pub mod events;
pub mod json;
pub mod proxy;
pub mod types;

/// The gRPC API (`layerd.v1`, from `proto/layerd/v1/layerd.proto`): messages, the server trait
/// and a client. See the .proto for the documentation of every call and field.
#[cfg(feature = "grpc")]
pub mod grpc {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("layerd.v1");
}

pub use error::Error;
pub use events::{EventData, EventKind, Progress};
pub use types::{Deployment, LastTransaction, TransactionInfo, TransactionResult};

/// Well-known bus name owned by the daemon on the system bus.
pub const BUS_NAME: &str = "org.layerd.Layerd1";
/// Object path of the daemon's main object.
pub const OBJECT_PATH: &str = "/org/layerd/Layerd1";
/// Interface name of the daemon's main object.
pub const INTERFACE: &str = "org.layerd.Layerd1";
/// Interface name of transaction objects.
pub const TRANSACTION_INTERFACE: &str = "org.layerd.Layerd1.Transaction";
/// Prefix of transaction object paths; the transaction id follows.
pub const TRANSACTION_PATH_PREFIX: &str = "/org/layerd/Layerd1/Transaction/";

/// The introspection XML of both interfaces, as shipped in `dbus-interfaces/org.layerd.Layerd1.xml`.
pub const INTROSPECTION_XML: &str = include_str!("../org.layerd.Layerd1.xml");
