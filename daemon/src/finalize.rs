//! Pinning deployments and holding back a staged one (`--lock-finalization`,
//! `finalize-deployment`), as orchestrators that choose the reboot moment use them.

use crate::error::{Context, Error, Result};
use crate::sysroot::{deployment_id, SysrootPath};
use crate::txn::Transaction;

/// libostree does not finalize a staged deployment at shutdown while this file exists.
pub const LOCK: &str = "/run/ostree/staged-deployment-locked";

/// Hold the staged deployment back until `finalize-deployment`.
pub fn lock_staged() -> Result<()> {
    std::fs::create_dir_all("/run/ostree").context("creating /run/ostree")?;
    std::fs::write(LOCK, "").with_context(|| format!("writing {LOCK}"))
}

/// `pin INDEX [--unpin]`: pinned deployments survive cleanup and new deployments.
pub fn pin(txn: &Transaction, path: &SysrootPath, index: u32, unpin: bool) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let deployments = locked.sysroot.deployments();
    let d = deployments.get(index as usize).ok_or_else(|| {
        Error::InvalidArgument(format!("no deployment at index {index} (there are {})", deployments.len()))
    })?;
    if d.is_pinned() == !unpin {
        return Ok(false);
    }
    if d.is_staged() {
        return Err(Error::InvalidState("a staged deployment cannot be pinned; pin it once it is booted".into()));
    }
    locked
        .sysroot
        .deployment_set_pinned(d, !unpin)
        .with_context(|| format!("{} deployment {}", if unpin { "unpinning" } else { "pinning" }, deployment_id(d)))?;
    txn.message(format!("Deployment {} is {}", deployment_id(d), if unpin { "no longer pinned" } else { "now pinned" }));
    Ok(true)
}

/// `finalize-deployment CHECKSUM`: let the staged deployment (which must be `checksum`, so an
/// orchestrator finalizes exactly what it checked) be applied at the next shutdown. The caller
/// reboots (the operation asks for it). A deployment that was not staged locked is refused
/// unless `allow_unlocked`, as rpm-ostree does: finalizing what nobody held back means the
/// orchestrator's idea of the node is off.
pub fn finalize(txn: &Transaction, path: &SysrootPath, checksum: &str, allow_unlocked: bool) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let staged = locked
        .sysroot
        .staged_deployment()
        .ok_or_else(|| Error::InvalidState("no deployment is staged".into()))?;
    if staged.csum().as_str() != checksum {
        return Err(Error::InvalidArgument(format!(
            "the staged deployment is {}, not {checksum}; refusing to finalize something else",
            staged.csum()
        )));
    }
    match std::fs::remove_file(LOCK) {
        Ok(()) => txn.message(format!("Unlocked {}; it is applied at the next reboot", deployment_id(&staged))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && allow_unlocked => txn.message("The staged deployment was not locked"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::InvalidState(format!(
                "the staged deployment {} is not locked (it was not staged with --lock-finalization); pass --allow-unlocked to reboot into it anyway",
                deployment_id(&staged)
            )))
        }
        Err(e) => return Err(Error::Failed(format!("removing {LOCK}: {e}"))),
    }
    Ok(true)
}
