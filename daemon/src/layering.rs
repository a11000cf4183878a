//! Package layering: `install ./x.rpm`, `uninstall`, and rebuilding a layered deployment.
//!
//! A request changes the set of requested packages of the *origin source* (the pending
//! deployment if there is one, else the booted one), so `install a` then `install b` before a
//! reboot gives a deployment with both. The new deployment is always built from the source's
//! *base* commit plus every active package (carry-over needs nothing but the package cache),
//! in one ostree repository transaction: importing packages, grafting them on, running
//! scriptlets, writing the rpmdb and committing. Any failure or a cancel aborts that
//! transaction, so the repository and the deployments stay exactly as they were.
//!
//! An unchanged request is answered "No change" without building: the new origin's entries
//! are compared with the source's, and the commit metadata records a digest of every input
//! (base commit, packages, options, layerd's build format) for the same check on rebuilds.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use glib::prelude::*;
use sha2::{Digest, Sha256};

use crate::error::{Context, Error, Result};
use crate::origin::Origin;
use crate::pkgcache::{self, CachedPkg};
use crate::rpmfile::LocalRpm;
use crate::sysroot::{deployment_id, LockedSysroot, SysrootPath};
use crate::txn::Transaction;
use crate::{assemble, gio, glib, mtree, ostree, resolve, rpmdb, scripts};

/// Bump when the way trees are built changes, so an identical request rebuilds.
const BUILD_FORMAT: u32 = 1;

/// Options of a layering request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// Show what would change; change nothing.
    pub dry_run: bool,
    /// Installing what is already requested, or removing what is not, is not an error.
    pub idempotent: bool,
    /// Record a request for a package the base already has (it stays inactive).
    pub allow_inactive: bool,
    /// Let layered files replace different files of the base or other packages.
    pub force_replacefiles: bool,
    pub reboot: bool,
    /// Resolve and download repository packages into the cache; build nothing.
    pub download_only: bool,
    /// Use only cached metadata and packages (no network).
    pub cache_only: bool,
}

/// A local RPM the client handed over (read and checked when the request came in).
#[derive(Clone, Debug)]
pub struct LocalInput {
    /// The name the client gave (the file name), for messages.
    pub label: String,
    pub rpm: Arc<LocalRpm>,
}

impl PartialEq for LocalInput {
    fn eq(&self, other: &Self) -> bool {
        self.rpm.sha256 == other.rpm.sha256
    }
}
impl Eq for LocalInput {}

/// What to change in the set of layered packages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerRequest {
    pub install_local: Vec<LocalInput>,
    /// Repository packages: names, NEVRAs, provides or file paths (solved with libsolv).
    pub install: Vec<String>,
    /// Names or NEVRAs of layered packages to drop.
    pub uninstall: Vec<String>,
    /// Drop every layered package (before installing `install_local`).
    pub uninstall_all: bool,
    /// Build on the newest commit of the origin's ref (pulled first) instead of the current
    /// base: `upgrade`. Layered packages are carried over.
    pub upgrade: bool,
    pub opts: LayerOptions,
}

impl LayerRequest {
    pub fn title(&self) -> String {
        let mut parts = Vec::new();
        if self.upgrade {
            parts.push("upgrade".to_string());
        }
        if self.uninstall_all {
            parts.push("uninstall --all".to_string());
        }
        if !self.uninstall.is_empty() {
            parts.push(format!("uninstall {}", self.uninstall.join(" ")));
        }
        if !self.install_local.is_empty() || !self.install.is_empty() {
            let mut n: Vec<String> = self.install.clone();
            n.extend(self.install_local.iter().map(|i| i.rpm.nevra()));
            parts.push(format!("install {}", n.join(" ")));
        }
        if self.opts.dry_run {
            parts.push("(dry run)".into());
        }
        parts.join(", ")
    }

    pub fn validate(&self) -> Result<()> {
        if self.install_local.is_empty() && self.install.is_empty() && self.uninstall.is_empty() && !self.uninstall_all && !self.upgrade {
            return Err(Error::InvalidArgument("nothing to do: name packages to install or uninstall".into()));
        }
        for n in &self.install {
            if n.is_empty() || n.contains(char::is_whitespace) || n.contains('\0') {
                return Err(Error::InvalidArgument(format!("{n:?} is not a valid package name")));
            }
        }
        if self.opts.download_only && self.install.is_empty() && !self.upgrade {
            return Err(Error::InvalidArgument("--download-only applies to repository packages; name some".into()));
        }
        let mut seen = HashSet::new();
        for i in &self.install_local {
            if !seen.insert(i.rpm.name.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "{}: package {} is given twice in this request",
                    i.label, i.rpm.name
                )));
            }
        }
        Ok(())
    }
}

