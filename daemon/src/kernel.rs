//! The kernel of a new tree: when a request changes it (`override remove kernel… --install
//! kernel-rt…`, `override replace ./kernel.rpm`), the tree must end with exactly one
//! `usr/lib/modules/<kver>/vmlinuz` and an `initramfs.img` beside it, which is where libostree
//! takes the boot files from. Kernel packages of CoreOS-like systems ship no initramfs (it is
//! generated): the tree's own dracut makes one in the scriptlet sandbox; a tree without dracut
//! cannot boot a kernel that has none, so that request fails before anything is deployed.

use crate::error::{Error, Result};
use crate::mtree::{self, Entry};
use crate::txn::Transaction;
use crate::{glib, ostree, scripts};
use glib::prelude::*;

/// Kernel versions in `tree` (directories of `usr/lib/modules` holding a `vmlinuz`).
pub fn kernels(tree: &ostree::MutableTree) -> Result<Vec<String>> {
    let Entry::Dir(modules) = mtree::lookup(tree, "usr/lib/modules")? else { return Ok(Vec::new()) };
    let mut out: Vec<String> = modules
        .copy_subdirs()
        .into_iter()
        .filter(|(_, d)| matches!(mtree::child(d, "vmlinuz"), Ok((Some(_), _))))
        .map(|(k, _)| k)
        .collect();
    out.sort();
    Ok(out)
}

/// An initramfs left in a `usr/lib/modules/<kver>` whose kernel went (the initramfs is
/// generated, so no package owns it): removed, with the directory when that empties it.
fn remove_stray_initramfs(tree: &ostree::MutableTree) -> Result<()> {
    let Entry::Dir(modules) = mtree::lookup(tree, "usr/lib/modules")? else { return Ok(()) };
    for (kver, dir) in modules.copy_subdirs() {
        if matches!(mtree::child(&dir, "vmlinuz")?, (Some(_), _)) {
            continue;
        }
        crate::assemble::remove_paths(tree, &[format!("usr/lib/modules/{kver}/initramfs.img"), format!("usr/lib/modules/{kver}")])?;
    }
    Ok(())
}

/// Check the tree has one kernel and give it an initramfs made by the tree's dracut (a kernel
/// change makes the old one stale); without dracut, the packages must have brought one. `scratch` is an empty directory on the repository's filesystem.
pub fn ensure_initramfs(txn: &Transaction, repo: &ostree::Repo, tree: &ostree::MutableTree, base: &str, scratch: &std::path::Path) -> Result<()> {
    let found = kernels(tree)?;
    let kver = match found.as_slice() {
        [] => {
            return Err(Error::InvalidArgument(
                "the new deployment would have no kernel (no usr/lib/modules/*/vmlinuz is left); install one in the same \
                 request, e.g. `layerctl override remove kernel… --install kernel-rt…`"
                    .into(),
            ))
        }
        [k] => k.clone(),
        many => {
            return Err(Error::InvalidArgument(format!(
                "the new deployment would have {} kernels ({}); remove the ones it should not boot in the same request",
                many.len(),
                many.join(", ")
            )))
        }
    };
    remove_stray_initramfs(tree)?;
    let initramfs = format!("usr/lib/modules/{kver}/initramfs.img");
    let dracut = ["usr/bin/dracut", "usr/sbin/dracut"].into_iter().find(|p| matches!(mtree::lookup(tree, p), Ok(Entry::File(_))));
    let Some(dracut) = dracut else {
        // no generator: an initramfs the packages brought is the only one there can be
        if matches!(mtree::lookup(tree, &initramfs)?, Entry::File(_)) {
            txn.message(format!("The tree has no dracut; keeping the initramfs of {kver} as it is"));
            return Ok(());
        }
        return Err(Error::InvalidArgument(format!(
            "kernel {kver} has no initramfs ({initramfs}) and the tree has no dracut to generate one; \
             it would not boot, so nothing was deployed"
        )));
    };
    txn.message(format!("Generating the initramfs of {kver} with the tree's dracut"));
    let meta = mtree::vardict(&[("layerd.scratch", true.to_variant())]);
    let tmp = mtree::commit(repo, tree, Some(base), "layerd initramfs scratch tree", &meta, txn.cancellable())?;
    let script = scripts::Script {
        owner: format!("kernel {kver}"),
        pkg: "dracut".into(),
        what: "initramfs",
        // as rpm-ostree runs it: generic (not host-only), reproducible, with the ostree module
        // that mounts the deployment at boot
        body: format!("exec /{dracut} --no-hostonly --reproducible --add ostree --kver '{kver}' --force '/{initramfs}'\n"),
        prog: vec!["/bin/sh".into()],
        args: Vec::new(),
        stdin: None,
    };
    scripts::run(txn, repo, tree, &tmp, &[script], scratch)?;
    if !matches!(mtree::lookup(tree, &initramfs)?, Entry::File(_)) {
        return Err(Error::Failed(format!("dracut ran but left no {initramfs}")));
    }
    Ok(())
}
