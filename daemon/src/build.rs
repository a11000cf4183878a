//! Building a layered commit: base (or the previous layered commit) + package trees +
//! scriptlets + rpmdb, inside one ostree repository transaction, in scratch space on the
//! repository's filesystem.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use glib::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};
use crate::layering::{LayerOptions, LayerRequest, LocalInput};
use crate::origin::entry_nevra;
use crate::origin::Origin;
use crate::pkgcache::{self, CachedPkg};
use crate::txn::Transaction;
use crate::{assemble, gio, glib, mtree, ostree, rpmdb, scripts};

/// Bump when the way trees are built changes, so an identical request rebuilds.
const BUILD_FORMAT: u32 = 1;

/// Digest of everything a layered tree is built from.
pub(crate) fn input_digest(base: &str, active: &[String], force: bool) -> String {
    let mut h = Sha256::new();
    h.update(format!("layerd-build-{BUILD_FORMAT}\0{base}\0force={force}\0"));
    let sorted: BTreeSet<&String> = active.iter().collect();
    for e in sorted {
        h.update(e.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// A scratch directory on the repository's filesystem, removed when dropped.
pub(crate) struct Scratch(pub PathBuf);

impl Scratch {
    pub(crate) fn new(sysroot: &Path, id: &str) -> Result<Self> {
        let p = sysroot.join("ostree/repo/tmp").join(format!("layerd-{id}"));
        if p.exists() {
            remove_tree(&p);
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_tree(&self.0);
    }
}

fn remove_tree(p: &Path) {
    if let Err(e) = std::fs::remove_dir_all(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("removing {}: {e}", p.display());
        }
    }
}

/// Remove scratch directories an interrupted transaction left behind.
pub fn remove_leftovers(sysroot: &Path) {
    let tmp = sysroot.join("ostree/repo/tmp");
    if let Ok(rd) = std::fs::read_dir(&tmp) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("layerd-") {
                remove_tree(&e.path());
            }
        }
    }
}

/// Run `f` inside an ostree repository transaction: committed when it succeeds, aborted (so the
/// repository is left exactly as it was) when it fails or is cancelled.
pub(crate) fn in_repo_transaction<T>(txn: &Transaction, repo: &ostree::Repo, f: impl FnOnce() -> Result<T>) -> Result<T> {
    repo.prepare_transaction(Some(txn.cancellable())).context("starting a repository transaction")?;
    let res = f().and_then(|v| repo.commit_transaction(Some(txn.cancellable())).map(|_| v).context("committing the repository transaction"));
    if res.is_err() {
        if let Err(a) = repo.abort_transaction(gio::Cancellable::NONE) {
            log::warn!("aborting the repository transaction: {a}");
        }
    }
    res
}

/// When the new active set only adds to what the source deployment's commit (built by layerd,
/// on the same base, without --force-replacefiles) layers, the entries it already has: the
/// new commit is built on it and only the added packages are grafted, scripted and recorded.
pub(crate) fn prior_build(
    repo: &ostree::Repo,
    source: &ostree::Deployment,
    origin: &Origin,
    base: &str,
    current_base: &str,
    active: &[String],
    req: &LayerRequest,
) -> Option<Vec<String>> {
    // overrides take files out of the base: always built from the base
    let overrides = !origin.override_remove.is_empty() || !origin.override_replace_local.is_empty() || !req.overrides.is_empty();
    if req.base != crate::base::BaseChange::Keep || base != current_base || !origin.is_layered() || req.opts.force_replacefiles || overrides {
        return None;
    }
    let csum = source.csum().to_string();
    let (c, _) = repo.load_commit(&csum).ok()?;
    let meta = glib::VariantDict::new(Some(&c.child_value(0)));
    let prior: Vec<String> = meta.lookup::<Vec<String>>("layerd.layered").ok().flatten()?;
    let prior_digest: String = meta.lookup::<String>("layerd.inputs").ok().flatten()?;
    let parent = ostree::commit_get_parent(&c).map(|p| p.to_string());
    let fits = parent.as_deref() == Some(base)
        && prior_digest == input_digest(base, &prior, false)
        && !prior.is_empty()
        && prior.len() < active.len()
        && prior.iter().all(|e| active.contains(e));
    fits.then_some(prior)
}

/// What one build puts together.
pub(crate) struct BuildPlan<'a> {
    pub base: &'a str,
    /// Every active entry of the new commit.
    pub active: &'a [String],
    /// Entries already in the tree the build starts from (empty: it starts from the base).
    pub prior: &'a [String],
    pub inputs: &'a [&'a LocalInput],
    pub digest: &'a str,
    pub opts: &'a LayerOptions,
    /// The active local entries (for the metadata).
    pub local: &'a [String],
    /// Repository requests (for the metadata).
    pub requested: &'a [String],
    /// NEVRAs of base packages taken out of the tree: `override remove`d ones and the ones
    /// local replacements stand in for.
    pub remove: &'a [String],
    /// The removed ones (for the metadata).
    pub removals: &'a [String],
    /// `(new, old)` NEVRAs of base packages replaced by local RPMs (the new ones are in
    /// `active`; for the metadata).
    pub replacements: &'a [(String, String)],
}