/// `name` of a `name-[epoch:]version-release.arch` string.
fn name_of_nevra(nevra: &str) -> &str {
    let mut it = nevra.rsplitn(3, '-');
    let _release_arch = it.next();
    let _version = it.next();
    it.next().unwrap_or(nevra)
}

/// The NEVRA of a `<sha256>:<nevra>` origin entry.
fn entry_nevra(entry: &str) -> &str {
    entry.split_once(':').map_or(entry, |(_, n)| n)
}

/// The deployment whose origin a request changes: the first of the stateroot (the pending one
/// when there is one, else the booted or default one).
fn origin_source(locked: &LockedSysroot) -> Result<(ostree::Deployment, ostree::Deployment)> {
    let (deployments, anchor) = locked.deployments_and_anchor();
    let anchor_d = deployments.get(anchor).ok_or_else(|| Error::InvalidState("no deployments".into()))?;
    let osname = anchor_d.osname();
    let source = deployments
        .iter()
        .find(|d| d.osname() == osname)
        // the trait's clone (a reference), not libostree's deep copy
        .cloned()
        .unwrap_or_else(|| Clone::clone(anchor_d));
    Ok((source, Clone::clone(anchor_d)))
}

/// The base commit of a deployment: its parent when layered, else itself.
fn base_commit(repo: &ostree::Repo, d: &ostree::Deployment, origin: &Origin) -> Result<String> {
    let csum = d.csum().to_string();
    if !origin.is_layered() {
        return Ok(csum);
    }
    let (commit, _) = repo.load_commit(&csum).with_context(|| format!("loading commit {csum}"))?;
    ostree::commit_get_parent(&commit)
        .map(|p| p.to_string())
        .ok_or_else(|| Error::InvalidState(format!("deployment {} is layered but its commit has no parent (base)", deployment_id(d))))
}

fn commit_meta_strs(repo: &ostree::Repo, csum: &str, key: &str) -> Vec<String> {
    let Ok((c, _)) = repo.load_commit(csum) else { return Vec::new() };
    glib::VariantDict::new(Some(&c.child_value(0))).lookup::<Vec<String>>(key).ok().flatten().unwrap_or_default()
}

/// `/etc` of the deployment repository definitions come from: the merge deployment (the
/// booted one) as the admin configured it.
fn deployment_etc(locked: &LockedSysroot, root: &Path, source: &ostree::Deployment) -> PathBuf {
    let sysroot = &locked.sysroot;
    let d = sysroot.merge_deployment(Some(source.osname().as_str())).unwrap_or_else(|| Clone::clone(source));
    root.join(sysroot.deployment_dirpath(&d).as_str()).join("etc")
}

fn commit_meta_str(repo: &ostree::Repo, csum: &str, key: &str) -> Option<String> {
    let (c, _) = repo.load_commit(csum).ok()?;
    glib::VariantDict::new(Some(&c.child_value(0))).lookup::<String>(key).ok().flatten()
}

