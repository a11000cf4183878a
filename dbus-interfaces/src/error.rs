//! Typed D-Bus errors. Every failure the daemon reports has a machine-readable name under
//! `org.layerd.Layerd1.Error.` and a human message that names the problem, so scripts can
//! branch on the name and humans can read the message.

use zbus::DBusError;

#[derive(DBusError, Debug)]
#[zbus(prefix = "org.layerd.Layerd1.Error")]
pub enum Error {
    /// Transport-level failure (not sent by the daemon itself).
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Another transaction is changing the sysroot; the message names it.
    Busy(String),
    /// The request is malformed (unknown option, wrong type, bad value); the message names it.
    InvalidArgument(String),
    /// The request is valid but cannot be done in the current state (e.g. rollback while a
    /// deployment is staged, no rollback deployment).
    InvalidState(String),
    /// A named thing (transaction, deployment, package) does not exist.
    NotFound(String),
    /// The caller is not allowed to do this.
    AccessDenied(String),
    /// The transaction was cancelled.
    Cancelled(String),
    /// The sysroot is missing, not an ostree sysroot, or cannot be read.
    Sysroot(String),
    /// Any other failure; the message carries the context chain.
    Failed(String),
}

impl Error {
    /// The short error name without the `org.layerd.Layerd1.Error.` prefix, as shown by the
    /// client and stored in transaction results.
    pub fn short_name(&self) -> &'static str {
        match self {
            Error::ZBus(_) => "ZBus",
            Error::Busy(_) => "Busy",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::InvalidState(_) => "InvalidState",
            Error::NotFound(_) => "NotFound",
            Error::AccessDenied(_) => "AccessDenied",
            Error::Cancelled(_) => "Cancelled",
            Error::Sysroot(_) => "Sysroot",
            Error::Failed(_) => "Failed",
        }
    }

    /// The human message.
    pub fn message(&self) -> String {
        match self {
            Error::ZBus(e) => e.to_string(),
            Error::Busy(m)
            | Error::InvalidArgument(m)
            | Error::InvalidState(m)
            | Error::NotFound(m)
            | Error::AccessDenied(m)
            | Error::Cancelled(m)
            | Error::Sysroot(m)
            | Error::Failed(m) => m.clone(),
        }
    }

    /// Rebuild an error from its short name and message (used for transaction results, which
    /// travel as plain strings in signals and properties).
    pub fn from_parts(name: &str, message: String) -> Self {
        match name {
            "Busy" => Error::Busy(message),
            "InvalidArgument" => Error::InvalidArgument(message),
            "InvalidState" => Error::InvalidState(message),
            "NotFound" => Error::NotFound(message),
            "AccessDenied" => Error::AccessDenied(message),
            "Cancelled" => Error::Cancelled(message),
            "Sysroot" => Error::Sysroot(message),
            _ => Error::Failed(message),
        }
    }
}