/// Build the layered commit (inside an open repository transaction).
pub(crate) fn build(txn: &Transaction, repo: &ostree::Repo, tree: &ostree::MutableTree, db: rpmdb::Rpmdb, plan: &BuildPlan<'_>, scratch: &Path) -> Result<String> {
    let BuildPlan { base, active, prior, inputs, digest, opts, local, requested, remove, removals, replacements } = *plan;
    // base packages out first: their files and their rpmdb entries
    let mut kernel_touched = false;
    if !remove.is_empty() {
        txn.task("Removing base packages", || -> Result<()> {
            let paths = db.owned_only_by(remove)?;
            kernel_touched |= paths.iter().any(|p| p.starts_with("usr/lib/modules/") && p.ends_with("/vmlinuz"));
            assemble::remove_paths(tree, &paths)?;
            db.erase(remove)
        })?;
    }
    // packages already in the starting tree first, then the ones to add
    let mut order: Vec<&String> = active.iter().filter(|e| prior.contains(e)).collect();
    order.extend(active.iter().filter(|e| !prior.contains(e)));
    let first_new = prior.len();
    let mut pkgs: Vec<CachedPkg> = Vec::new();
    txn.task("Importing packages", || -> Result<()> {
        for e in order {
            txn.check_cancelled()?;
            let sha = crate::origin::entry_sha(e);
            let p = match inputs.iter().find(|i| i.rpm.sha256 == sha) {
                Some(i) => {
                    let (p, imported) = pkgcache::ensure(repo, &i.rpm, txn.cancellable())?;
                    if imported {
                        txn.message(format!("Imported {}", p.nevra));
                    }
                    p
                }
                None => pkgcache::find_entry(repo, e)?.ok_or_else(|| {
                    Error::InvalidState(format!(
                        "{} is requested (layered or as a replacement) but no longer in the package cache; give its file again",
                        entry_nevra(e)
                    ))
                })?,
            };
            pkgs.push(p);
        }
        Ok(())
    })?;
    txn.check_cancelled()?;
    txn.task("Assembling the new tree", || assemble::overlay(repo, tree, &pkgs, first_new, opts.force_replacefiles))?;
    let added = &pkgs[first_new..];
    for p in added {
        let t = ostree::MutableTree::from_commit(repo, &p.commit).with_context(|| format!("opening the cached tree of {}", p.nevra))?;
        // a kernel image arriving (a kmod package alone does not make a new initramfs)
        kernel_touched |= !crate::kernel::kernels(&t)?.is_empty();
    }
    let triggers = db.file_triggers()?;
    let scripts = scripts::collect(added, tree, &triggers)?;
    if !scripts.is_empty() {
        let meta = mtree::vardict(&[("layerd.scratch", true.to_variant())]);
        let tmp = mtree::commit(repo, tree, Some(base), "layerd scriptlet scratch tree", &meta, txn.cancellable())?;
        scripts::run(txn, repo, tree, &tmp, &scripts, &scratch.join("scripts"))?;
    }
    txn.check_cancelled()?;
    if kernel_touched {
        crate::kernel::ensure_initramfs(txn, repo, tree, base, &scratch.join("initramfs"))?;
    }
    assemble::apply_owners(repo, tree, added, txn.cancellable())?;
    txn.task("Writing the rpmdb", || -> Result<()> {
        db.add(added, scratch)?;
        db.store(repo, tree, txn.cancellable())
    })?;
    txn.check_cancelled()?;
    let (base_c, _) = repo.load_commit(base).with_context(|| format!("loading base commit {base}"))?;
    let base_meta = glib::VariantDict::new(Some(&base_c.child_value(0)));
    let mut meta: Vec<(&str, glib::Variant)> = vec![
        ("layerd.base-commit", base.to_variant()),
        (
            "layerd.packages",
            pkgs.iter().filter(|p| !replacements.iter().any(|(n, _)| *n == p.nevra)).map(|p| p.nevra.clone()).collect::<Vec<_>>().to_variant(),
        ),
        ("layerd.base-removals", removals.to_vec().to_variant()),
        ("layerd.base-replacements", replacements.to_vec().to_variant()),
        ("layerd.requested-local", local.to_vec().to_variant()),
        ("layerd.requested", requested.to_vec().to_variant()),
        ("layerd.layered", active.to_vec().to_variant()),
        ("layerd.inputs", digest.to_variant()),
        ("layerd.version", crate::VERSION.to_variant()),
        ("rpmostree.clientlayer", true.to_variant()),
    ];
    // the base's version travels with the layered commit, also when it comes from an image's
    // label: zincati and the MCO read `version` of the deployment, not of its base
    if let Some(v) = crate::status::commit_version(&base_meta) {
        meta.push(("version", v.to_variant()));
    }
    let mut names: Vec<String> = pkgs.iter().map(|p| p.name.clone()).collect();
    names.extend(removals.iter().map(|r| format!("-{r}")));
    txn.task("Writing the commit", || {
        mtree::commit(repo, tree, Some(base), &format!("layerd: {}", names.join(", ")), &mtree::vardict(&meta), txn.cancellable())
    })
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_ignores_order_and_sees_everything_else() {
        let a = vec!["s1:a-1-1.x86_64".to_string(), "s2:b-1-1.x86_64".to_string()];
        let b = vec![a[1].clone(), a[0].clone()];
        assert_eq!(input_digest("base", &a, false), input_digest("base", &b, false));
        assert_ne!(input_digest("base", &a, false), input_digest("base2", &a, false));
        assert_ne!(input_digest("base", &a, false), input_digest("base", &a, true));
        assert_ne!(input_digest("base", &a, false), input_digest("base", &a[..1], false));
    }
}
