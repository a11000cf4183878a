//! Engine errors. Each variant maps to one typed D-Bus error (see `layerd_interfaces::Error`);
//! messages always name the thing that is wrong.

use layerd_interfaces::Error as ApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Sysroot(String),
    /// A libostree/glib call failed; `context` says what we were doing.
    #[error("{context}: {source}")]
    Ostree {
        context: String,
        #[source]
        source: crate::glib::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach "what we were doing" to glib and io errors.
pub trait Context<T> {
    fn context(self, what: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, crate::glib::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| {
            if source.matches(crate::gio::IOErrorEnum::Cancelled) {
                Error::Cancelled
            } else {
                Error::Ostree { context: what.into(), source }
            }
        })
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.context(what())
    }
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|source| Error::Io { context: what.into(), source })
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.context(what())
    }
}

impl From<&Error> for ApiError {
    fn from(e: &Error) -> Self {
        let m = e.to_string();
        match e {
            Error::Busy(_) => ApiError::Busy(m),
            Error::InvalidArgument(_) => ApiError::InvalidArgument(m),
            Error::InvalidState(_) => ApiError::InvalidState(m),
            Error::NotFound(_) => ApiError::NotFound(m),
            Error::AccessDenied(_) => ApiError::AccessDenied(m),
            Error::Cancelled => ApiError::Cancelled("transaction cancelled".into()),
            Error::Sysroot(_) => ApiError::Sysroot(m),
            Error::Ostree { .. } | Error::Io { .. } | Error::Failed(_) => ApiError::Failed(m),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        (&e).into()
    }
}