/// Digest of everything a layered tree is built from.
fn input_digest(base: &str, active: &[String], force: bool) -> String {
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
struct Scratch(PathBuf);

impl Scratch {
    fn new(sysroot: &Path, id: &str) -> Result<Self> {
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

/// Run a layering transaction. Returns whether anything changed.
pub fn run(txn: &Transaction, path: &SysrootPath, req: &LayerRequest, settings: &resolve::Settings) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let sysroot = &locked.sysroot;
    let repo = sysroot.repo();
    let (source, _anchor) = origin_source(&locked)?;
    let osname = source.osname().to_string();
    let origin_kf = source
        .origin()
        .ok_or_else(|| Error::InvalidState(format!("deployment {} has no origin file", deployment_id(&source))))?;
    let origin = Origin::from_keyfile(&origin_kf);
    let current_base = base_commit(&repo, &source, &origin)?;
    let base = if req.upgrade { pull_base(txn, &repo, &origin)? } else { current_base.clone() };
    if base != current_base {
        txn.message(format!("New base: {base}"));
    }
    let scratch = Scratch::new(path.path(), &txn.id)?;

    // The base's packages (for "already provided by the base" and the rpmdb).
    let base_tree = ostree::MutableTree::from_commit(&repo, &base).with_context(|| format!("opening base commit {base}"))?;
    let db = rpmdb::checkout(&repo, &base_tree, &base, &scratch.0, txn.cancellable())?;
    // the base's package names, read only when local packages need them
    let base_pkgs: Vec<(String, String)> =
        if origin.requested_local.is_empty() && req.install_local.is_empty() { Vec::new() } else { db.packages()? };
    let in_base = |name: &str| base_pkgs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());

    // The new sets of requested packages: local entries (`<sha256>:<nevra>`) and repository
    // requests (names).
    let mut entries: Vec<String> = origin.requested_local.clone();
    let mut requested: Vec<String> = origin.requested_packages.clone();
    let mut removed: Vec<String> = Vec::new();
    let mut removed_names: Vec<String> = Vec::new();
    if req.uninstall_all {
        removed.append(&mut entries);
        removed_names.append(&mut requested);
    }
    let matches = |e: &String, u: &str| entry_nevra(e) == u || name_of_nevra(entry_nevra(e)) == u;
    for u in &req.uninstall {
        if let Some(i) = entries.iter().position(|e| matches(e, u)) {
            removed.push(entries.remove(i));
        } else if let Some(i) = requested.iter().position(|r| r == u) {
            removed_names.push(requested.remove(i));
        } else if req.opts.idempotent || removed.iter().any(|e| matches(e, u)) || removed_names.contains(u) {
        } else {
            let mut layered: Vec<&str> = origin.requested_local.iter().map(|e| entry_nevra(e)).collect();
            layered.extend(origin.requested_packages.iter().map(String::as_str));
            return Err(Error::InvalidArgument(format!(
                "{u} is not a layered package{}",
                if layered.is_empty() { " (nothing is layered)".to_string() } else { format!(" (layered: {})", layered.join(", ")) }
            )));
        }
    }
    let mut added: Vec<String> = Vec::new();
    let mut inactive: Vec<String> = Vec::new();
    for i in &req.install_local {
        let nevra = i.rpm.nevra();
        let entry = format!("{}:{nevra}", i.rpm.sha256);
        if entries.contains(&entry) {
            if req.opts.idempotent {
                continue;
            }
            return Err(Error::InvalidArgument(format!("{}: {nevra} is already requested", i.label)));
        }
        if let Some(pos) = entries.iter().position(|e| name_of_nevra(entry_nevra(e)) == i.rpm.name) {
            txn.message(format!("Replacing {} with {nevra}", entry_nevra(&entries[pos])));
            removed.push(entries.remove(pos));
        }
        if let Some(v) = in_base(&i.rpm.name) {
            if !req.opts.allow_inactive {
                return Err(Error::InvalidArgument(format!(
                    "{}: package {} is already provided by the base ({v}); pass --allow-inactive to request it anyway",
                    i.label, i.rpm.name
                )));
            }
            inactive.push(nevra.clone());
        }
        added.push(nevra);
        entries.push(entry);
    }
    let mut added_names: Vec<String> = Vec::new();
    for n in &req.install {
        if requested.contains(n) {
            if req.opts.idempotent {
                continue;
            }
            return Err(Error::InvalidArgument(format!("{n} is already requested")));
        }
        requested.push(n.clone());
        added_names.push(n.clone());
    }
    // removing and re-adding the same thing is no change
    removed.retain(|r| !entries.contains(r));
    removed_names.retain(|r| !requested.contains(r));

    // Repository requests are resolved on every build (carried over, re-resolved on a new base).
    let mut repo_entries: Vec<String> = Vec::new();
    let mut picks: Vec<crate::solve::Pick> = Vec::new();
    let mut resolver = None;
    if !requested.is_empty() {
        let etc = deployment_etc(&locked, path.path(), &source);
        let os_release = match mtree::lookup(&base_tree, "usr/lib/os-release")? {
            mtree::Entry::File(c) => String::from_utf8_lossy(&mtree::read_content(&repo, &c)?).into_owned(),
            _ => String::new(),
        };
        let mut s = settings.clone();
        if req.opts.cache_only {
            s.freshness = crate::repomd::Freshness::CacheOnly;
        }
        let want_filelists = requested.iter().any(|r| r.starts_with('/'));
        let mut r = resolve::Resolver::open(txn, &etc, &os_release, db.root(), &base, &s, want_filelists)?;
        let mut to_solve = Vec::new();
        for n in &requested {
            match r.base_provides(n)? {
                Some(b) if added_names.contains(n) && !req.opts.allow_inactive => {
                    return Err(Error::InvalidArgument(format!(
                        "{n} is already provided by the base ({b}); pass --allow-inactive to request it anyway"
                    )));
                }
                Some(b) => inactive.push(format!("{n} (provided by {b})")),
                None => to_solve.push(n.clone()),
            }
        }
        if !to_solve.is_empty() {
            picks = txn.task("Resolving dependencies", || r.solve(&to_solve, s.weak_deps))?;
        }
        for p in &picks {
            match &p.checksum {
                Some((k, h)) if k == "sha256" => repo_entries.push(format!("{h}:{}", p.nevra())),
                // not known before the download: counts as new
                _ => repo_entries.push(format!("unknown:{}", p.nevra())),
            }
        }
        resolver = Some(r);
    }

    let local_active: Vec<String> = entries.iter().filter(|e| in_base(name_of_nevra(entry_nevra(e))).is_none()).cloned().collect();
    let mut active = local_active.clone();
    active.extend(repo_entries.iter().filter(|e| !active.contains(e)).cloned().collect::<Vec<_>>());
    let digest = input_digest(&base, &active, req.opts.force_replacefiles);
    let same_set = {
        let a: BTreeSet<&String> = entries.iter().collect();
        let b: BTreeSet<&String> = origin.requested_local.iter().collect();
        let c: BTreeSet<&String> = requested.iter().collect();
        let d: BTreeSet<&String> = origin.requested_packages.iter().collect();
        a == b && c == d
    };
    let source_digest = commit_meta_str(&repo, source.csum().as_str(), "layerd.inputs");
    let unchanged = same_set
        && base == current_base
        && !req.opts.download_only
        && if entries.is_empty() && requested.is_empty() {
            !origin.is_layered()
        } else {
            // a deployment another tool built from the same request counts as built
            source_digest.as_deref().is_none_or(|d| d == digest)
        };
    if unchanged {
        // the result says "unchanged"; clients print "No change."
        return Ok(false);
    }

    for r in &removed {
        txn.message(format!("Removing: {}", entry_nevra(r)));
    }
    for n in &removed_names {
        txn.message(format!("Removing request: {n}"));
    }
    for a in &added {
        txn.message(format!("Adding: {a}"));
    }
    for n in &added_names {
        txn.message(format!("Requested: {n}"));
    }
    let prior_entries: Vec<String> = commit_meta_strs(&repo, source.csum().as_str(), "layerd.layered");
    for p in &picks {
        let e = repo_entries.iter().find(|e| entry_nevra(e) == p.nevra());
        if !e.is_some_and(|e| prior_entries.contains(e)) {
            txn.message(format!("Adding: {} ({}, {})", p.nevra(), p.repo, resolve::human(p.download_size)));
        }
    }
    for n in &inactive {
        txn.message(format!("Inactive (provided by the base): {n}"));
    }
    if req.opts.dry_run {
        txn.message("Dry run: nothing changed");
        return Ok(false);
    }
    txn.check_cancelled()?;

    // Download what the package cache does not hold yet.
    let mut downloads: Vec<LocalInput> = Vec::new();
    if let Some(r) = &resolver {
        let fetched = r.fetch(txn, &repo, &picks, &scratch.0.join("downloads"), req.opts.cache_only)?;
        repo_entries.clear();
        for f in fetched {
            match f {
                resolve::Fetched::Cached(e) => repo_entries.push(e),
                resolve::Fetched::Downloaded(i) => {
                    repo_entries.push(format!("{}:{}", i.rpm.sha256, i.rpm.nevra()));
                    downloads.push(i);
                }
            }
        }
        active = local_active.clone();
        active.extend(repo_entries.iter().filter(|e| !active.contains(e)).cloned().collect::<Vec<_>>());
    }
    if req.opts.download_only {
        repo.prepare_transaction(Some(txn.cancellable())).context("starting a repository transaction")?;
        let imported = (|| -> Result<()> {
            for d in &downloads {
                txn.check_cancelled()?;
                pkgcache::ensure(&repo, &d.rpm, txn.cancellable())?;
            }
            Ok(())
        })();
        match imported.and_then(|_| repo.commit_transaction(Some(txn.cancellable())).map(|_| ()).context("committing the package cache")) {
            Ok(()) => {}
            Err(e) => {
                let _ = repo.abort_transaction(gio::Cancellable::NONE);
                return Err(e);
            }
        }
        txn.message(format!(
            "Downloaded {} package{}; apply with the same request and --cache-only",
            downloads.len(),
            if downloads.len() == 1 { "" } else { "s" }
        ));
        return Ok(false);
    }
    let digest = input_digest(&base, &active, req.opts.force_replacefiles);

    // Build: on the source's own layered commit when the request only adds packages to it,
    // else on the base.
    let prior = prior_build(&repo, &source, &origin, &base, &current_base, &active, req);
    let (tree, db, prior_active) = match prior {
        Some(prior_active) => {
            let csum = source.csum().to_string();
            txn.message("Adding to the current layered tree (unchanged packages are not rebuilt)");
            let tree = ostree::MutableTree::from_commit(&repo, &csum).with_context(|| format!("opening commit {csum}"))?;
            let db = rpmdb::checkout(&repo, &tree, &csum, &scratch.0.join("prior"), txn.cancellable())?;
            (tree, db, prior_active)
        }
        None => (base_tree, db, Vec::new()),
    };
    let commit = if entries.is_empty() && requested.is_empty() {
        base.clone()
    } else {
        let mut inputs: Vec<&LocalInput> = req.install_local.iter().collect();
        inputs.extend(downloads.iter());
        repo.prepare_transaction(Some(txn.cancellable())).context("starting a repository transaction")?;
        let plan = BuildPlan {
            base: &base,
            active: &active,
            prior: &prior_active,
            inputs: &inputs,
            digest: &digest,
            opts: &req.opts,
            local: &local_active,
            requested: &requested,
        };
        let built = build(txn, &repo, &tree, db, &plan, &scratch.0);
        match built {
            Ok(c) => match repo.commit_transaction(Some(txn.cancellable())) {
                Ok(_) => c,
                Err(e) => {
                    let _ = repo.abort_transaction(gio::Cancellable::NONE);
                    return Err(e).context("committing the repository transaction");
                }
            },
            Err(e) => {
                if let Err(a) = repo.abort_transaction(gio::Cancellable::NONE) {
                    log::warn!("aborting the repository transaction: {a}");
                }
                return Err(e);
            }
        }
    };
    txn.check_cancelled().inspect_err(|_| {
        prune_cache(&locked, None);
    })?;

    // The new origin: the source's, with the new package set.
    let new_origin = glib::KeyFile::new();
    new_origin
        .load_from_data(&origin_kf.to_data(), glib::KeyFileFlags::KEEP_COMMENTS)
        .context("copying the origin")?;
    let refspec = origin.base_refspec().map(str::to_string);
    if entries.is_empty() && requested.is_empty() {
        let _ = new_origin.remove_key("origin", "baserefspec");
        if let Some(r) = &refspec {
            if origin.container_image_reference.is_none() {
                new_origin.set_string("origin", "refspec", r);
            }
        }
        let _ = new_origin.remove_key("packages", "requested-local");
        let _ = new_origin.remove_key("packages", "requested");
        if new_origin.keys("packages").map(|k| k.is_empty()).unwrap_or(false) {
            let _ = new_origin.remove_group("packages");
        }
    } else {
        if let Some(r) = &refspec {
            if origin.container_image_reference.is_none() {
                let _ = new_origin.remove_key("origin", "refspec");
                new_origin.set_string("origin", "baserefspec", r);
            }
        }
        for (key, list) in [("requested-local", &entries), ("requested", &requested)] {
            if list.is_empty() {
                let _ = new_origin.remove_key("packages", key);
            } else {
                new_origin.set_value("packages", key, &keyfile_list(list));
            }
        }
    }

    let res = stage(txn, &locked, &source, &osname, &commit, &new_origin);
    prune_cache(&locked, Some(&active));
    res?;
    Ok(true)
}

/// `refresh-md`: sync every enabled repository's metadata (of the booted deployment's
/// `/etc/yum.repos.d`). Returns whether anything was fetched.
pub fn refresh_md(txn: &Transaction, path: &SysrootPath, force: bool, settings: &resolve::Settings) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let (source, _) = origin_source(&locked)?;
    let etc = deployment_etc(&locked, path.path(), &source);
    let os_release = std::fs::read_to_string(etc.join("os-release")).unwrap_or_default();
    let freshness = if force { crate::repomd::Freshness::Force } else { crate::repomd::Freshness::Normal };
    let n = resolve::refresh(txn, &etc, &os_release, &settings.cache_dir, freshness)?;
    txn.message(format!("Metadata of {n} repositor{} up to date", if n == 1 { "y" } else { "ies" }));
    Ok(true)
}

