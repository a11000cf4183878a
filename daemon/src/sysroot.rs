//! Opening, checking and locking the ostree sysroot.
//!
//! A fresh `ostree::Sysroot` is opened for every status refresh and every transaction: libostree
//! objects are not thread-safe, loading takes milliseconds, and a fresh load can never show a
//! stale deployment list after `ostree admin` or rpm-ostree changed the sysroot behind us.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::gio::prelude::*;
use crate::{gio, ostree};

/// A sysroot path layerd was told to manage (`/` on a booted node).
#[derive(Clone, Debug)]
pub struct SysrootPath(PathBuf);

impl SysrootPath {
    /// Check cheaply that `path` is an ostree sysroot (an `ostree/repo` with a config and an
    /// `ostree/deploy`), without loading it, so the daemon can refuse a bad path before it
    /// claims its bus name and still start fast on a good one.
    pub fn check(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::Sysroot(format!("sysroot {}: {e}", path.display())))?;
        if !meta.is_dir() {
            return Err(Error::Sysroot(format!("sysroot {} is not a directory", path.display())));
        }
        for needed in ["ostree/repo/config", "ostree/deploy"] {
            if !path.join(needed).exists() {
                return Err(Error::Sysroot(format!(
                    "{} is not an ostree sysroot: {} is missing",
                    path.display(),
                    path.join(needed).display()
                )));
            }
        }
        Ok(SysrootPath(path.to_path_buf()))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Open and load the sysroot.
    pub fn load(&self, cancellable: Option<&gio::Cancellable>) -> Result<ostree::Sysroot> {
        let sysroot = if self.0 == Path::new("/") {
            ostree::Sysroot::new_default()
        } else {
            ostree::Sysroot::new(Some(&gio::File::for_path(&self.0)))
        };
        if PRIVATE_MOUNT_NS.load(std::sync::atomic::Ordering::SeqCst) {
            // libostree may then remount /sysroot read-write when it writes
            sysroot.set_mount_namespace_in_use();
        }
        sysroot
            .load(cancellable)
            .map_err(|e| Error::Sysroot(format!("loading the sysroot {}: {e}", self.0.display())))?;
        Ok(sysroot)
    }

    /// Open, lock and load the sysroot for a change. Waits for the ostree sysroot lock (held by
    /// `ostree admin`, rpm-ostree or bootc while they work), telling `on_wait` once, and gives
    /// up when `cancellable` is cancelled. The lock is released when the guard drops.
    pub fn lock(
        &self,
        cancellable: &gio::Cancellable,
        on_wait: impl FnOnce(),
    ) -> Result<LockedSysroot> {
        let sysroot = if self.0 == Path::new("/") {
            ostree::Sysroot::new_default()
        } else {
            ostree::Sysroot::new(Some(&gio::File::for_path(&self.0)))
        };
        let mut on_wait = Some(on_wait);
        loop {
            if sysroot.try_lock().context("taking the ostree sysroot lock")? {
                break;
            }
            if let Some(f) = on_wait.take() {
                f();
            }
            if cancellable.is_cancelled() {
                return Err(Error::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let locked = LockedSysroot { sysroot };
        locked
            .sysroot
            .load(Some(cancellable))
            .map_err(|e| Error::Sysroot(format!("loading the sysroot {}: {e}", self.0.display())))?;
        Ok(locked)
    }
}

impl SysrootPath {
    /// [`SysrootPath::lock`] for a transaction: cancellable through it, and telling its client
    /// when another tool holds the lock.
    pub fn lock_for(&self, txn: &crate::txn::Transaction) -> Result<LockedSysroot> {
        self.lock(txn.cancellable(), || txn.message("Waiting for the sysroot lock held by another tool"))
    }
}

/// A loaded sysroot whose ostree lock we hold.
pub struct LockedSysroot {
    pub sysroot: ostree::Sysroot,
}

impl LockedSysroot {
    /// The deployments in boot order and the index of the booted one (the default one, index 0,
    /// on an unbooted sysroot, where it stands in for the booted one).
    pub fn deployments_and_anchor(&self) -> (Vec<ostree::Deployment>, usize) {
        let deployments = self.sysroot.deployments();
        let anchor = self
            .sysroot
            .booted_deployment()
            .and_then(|b| deployments.iter().position(|d| same_deployment(d, &b)))
            .unwrap_or(0);
        (deployments, anchor)
    }
}

impl Drop for LockedSysroot {
    fn drop(&mut self) {
        self.sysroot.unlock();
    }
}

/// `<osname>-<checksum>.<serial>`, the deployment id used everywhere (as rpm-ostree does).
pub fn deployment_id(d: &ostree::Deployment) -> String {
    format!("{}-{}.{}", d.osname(), d.csum(), d.deployserial())
}

/// Whether two deployment handles name the same deployment.
pub fn same_deployment(a: &ostree::Deployment, b: &ostree::Deployment) -> bool {
    a.osname() == b.osname() && a.csum() == b.csum() && a.deployserial() == b.deployserial()
}

static PRIVATE_MOUNT_NS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Move the (still single-threaded) process into a mount namespace of its own, receiving the
/// host's mounts (slave propagation) but keeping its own (libostree's read-write remount of
/// /sysroot) private. Call before starting any thread.
pub fn enter_private_mount_namespace() -> std::io::Result<()> {
    // SAFETY: plain system calls with valid arguments; no other thread exists yet.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    PRIVATE_MOUNT_NS.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}
