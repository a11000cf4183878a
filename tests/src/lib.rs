//! The virtual-host harness: everything layerd's integration tests and `make demo` need to run
//! the real daemon against a real ostree sysroot without a CoreOS machine.
//!
//! - [`fixture`] builds a small but real OS (busybox userland, kernel + initramfs, os-release,
//!   an rpmdb written by the host's `rpm` from RPMs built here) and commits it to an ostree repo.
//! - [`sysroot`] creates an ostree sysroot in a directory and deploys that OS.
//! - [`bus`] runs a private system-like `dbus-daemon`.
//! - [`yumrepo`] builds rpm-md repositories (`createrepo_c`), [`httpd`] serves them on
//!   127.0.0.1 (and can make them fail).
//! - [`vhost`] "boots" a deployment in bubblewrap (the deployment as `/`, the sysroot at
//!   `/sysroot` and `/boot`, `/run/ostree-booted`, a `/proc/cmdline` with `ostree=`), runs
//!   `layerd` inside it, and "reboots" it the way a real node does (`ostree admin
//!   finalize-staged`, then boot the new default).
//!
//! Nothing is mocked: these are the same tools a node runs.

pub mod bench;
pub mod bus;
pub mod centos;
pub mod cmd;
pub mod demo;
pub mod fixture;
pub mod gpgkeys;
pub mod httpd;
pub mod images;
pub mod logind;
pub mod polkit;
pub mod rpmbuild;
pub mod sysroot;
pub mod tls;
pub mod vhost;
pub mod yumrepo;

pub use fixture::{FixtureRepo, OsSpec};
pub use vhost::VirtualHost;

use std::path::PathBuf;

/// Directory holding the built `layerd`, `layerctl` and `vhost` binaries: `$LAYERD_BIN_DIR`, or
/// the cargo target directory this executable was built into.
/// The workspace's root directory (for the shipped files under systemd/, packaging/).
pub fn workspace_dir() -> PathBuf {
    let me = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    me.parent().map(std::path::Path::to_path_buf).unwrap_or_else(|| me.to_path_buf())
}

pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAYERD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}