/// `upgrade`: fetch the newest commit of the origin's refspec; returns it. The fetched commit
/// stays in the repository (as after `ostree pull`) even if the rest of the transaction fails.
fn pull_base(txn: &Transaction, repo: &ostree::Repo, origin: &Origin) -> Result<String> {
    if origin.container_image_reference.is_some() {
        return Err(Error::InvalidState(
            "upgrading a container-image base is not supported by this layerd version".into(),
        ));
    }
    let refspec = origin
        .base_refspec()
        .ok_or_else(|| Error::InvalidState("the origin names no refspec to upgrade from".into()))?;
    let (remote, branch) = match refspec.split_once(':') {
        Some((r, b)) => (Some(r), b),
        None => (None, refspec),
    };
    if let Some(remote) = remote {
        txn.task(&format!("Fetching {refspec}"), || {
            repo.pull(remote, &[branch], ostree::RepoPullFlags::NONE, None, Some(txn.cancellable()))
                .with_context(|| format!("fetching {refspec}"))
        })?;
    }
    let rev = repo
        .resolve_rev(refspec, false)
        .with_context(|| format!("resolving {refspec}"))?
        .ok_or_else(|| Error::NotFound(format!("{refspec} does not exist in the repository")))?;
    Ok(rev.to_string())
}

