//! The layerd engine.
//!
//! One engine serves every API: the D-Bus layer (`dbus`) and, later, gRPC only translate
//! requests into [`engine::Operation`]s and transaction events back into their protocol.
//!
//! Where things live:
//! - [`sysroot`]: opening, loading and locking the ostree sysroot.
//! - [`origin`]: the deployment origin file (what was asked for), in rpm-ostree's layout.
//! - [`status`]: turning the sysroot into the typed status every client reads.
//! - [`rollback`], [`cleanup`]: the deployment-list operations.
//! - [`layering`]: install/uninstall/upgrade of layered packages (planning the request), built
//!   by [`build`] from [`rpmfile`] (checking a local RPM), [`pkgcache`] (each RPM imported once
//!   as an ostree commit, placed by [`pathrules`]), [`assemble`] (grafting package trees onto
//!   the base in memory, clashes, owners), [`scripts`] (scriptlets in bubblewrap over an
//!   overlay), [`rpmdb`] (the new deployment's rpmdb via the host's rpm) and [`mtree`] (ostree
//!   tree helpers), then handed to libostree by [`deploy`].
//! - Repository packages: [`repos`] (`.repo` files), [`repomd`] (metadata), [`fetch`]
//!   (downloads), [`solve`] (libsolv), [`gpg`] (signatures), tied together by [`resolve`].
//! - [`txn`]: the transaction model (state, events, cancel, results).
//! - [`engine`]: the single-writer engine: status cache, transactions, dispatch.
//! - [`dbus`]: the `org.layerd.Layerd1` D-Bus objects.

pub mod assemble;
pub mod base;
pub mod build;
pub mod caps;
pub mod cleanup;
pub mod config;
pub mod container;
pub mod dbus;
pub mod deploy;
pub mod engine;
pub mod error;
pub mod fetch;
pub mod finalize;
pub mod gpg;
pub mod grpc;
pub mod gvariant;
pub mod journal;
pub mod kargs;
pub mod kernel;
pub mod layering;
pub mod live;
pub mod mtree;
pub mod origin;
pub mod reboot;
pub mod overrides;
pub mod pathrules;
pub mod pkgcache;
pub mod polkit;
pub mod repomd;
pub mod repos;
pub mod resolve;
pub mod rollback;
pub mod rpmdb;
pub mod rpmfile;
pub mod safefs;
pub mod scripts;
pub mod solve;
pub mod status;
pub mod sysroot;
pub mod txn;
pub mod watch;

pub use error::{Error, Result};

/// libostree, glib and gio, re-exported by ostree-ext so exactly one glib is linked.
pub use ostree_ext::{gio, glib, ostree};

/// layerd's version, recorded in status and (later) in commit metadata.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
