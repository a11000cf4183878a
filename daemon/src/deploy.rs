//! Handing a built commit to libostree: the new origin (what was asked for) and staging (booted)
//! or writing (offline sysroot) the deployment.

use crate::error::{Context, Result};
use crate::base::NewBase;
use crate::origin::Origin;
use crate::sysroot::LockedSysroot;
use crate::txn::Transaction;
use crate::{glib, ostree};

/// The new origin: the source's, with the new package sets. With nothing layered the base
/// is plain again (`refspec=`); with packages it is `baserefspec=` plus `[packages]`, as
/// rpm-ostree writes it.
pub(crate) fn new_origin(
    origin_kf: &glib::KeyFile,
    origin: &Origin,
    base: &NewBase,
    entries: &[String],
    requested: &[String],
    overrides: &crate::overrides::Requested,
) -> Result<glib::KeyFile> {
    let new_origin = copy_origin(origin_kf)?;
    let refspec = if base.image.is_some() { None } else { base.refspec.clone().or_else(|| origin.base_refspec().map(str::to_string)) };
    match &base.override_commit {
        Some(c) => new_origin.set_string("origin", "override-commit", c),
        None => {
            let _ = new_origin.remove_key("origin", "override-commit");
        }
    }
    // the base: an image reference, or an ostree refspec (`refspec=` plain, `baserefspec=`
    // with local changes, as rpm-ostree writes them)
    let layered = !(entries.is_empty() && requested.is_empty() && overrides.is_empty());
    for k in ["refspec", "baserefspec", "container-image-reference"] {
        let _ = new_origin.remove_key("origin", k);
    }
    match (&base.image, &refspec) {
        (Some(img), _) => new_origin.set_string("origin", "container-image-reference", img),
        (None, Some(r)) => new_origin.set_string("origin", if layered { "baserefspec" } else { "refspec" }, r),
        (None, None) => {}
    }
    for (key, list) in [("requested-local", entries), ("requested", requested)] {
        if list.is_empty() {
            let _ = new_origin.remove_key("packages", key);
        } else {
            new_origin.set_value("packages", key, &keyfile_list(list));
        }
    }
    for (key, list) in [("remove", &overrides.remove), ("replace-local", &overrides.replace_local)] {
        if list.is_empty() {
            let _ = new_origin.remove_key("overrides", key);
        } else {
            new_origin.set_value("overrides", key, &keyfile_list(list));
        }
    }
    for group in ["packages", "overrides"] {
        if new_origin.keys(group).map(|k| k.is_empty()).unwrap_or(false) {
            let _ = new_origin.remove_group(group);
        }
    }
    Ok(new_origin)
}

/// A copy of a deployment's origin for a new deployment: what it asks for, without the
/// per-deployment state libostree keeps there (`[libostree-transient]`, i.e. pinning), which a
/// new deployment must not inherit. `override-commit` (a chosen revision) is kept.
pub(crate) fn copy_origin(origin_kf: &glib::KeyFile) -> Result<glib::KeyFile> {
    let copy = glib::KeyFile::new();
    copy.load_from_data(&origin_kf.to_data(), glib::KeyFileFlags::KEEP_COMMENTS).context("copying the origin")?;
    let revision = copy.string("origin", "override-commit").ok();
    ostree::Deployment::origin_remove_transient_state(&copy);
    if let Some(r) = revision {
        copy.set_string("origin", "override-commit", &r);
    }
    Ok(copy)
}

/// The kernel arguments of a deployment's boot entry.
pub(crate) fn kargs_of(d: &ostree::Deployment) -> Vec<String> {
    d.bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| crate::kargs::split_args(&o))
        .unwrap_or_default()
}

/// Stage (booted) or write (offline sysroot) the new deployment of `commit` with `kargs`,
/// merging `/etc` from the merge deployment.
///
/// `lock_finalization` holds the staged deployment back from the next reboot (the lock file
/// exists before the deployment is staged, so no shutdown in between finalizes it). A lock an
/// earlier `--lock-finalization` left stays, as with rpm-ostree: an orchestrator that held the
/// node back decides when it moves, whatever else is staged meanwhile; the message and status
/// (`finalization-locked`) say so.
pub(crate) fn stage(
    txn: &Transaction,
    locked: &LockedSysroot,
    osname: &str,
    commit: &str,
    origin: &glib::KeyFile,
    kargs: &[String],
    lock_finalization: bool,
) -> Result<()> {
    let sysroot = &locked.sysroot;
    let kargs_ref: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let opts = ostree::SysrootDeployTreeOpts { override_kernel_argv: Some(&kargs_ref), ..Default::default() };
    let merge = sysroot.merge_deployment(Some(osname));
    if sysroot.is_booted() {
        let lock = std::path::Path::new(crate::finalize::LOCK);
        let created_lock = lock_finalization && !lock.exists();
        if lock_finalization {
            crate::finalize::lock_staged()?;
        }
        let staged = txn.task("Staging the deployment", || {
            sysroot
                .stage_tree_with_options(Some(osname), commit, Some(origin), merge.as_ref(), &opts, Some(txn.cancellable()))
                .context("staging the new deployment")
        });
        if staged.is_err() && created_lock {
            let _ = std::fs::remove_file(lock);
        }
        staged?;
        if lock_finalization {
            txn.message("Locked: a reboot does not apply it until `layerctl finalize-deployment`");
        } else if lock.exists() {
            txn.message("Still locked (an earlier --lock-finalization): a reboot does not apply it until `layerctl finalize-deployment`");
        }
        txn.message("Run \"systemctl reboot\" to start a reboot");
    } else {
        let new = txn.task("Writing the deployment", || {
            sysroot
                .deploy_tree_with_options(Some(osname), commit, Some(origin), merge.as_ref(), Some(&opts), Some(txn.cancellable()))
                .context("writing the new deployment")
        })?;
        sysroot
            .simple_write_deployment(
                Some(osname),
                &new,
                merge.as_ref(),
                ostree::SysrootSimpleWriteDeploymentFlags::NO_CLEAN,
                Some(txn.cancellable()),
            )
            .context("adding the new deployment to the boot list")?;
        txn.message("The new deployment is the default for the next boot");
    }
    Ok(())
}

/// A keyfile string list (`a;b;`), as glib writes it.
fn keyfile_list(items: &[String]) -> String {
    items.iter().map(|i| format!("{};", i.replace('\\', "\\\\").replace(';', "\\;"))).collect()
}