/// When the new active set only adds to what the source deployment's commit (built by layerd,
/// on the same base, without --force-replacefiles) layers, the entries it already has: the
/// new commit is built on it and only the added packages are grafted, scripted and recorded.
fn prior_build(
    repo: &ostree::Repo,
    source: &ostree::Deployment,
    origin: &Origin,
    base: &str,
    current_base: &str,
    active: &[String],
    req: &LayerRequest,
) -> Option<Vec<String>> {
    if req.upgrade || base != current_base || !origin.is_layered() || req.opts.force_replacefiles {
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
struct BuildPlan<'a> {
    base: &'a str,
    /// Every active entry of the new commit.
    active: &'a [String],
    /// Entries already in the tree the build starts from (empty: it starts from the base).
    prior: &'a [String],
    inputs: &'a [&'a LocalInput],
    digest: &'a str,
    opts: &'a LayerOptions,
    /// The active local entries (for the metadata).
    local: &'a [String],
    /// Repository requests (for the metadata).
    requested: &'a [String],
}

/// Build the layered commit (inside an open repository transaction).
fn build(txn: &Transaction, repo: &ostree::Repo, tree: &ostree::MutableTree, db: rpmdb::Rpmdb, plan: &BuildPlan<'_>, scratch: &Path) -> Result<String> {
    let BuildPlan { base, active, prior, inputs, digest, opts, local, requested } = *plan;
    // packages already in the starting tree first, then the ones to add
    let mut order: Vec<&String> = active.iter().filter(|e| prior.contains(e)).collect();
    order.extend(active.iter().filter(|e| !prior.contains(e)));
    let first_new = prior.len();
    let mut pkgs: Vec<CachedPkg> = Vec::new();
    txn.task("Importing packages", || -> Result<()> {
        for e in order {
            txn.check_cancelled()?;
            let sha = e.split_once(':').map_or("", |(s, _)| s);
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
                        "{} is requested but no longer in the package cache; install it again from its file",
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
    let triggers = db.file_triggers()?;
    let scripts = scripts::collect(added, tree, &triggers)?;
    if !scripts.is_empty() {
        let meta = mtree::vardict(&[("layerd.scratch", true.to_variant())]);
        let tmp = mtree::commit(repo, tree, Some(base), "layerd scriptlet scratch tree", &meta, txn.cancellable())?;
        scripts::run(txn, repo, tree, &tmp, &scripts, &scratch.join("scripts"))?;
    }
    txn.check_cancelled()?;
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
        ("layerd.packages", pkgs.iter().map(|p| p.nevra.clone()).collect::<Vec<_>>().to_variant()),
        ("layerd.requested-local", local.to_vec().to_variant()),
        ("layerd.requested", requested.to_vec().to_variant()),
        ("layerd.layered", active.to_vec().to_variant()),
        ("layerd.inputs", digest.to_variant()),
        ("layerd.version", crate::VERSION.to_variant()),
        ("rpmostree.clientlayer", true.to_variant()),
    ];
    if let Ok(Some(v)) = base_meta.lookup::<String>("version") {
        meta.push(("version", v.to_variant()));
    }
    let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    txn.task("Writing the commit", || {
        mtree::commit(repo, tree, Some(base), &format!("layerd: {}", names.join(", ")), &mtree::vardict(&meta), txn.cancellable())
    })
}

/// Stage (booted) or write (offline sysroot) the new deployment, keeping the source's kernel
/// arguments and merging `/etc` from the merge deployment.
fn stage(
    txn: &Transaction,
    locked: &LockedSysroot,
    source: &ostree::Deployment,
    osname: &str,
    commit: &str,
    origin: &glib::KeyFile,
) -> Result<()> {
    let sysroot = &locked.sysroot;
    let kargs: Vec<String> = source
        .bootconfig()
        .and_then(|b| b.get("options"))
        .map(|o| o.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let kargs_ref: Vec<&str> = kargs.iter().map(String::as_str).collect();
    let opts = ostree::SysrootDeployTreeOpts { override_kernel_argv: Some(&kargs_ref), ..Default::default() };
    let merge = sysroot.merge_deployment(Some(osname));
    if sysroot.is_booted() {
        txn.task("Staging the deployment", || {
            sysroot
                .stage_tree_with_options(Some(osname), commit, Some(origin), merge.as_ref(), &opts, Some(txn.cancellable()))
                .context("staging the new deployment")
        })?;
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

/// Drop package cache refs no deployment's origin (and not `keep`) asks for; returns how many.
/// Their objects go with the next repository prune (`cleanup -b`, or libostree's own).
pub fn prune_cache(locked: &LockedSysroot, keep: Option<&[String]>) -> usize {
    let repo = locked.sysroot.repo();
    let mut used: HashSet<String> = HashSet::new();
    if let Err(e) = locked.sysroot.load(gio::Cancellable::NONE) {
        log::warn!("reloading the sysroot to prune the package cache: {e}");
        return 0;
    }
    for d in locked.sysroot.deployments() {
        if let Some(kf) = d.origin() {
            for e in Origin::from_keyfile(&kf).requested_local {
                used.insert(e.split_once(':').map_or(e.clone(), |(s, _)| s.to_string()));
            }
        }
        for e in commit_meta_strs(&repo, d.csum().as_str(), "layerd.layered") {
            used.insert(e.split_once(':').map_or(e.clone(), |(s, _)| s.to_string()));
        }
    }
    for e in keep.unwrap_or_default() {
        used.insert(e.split_once(':').map_or(e.clone(), |(s, _)| s.to_string()));
    }
    let Ok(refs) = pkgcache::list(&repo) else { return 0 };
    let mut dropped = 0;
    for (r, commit) in refs {
        let Ok(p) = pkgcache::load(&repo, &commit) else { continue };
        if !used.contains(&p.sha256) {
            log::info!("package cache: dropping {r} ({}), no deployment uses it", p.nevra);
            match repo.set_ref_immediate(None, &r, None, gio::Cancellable::NONE) {
                Ok(()) => dropped += 1,
                Err(e) => log::warn!("dropping {r}: {e}"),
            }
        }
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nevra_names() {
        assert_eq!(name_of_nevra("htop-3.2.1-1.el8.x86_64"), "htop");
        assert_eq!(name_of_nevra("python3-libs-3.9.18-1.el9.x86_64"), "python3-libs");
        assert_eq!(name_of_nevra("foo-1:2.0-1.noarch"), "foo");
        assert_eq!(entry_nevra("abc:foo-1-1.x86_64"), "foo-1-1.x86_64");
    }

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
