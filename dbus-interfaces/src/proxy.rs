//! zbus proxies for the daemon's two interfaces. Method calls return [`crate::Error`] so callers
//! can match on the typed D-Bus error (for example `Error::Busy`).

use std::collections::HashMap;

use zbus::zvariant::{OwnedObjectPath, Value};

use crate::{Deployment, Error, EventData, LastTransaction, TransactionInfo, TransactionResult};

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
    /// Create a transaction changing the layered packages (`local_packages`: open RPM files).
    fn update_deployment(
        &self,
        modifiers: Options<'_>,
        local_packages: Vec<zbus::zvariant::Fd<'_>>,
        options: Options<'_>,
    ) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction moving to the newest commit of the origin's ref (layered packages
    /// carried over).
    fn upgrade(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction moving to another ostree ref (layered packages carried over).
    fn rebase(&self, refspec: &str, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction deploying a given revision (checksum or version) of the current ref.
    fn deploy(&self, revision: &str, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction applying the staged deployment to the running system ("reset":
    /// undoing that).
    fn apply_live(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction downloading repository metadata.
    fn refresh_md(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction editing kernel arguments (a new deployment of the same tree).
    fn kernel_args(&self, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction pinning (or with "unpin", unpinning) the deployment at `index`.
    fn pin(&self, index: u32, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Create a transaction unlocking the staged deployment `checksum` and rebooting.
    fn finalize_deployment(&self, checksum: &str, options: Options<'_>) -> Result<OwnedObjectPath, Error>;
    /// Re-read the sysroot now (status is otherwise refreshed on every change it sees).
    fn reload(&self) -> Result<(), Error>;
    /// Count the caller as a watcher (layerd does not exit idle while it is registered).
    fn register_client(&self, options: Options<'_>) -> Result<(), Error>;
    fn unregister_client(&self) -> Result<(), Error>;

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
    fn last_transaction(&self) -> zbus::Result<LastTransaction>;
    #[zbus(property)]
    fn daemon_version(&self) -> zbus::Result<String>;
}

#[zbus::proxy(
    interface = "org.layerd.Layerd1.Transaction",
    default_service = "org.layerd.Layerd1",
    gen_blocking = false
)]
pub trait Transaction {
    /// Run the transaction (options: `wait` (b) to queue behind a running one). Subscribe to
    /// `Event` first, then replay with `Events(0)` to also see what happened before.
    fn start(&self, options: Options<'_>) -> Result<(), Error>;
    /// Events after sequence number `since`, for replay: `(seq, kind, data)`.
    fn events(&self, since: u64) -> Result<Vec<(u64, String, EventData)>, Error>;
    /// Cancel it (queued or running).
    fn cancel(&self) -> Result<(), Error>;

    #[zbus(property)]
    fn id(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn title(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn client(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn result(&self) -> zbus::Result<TransactionResult>;

    /// One event: sequence number (from 1), kind, data (see [`crate::EventKind`]).
    #[zbus(signal)]
    fn event(&self, seq: u64, kind: String, data: EventData) -> zbus::Result<()>;
}
