//! Cleanup: remove pending and/or rollback deployments, temporary data, cached metadata.

use std::path::PathBuf;

use crate::error::{Context, Error, Result};
use crate::sysroot::{deployment_id, SysrootPath};
use crate::txn::Transaction;
use crate::ostree;

/// What to clean (at least one must be set).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CleanupOptions {
    /// Staged or pending deployments (boot before the booted one), except pinned ones.
    pub pending: bool,
    /// Rollback deployments (after the booted one), except pinned ones.
    pub rollback: bool,
    /// Temporary data and unreferenced repository objects.
    pub base: bool,
    /// Cached repository metadata.
    pub repomd: bool,
}

impl CleanupOptions {
    pub fn is_empty(&self) -> bool {
        !(self.pending || self.rollback || self.base || self.repomd)
    }

    /// Short title such as `cleanup -p -r`.
    pub fn title(&self) -> String {
        let mut t = String::from("cleanup");
        for (on, flag) in [(self.pending, " -p"), (self.rollback, " -r"), (self.base, " -b"), (self.repomd, " -m")] {
            if on {
                t.push_str(flag);
            }
        }
        t
    }
}

/// One deployment as the planner sees it.
#[derive(Clone, Debug)]
pub struct Slot {
    pub pinned: bool,
}

/// Which deployments to keep (indices, in order). `anchor` is the booted deployment's index
/// (the default one's on an unbooted sysroot), which is always kept.
pub fn plan(slots: &[Slot], anchor: usize, opts: &CleanupOptions) -> Vec<usize> {
    (0..slots.len())
        .filter(|&i| {
            // pinned deployments survive every cleanup (a staged one is never pinned)
            if i < anchor {
                !opts.pending || slots[i].pinned
            } else if i > anchor {
                !opts.rollback || slots[i].pinned
            } else {
                true
            }
        })
        .collect()
}

/// Run a cleanup transaction. `repomd_cache` is the metadata cache directory.
pub fn run(txn: &Transaction, path: &SysrootPath, opts: &CleanupOptions, repomd_cache: &PathBuf) -> Result<bool> {
    if opts.is_empty() {
        return Err(Error::InvalidArgument(
            "cleanup needs at least one of pending, rollback, base, repomd".into(),
        ));
    }
    let locked = path.lock_for(txn)?;
    let sysroot = &locked.sysroot;
    let mut changed = false;
    let (deployments, anchor) = locked.deployments_and_anchor();
    let slots: Vec<Slot> = deployments.iter().map(|d| Slot { pinned: d.is_pinned() }).collect();
    let keep = plan(&slots, anchor, opts);
    for (i, d) in deployments.iter().enumerate() {
        let asked = if i < anchor { opts.pending } else { i > anchor && opts.rollback };
        if asked && d.is_pinned() {
            txn.message(format!("Keeping pinned deployment {}", deployment_id(d)));
        }
    }
    if keep.len() != deployments.len() {
        for (i, d) in deployments.iter().enumerate() {
            if !keep.contains(&i) {
                txn.message(format!("Removing deployment {}", deployment_id(d)));
            }
        }
        txn.check_cancelled()?;
        // same objects (refcount clone): libostree matches the booted deployment by identity
        let new: Vec<ostree::Deployment> = keep.iter().map(|&i| Clone::clone(&deployments[i])).collect();
        // writing the list also removes the dropped deployments and prunes the repo
        sysroot
            .write_deployments(&new, Some(txn.cancellable()))
            .context("writing the deployment list")?;
        changed = true;
    } else if opts.pending || opts.rollback {
        txn.message("No deployments to remove");
    }
    if opts.pending || opts.rollback || opts.base {
        let dropped = crate::pkgcache::prune_unused(&locked, None);
        if dropped > 0 {
            txn.message(format!("Dropped {dropped} package{} no deployment uses from the package cache", if dropped == 1 { "" } else { "s" }));
            changed = true;
        }
        // container images no remaining deployment names (their layers go with them)
        let images = crate::container::prune_unused(&sysroot.repo(), &sysroot.deployments())?;
        if images > 0 {
            txn.message(format!("Dropped {images} stored image{} no deployment uses", if images == 1 { "" } else { "s" }));
            changed = true;
        }
    }
    if opts.base {
        txn.check_cancelled()?;
        txn.message("Removing temporary data and pruning unreferenced objects");
        sysroot.cleanup(Some(txn.cancellable())).context("cleaning up the sysroot")?;
        changed = true;
    }
    if opts.repomd {
        if repomd_cache.exists() {
            txn.message(format!("Removing cached repository metadata in {}", repomd_cache.display()));
            std::fs::remove_dir_all(repomd_cache)
                .with_context(|| format!("removing {}", repomd_cache.display()))?;
            changed = true;
        } else {
            txn.message("No cached repository metadata");
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(pinned: &[bool]) -> Vec<Slot> {
        pinned.iter().map(|&p| Slot { pinned: p }).collect()
    }

    #[test]
    fn rollback_removes_older_unpinned() {
        let o = CleanupOptions { rollback: true, ..Default::default() };
        assert_eq!(plan(&slots(&[false, false, true, false]), 0, &o), vec![0, 2]);
    }

    #[test]
    fn pending_removes_newer_only() {
        let o = CleanupOptions { pending: true, ..Default::default() };
        assert_eq!(plan(&slots(&[false, false, false]), 1, &o), vec![1, 2]);
    }

    #[test]
    fn pending_keeps_a_pinned_one() {
        // a pinned rollback that `rollback` made the default is "pending" now
        let o = CleanupOptions { pending: true, ..Default::default() };
        assert_eq!(plan(&slots(&[false, true, false]), 2, &o), vec![1, 2]);
    }

    #[test]
    fn both_keep_only_booted_and_pinned() {
        let o = CleanupOptions { pending: true, rollback: true, ..Default::default() };
        assert_eq!(plan(&slots(&[false, false, false, true]), 1, &o), vec![1, 3]);
    }

    #[test]
    fn title_lists_flags() {
        let o = CleanupOptions { pending: true, base: true, ..Default::default() };
        assert_eq!(o.title(), "cleanup -p -b");
    }
}
