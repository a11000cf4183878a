//! zbus proxies for the daemon's two interfaces. Method calls return [`crate::Error`] so callers
//! can match on the typed D-Bus error (for example `Error::Busy`).

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, Value};

use crate::{Deployment, Error, TransactionInfo, TransactionResult};

/// Options dictionary passed to every mutating method (`a{sv}`); unknown keys are refused.
pub type Options<'a> = HashMap<&'a str, Value<'a>>;

#[zbus::proxy(
    interface = "org.layerd.Layerd1",
    default_service = "org.layerd.Layerd1",
    default_path = "/org/layerd/Layerd1",
    gen_blocking = false
)]
pub trait Layerd1 {
    /// Create a transaction making the previous deployment the default. Returns its path.
    fn rollback(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction removing pending/rollback deployments and pruning the repo.
    fn cleanup(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Re-read the sysroot now (status is otherwise refreshed on every change it sees).
    fn reload(&self) -> Result<(), Error>;

    #[zbus(property)]
    fn deployments(&self) -> zbus::Result<Vec<Deployment>>;
    #[zbus(property)]
    fn booted_deployment(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sysroot(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn is_booted(&self) -> zbus::Result<bool>;
    #[zbus(property)]
    fn transactions(&self) -> zbus::Result<Vec<TransactionInfo>>;
    #[zbus(property)]
    fn daemon_version(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.layerd.Layerd1.Transaction",
    default_service = "org.layerd.Layerd1",
    gen_blocking = false
)]
pub trait Transaction {
    /// Run the transaction. Subscribe to the signals first: nothing is emitted before `Start`.
    fn start(&self) -> Result<(), Error>;
    /// Cancel it (queued or running).
    fn cancel(&self) -> Result<(), Error>;

    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn title(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<TransactionResult>;

    /// A human-readable progress line.
    #[zbus(signal)]
    fn message(&self, text: String) -> zbus::Result<()>;
    /// Emitted once when the transaction ends, with its outcome.
    #[zbus(signal)]
    fn finished(&self, result: TransactionResult) -> zbus::Result<()>;
}
