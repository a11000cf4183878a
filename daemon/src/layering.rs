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


use crate::error::{Context, Error, Result};
use crate::origin::{entry_nevra, Origin};
use crate::pkgcache;
use crate::rpmfile::LocalRpm;
use crate::sysroot::{deployment_id, LockedSysroot, SysrootPath};
use crate::txn::Transaction;
use crate::base::{self, BaseChange};
use crate::overrides::{self, OverrideChange};
use crate::{build, deploy, glib, mtree, ostree, resolve, rpmdb};

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
    /// With a base change: report what is available, change nothing.
    pub check: bool,
    /// `check`, plus the package differences between the current and the new base.
    pub preview: bool,
    /// Stage the deployment locked: a reboot does not apply it until `finalize-deployment`.
    pub lock_finalization: bool,
    /// Also apply the staged deployment to the running system (`--apply-live`).
    pub apply_live: bool,
    /// With `apply_live`: files of running packages may be changed or removed live.
    pub allow_replacement: bool,
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
    /// Build on another base: `upgrade`, `rebase`, `deploy`. Layered packages are carried over.
    pub base: BaseChange,
    /// Base package overrides to add or reset.
    pub overrides: OverrideChange,
    /// Kernel argument edits staged with the same deployment (the declarative gRPC `Apply`).
    pub kargs: Option<crate::kargs::KargsEdit>,
    pub opts: LayerOptions,
}

impl LayerRequest {
    pub fn title(&self) -> String {
        let mut parts = Vec::new();
        match &self.base {
            BaseChange::Keep => {}
            BaseChange::Upgrade { .. } => parts.push("upgrade".to_string()),
            BaseChange::Rebase { refspec, revision: None } => parts.push(format!("rebase {refspec}")),
            BaseChange::Rebase { refspec, revision: Some(r) } => parts.push(format!("rebase {refspec} {r}")),
            BaseChange::Deploy { revision } => parts.push(format!("deploy {revision}")),
        }
        if self.opts.check {
            parts.push("--check".into());
        }
        if self.opts.preview {
            parts.push("--preview".into());
        }
        parts.extend(self.overrides.title());
        if let Some(k) = &self.kargs {
            parts.push(k.title());
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
        if self.install_local.is_empty()
            && self.install.is_empty()
            && self.uninstall.is_empty()
            && !self.uninstall_all
            && self.base == BaseChange::Keep
            && self.overrides.is_empty()
            // a declarative request (kargs stated, maybe as "no edit") is never "nothing to do":
            // it answers "unchanged"
            && self.kargs.is_none()
        {
            return Err(Error::InvalidArgument("nothing to do: name packages to install or uninstall".into()));
        }
        if let Some(k) = &self.kargs {
            k.validate()?;
        }
        for n in self.overrides.remove.iter().chain(&self.overrides.reset).chain(&self.install).chain(&self.uninstall) {
            check_package_name(n)?;
        }
        if self.opts.download_only && self.install.is_empty() && self.base == BaseChange::Keep {
            return Err(Error::InvalidArgument("--download-only applies to repository packages; name some".into()));
        }
        let o = &self.opts;
        for (set, flag) in [
            (o.check, "--check"),
            (o.preview, "--preview"),
            (o.download_only, "--download-only"),
            (o.lock_finalization, "--lock-finalization"),
            (o.dry_run, "--dry-run"),
        ] {
            if set && o.reboot {
                return Err(Error::InvalidArgument(format!("--reboot cannot be combined with {flag}: nothing would be applied by it")));
            }
        }
        for (set, flag) in [(o.check, "--check"), (o.preview, "--preview"), (o.download_only, "--download-only"), (o.dry_run, "--dry-run"), (o.lock_finalization, "--lock-finalization")] {
            if set && o.apply_live {
                return Err(Error::InvalidArgument(format!("--apply-live cannot be combined with {flag}")));
            }
        }
        if o.allow_replacement && !o.apply_live {
            return Err(Error::InvalidArgument("--allow-replacement only applies with --apply-live".into()));
        }
        let mut seen = HashSet::new();
        for i in self.install_local.iter().chain(&self.overrides.replace_local) {
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

/// Package entries (`<sha256>:<nevra>`) of solver picks; a pick whose digest the metadata
/// does not give counts as new.
fn pick_entries(picks: &[crate::solve::Pick]) -> Vec<String> {
    picks
        .iter()
        .map(|p| match &p.checksum {
            Some((k, h)) if k == "sha256" => format!("{h}:{}", p.nevra()),
            _ => format!("unknown:{}", p.nevra()),
        })
        .collect()
}

/// The longest package request accepted: a file path (`/usr/bin/x`) is the longest form, and
/// no path is longer than PATH_MAX.
const MAX_PACKAGE_REQUEST: usize = 4096;

/// A package request (name, NEVRA, provide or file path) must be one printable word.
pub(crate) fn check_package_name(n: &str) -> Result<()> {
    if n.is_empty() {
        return Err(Error::InvalidArgument("an empty package name was given".into()));
    }
    if n.len() > MAX_PACKAGE_REQUEST {
        let start: String = n.chars().take(32).collect();
        return Err(Error::InvalidArgument(format!(
            "package name \"{start}…\" is {} bytes long; at most {MAX_PACKAGE_REQUEST} are accepted",
            n.len()
        )));
    }
    if n.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!("{n:?} is not a valid package name (whitespace or control characters)")));
    }
    Ok(())
}

/// `name` of a `name-[epoch:]version-release.arch` string.
pub(crate) fn name_of_nevra(nevra: &str) -> &str {
    let mut it = nevra.rsplitn(3, '-');
    let _release_arch = it.next();
    let _version = it.next();
    it.next().unwrap_or(nevra)
}


/// The deployment whose origin a request changes: the first of the stateroot (the pending one
/// when there is one, else the booted or default one).
pub(crate) fn origin_source(locked: &LockedSysroot) -> Result<ostree::Deployment> {
    let (deployments, anchor) = locked.deployments_and_anchor();
    let anchor_d = deployments.get(anchor).ok_or_else(|| Error::InvalidState("no deployments".into()))?;
    let osname = anchor_d.osname();
    let source = deployments
        .iter()
        .find(|d| d.osname() == osname)
        // the trait's clone (a reference), not libostree's deep copy
        .cloned()
        .unwrap_or_else(|| Clone::clone(anchor_d));
    Ok(source)
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

pub(crate) fn commit_meta_strs(repo: &ostree::Repo, csum: &str, key: &str) -> Vec<String> {
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

/// Run a layering transaction. Returns whether anything changed.
pub fn run(txn: &Transaction, path: &SysrootPath, req: &LayerRequest, settings: &resolve::Settings) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let sysroot = &locked.sysroot;
    if req.opts.lock_finalization && !sysroot.is_booted() {
        return Err(Error::InvalidState("--lock-finalization needs a booted system (offline deployments are not staged)".into()));
    }
    let repo = sysroot.repo();
    let source = origin_source(&locked)?;
    let osname = source.osname().to_string();
    let origin_kf = source
        .origin()
        .ok_or_else(|| Error::InvalidState(format!("deployment {} has no origin file", deployment_id(&source))))?;
    let origin = Origin::from_keyfile(&origin_kf);
    let current_base = base_commit(&repo, &source, &origin)?;
    let scratch = build::Scratch::new(path.path(), &txn.id)?;
    // an image base: --check/--preview read the manifest only (no layer is fetched)
    if let (Some(img), BaseChange::Upgrade { .. }, true) =
        (&origin.container_image_reference, &req.base, req.opts.check || req.opts.preview)
    {
        return check_image(txn, &repo, img, &current_base, req.opts.preview);
    }
    // `--check` reads commit objects only; `--preview` needs the trees to compare packages
    let check_only = req.opts.check && !req.opts.preview;
    let new_base = base::choose(txn, &repo, &origin, &current_base, &req.base, &scratch.0, check_only)?;
    let base = new_base.commit.clone();
    if base != current_base {
        txn.message(format!("New base: {}", base::describe(&repo, &base)));
    }
    if req.opts.check || req.opts.preview {
        return report_available(txn, &repo, &current_base, &base, req.opts.preview, &scratch.0);
    }
    if req.opts.download_only && req.install.is_empty() && req.base != BaseChange::Keep {
        txn.message(format!("Downloaded {}; nothing deployed", base::describe(&repo, &base)));
        return Ok(false);
    }

    // The base's packages (for "already provided by the base" and the rpmdb).
    let base_tree = ostree::MutableTree::from_commit(&repo, &base).with_context(|| format!("opening base commit {base}"))?;
    let db = rpmdb::checkout(&repo, &base_tree, &base, &scratch.0, txn.cancellable())?;
    // the base's package names, read only when local packages or overrides need them
    let current_ovr = overrides::Requested { remove: origin.override_remove.clone(), replace_local: origin.override_replace_local.clone() };
    let base_pkgs: Vec<(String, String)> =
        if origin.requested_local.is_empty() && req.install_local.is_empty() && current_ovr.is_empty() && req.overrides.is_empty() {
            Vec::new()
        } else {
            db.packages()?
        };
    let in_base = |name: &str| base_pkgs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    // base package overrides: the new deployment's, and what they do on this base
    let new_ovr = overrides::plan(&current_ovr, &req.overrides, &base_pkgs, req.opts.idempotent)?;
    let ovr = overrides::active(&new_ovr, &base_pkgs);
    let erase: Vec<String> = ovr.removals.iter().map(|(n, _)| n.clone()).collect();

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

    // the local packages (layered and replacements) join the dependency check: what they need
    // must be in the base or come from a repository, what they need must stay when overrides
    // remove base packages, and a replacement must satisfy what needed the old package
    let local_layered = entries.iter().any(|e| in_base(name_of_nevra(entry_nevra(e))).is_none());
    let local_headers: Vec<PathBuf> = if ovr.is_empty() && !local_layered {
        Vec::new()
    } else {
        let dir = scratch.0.join("solve-local");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut wanted: Vec<String> = entries.iter().filter(|e| in_base(name_of_nevra(entry_nevra(e))).is_none()).cloned().collect();
        wanted.extend(ovr.replacements.iter().map(|(e, _)| e.clone()));
        wanted.sort();
        wanted.dedup();
        let mut files = Vec::new();
        for (i, e) in wanted.iter().enumerate() {
            let sha = crate::origin::entry_sha(e);
            let head = match req.install_local.iter().chain(&req.overrides.replace_local).find(|l| l.rpm.sha256 == sha) {
                Some(l) => l.rpm.head.clone(),
                None => match pkgcache::find_entry(&repo, e)? {
                    Some(p) => p.header,
                    None => continue, // reported by the build
                },
            };
            let f = dir.join(format!("{i}.rpm"));
            std::fs::write(&f, head).with_context(|| format!("writing {}", f.display()))?;
            files.push(f);
        }
        files
    };

    // Repository requests are resolved on every build (carried over, re-resolved on a new base).
    let mut repo_entries: Vec<String> = Vec::new();
    let mut picks: Vec<crate::solve::Pick> = Vec::new();
    let mut resolver = None;
    // the repositories of the merge deployment's /etc, with the new base's release
    let repo_context = || -> Result<(PathBuf, String)> {
        let etc = deployment_etc(&locked, path.path(), &source);
        let os_release = match mtree::lookup(&base_tree, "usr/lib/os-release")? {
            mtree::Entry::File(c) => String::from_utf8_lossy(&mtree::read_content(&repo, &c)?).into_owned(),
            _ => String::new(),
        };
        Ok((etc, os_release))
    };
    let open_resolver = |want_filelists: bool| -> Result<resolve::Resolver> {
        let (etc, os_release) = repo_context()?;
        let mut s = settings.clone();
        if req.opts.cache_only {
            s.freshness = crate::repomd::Freshness::CacheOnly;
        }
        resolve::Resolver::open(txn, &etc, &os_release, db.root(), &base, &s, want_filelists)
    };
    if !requested.is_empty() {
        let want_filelists = requested.iter().any(|r| r.starts_with('/'));
        let mut r = open_resolver(want_filelists)?;
        let mut to_solve = Vec::new();
        for n in &requested {
            // a base package removed in the same request does not provide anything
            let provided = if erase.contains(n) { None } else { r.base_provides(n)? };
            match provided {
                Some(b) if added_names.contains(n) && !req.opts.allow_inactive => {
                    return Err(Error::InvalidArgument(format!(
                        "{n} is already provided by the base ({b}); pass --allow-inactive to request it anyway"
                    )));
                }
                Some(b) => inactive.push(format!("{n} (provided by {b})")),
                None => to_solve.push(n.clone()),
            }
        }
        if !to_solve.is_empty() || !erase.is_empty() || !local_headers.is_empty() {
            let opts = crate::solve::SolveOptions { weak_deps: settings.weak_deps, erase: erase.clone(), local: local_headers.clone() };
            picks = txn.task("Resolving dependencies", || r.solve_with(&to_solve, opts))?;
        }
        repo_entries = pick_entries(&picks);
        resolver = Some(r);
    }

    // Local packages and overrides without repository requests. When the source deployment
    // was built by layerd from this very set on this base, its check holds and what the
    // repositories supplied for the local packages then is carried as it was (an unchanged
    // request answers at once, offline too).
    // the input digest layerd recorded when it built the source deployment (none: another tool built it)
    let source_digest = commit_meta_str(&repo, source.csum().as_str(), "layerd.inputs");
    let as_built = requested.is_empty()
        && origin.requested_packages.is_empty()
        && base == current_base
        && new_ovr == current_ovr
        && entries.iter().collect::<BTreeSet<_>>() == origin.requested_local.iter().collect::<BTreeSet<_>>()
        && source_digest.is_some();
    if resolver.is_none() && !local_headers.is_empty() && as_built {
        let replacements: Vec<&String> = ovr.replacements.iter().map(|(e, _)| e).collect();
        repo_entries = commit_meta_strs(&repo, source.csum().as_str(), "layerd.layered")
            .into_iter()
            .filter(|e| !entries.contains(e) && !replacements.contains(&e))
            .collect();
    } else if resolver.is_none() && (!ovr.is_empty() || !local_headers.is_empty()) {
        // the base first (no repository needed when it has what the local packages need and
        // keeps what others need)
        let base_only = txn.task("Checking dependencies", || resolve::check_base(db.root(), &base, settings, &erase, &local_headers))?;
        match base_only {
            Ok(()) => {}
            // what the base lacks may come from the enabled repositories, as with dnf
            Err(e @ (crate::solve::SolveError::Missing(_) | crate::solve::SolveError::Problems(_))) if !local_headers.is_empty() => {
                let (etc, os_release) = repo_context()?;
                if !resolve::any_enabled(&etc, &os_release) {
                    return Err(resolve::solve_error(e));
                }
                let mut r = open_resolver(false).map_err(|o| {
                    Error::InvalidState(format!("{}; the repositories that could supply it could not be read: {o}", resolve::solve_error(e)))
                })?;
                let opts = crate::solve::SolveOptions { weak_deps: settings.weak_deps, erase: erase.clone(), local: local_headers.clone() };
                picks = txn.task("Resolving dependencies of local packages", || r.solve_with(&[], opts))?;
                repo_entries = pick_entries(&picks);
                resolver = Some(r);
            }
            // removals others need, or changes to the base: no repository changes that
            Err(e) => return Err(resolve::solve_error(e)),
        }
    }

    let local_active: Vec<String> = entries.iter().filter(|e| in_base(name_of_nevra(entry_nevra(e))).is_none()).cloned().collect();
    let replacement_entries: Vec<String> = ovr.replacements.iter().map(|(e, _)| e.clone()).collect();
    let with_replacements = |mut v: Vec<String>, repo_entries: &[String]| {
        v.extend(repo_entries.iter().filter(|e| !v.contains(e)).cloned().collect::<Vec<_>>());
        v.extend(replacement_entries.iter().cloned());
        v
    };
    let mut active = with_replacements(local_active.clone(), &repo_entries);
    // the digest sees removals too (replacements are entries of `active`)
    let digest_of = |active: &[String]| {
        let mut inputs = active.to_vec();
        inputs.extend(ovr.removals.iter().map(|(_, n)| format!("remove:{n}")));
        build::input_digest(&base, &inputs, req.opts.force_replacefiles)
    };
    let digest = digest_of(&active);
    let same_set = new_ovr == current_ovr && {
        let a: BTreeSet<&String> = entries.iter().collect();
        let b: BTreeSet<&String> = origin.requested_local.iter().collect();
        let c: BTreeSet<&String> = requested.iter().collect();
        let d: BTreeSet<&String> = origin.requested_packages.iter().collect();
        a == b && c == d
    };
    let unchanged = same_set
        && base == current_base
        && new_base.refspec.as_deref() == origin.base_refspec()
        && new_base.image == origin.container_image_reference
        && new_base.override_commit == origin.override_commit
        && !req.opts.download_only
        && if entries.is_empty() && requested.is_empty() && new_ovr.is_empty() {
            !origin.is_layered() || origin.container_image_reference.is_some() && origin.requested_local.is_empty() && origin.requested_packages.is_empty()
        } else {
            // a deployment another tool built from the same request counts as built
            source_digest.as_deref().is_none_or(|d| d == digest)
        };
    // kernel arguments of the new deployment (edited by the request, else the source's)
    let kargs_now: Vec<String> = deploy::kargs_of(&source).into_iter().filter(|a| !a.starts_with("ostree=")).collect();
    let kargs = match &req.kargs {
        Some(e) => crate::kargs::apply(&kargs_now, e)?.into_iter().filter(|a| !a.starts_with("ostree=")).collect(),
        None => kargs_now.clone(),
    };
    let kargs_changed = kargs != kargs_now;
    if unchanged && !kargs_changed {
        // the result says "unchanged"; clients print "No change."
        return Ok(false);
    }
    if kargs_changed {
        txn.message(format!("Kernel arguments: {}", kargs.join(" ")));
    }
    if unchanged {
        // only the kernel arguments change: the same tree, a new boot entry
        if req.opts.dry_run {
            txn.message("Dry run: nothing changed");
            return Ok(false);
        }
        let origin = deploy::copy_origin(&origin_kf)?;
        deploy::stage(txn, &locked, &osname, source.csum().as_str(), &origin, &kargs, req.opts.lock_finalization)?;
        return Ok(true);
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
    for (_, nevra) in &ovr.removals {
        if !origin.override_remove.iter().any(|n| *n == name_of_nevra(nevra)) {
            txn.message(format!("Removing base package: {nevra}"));
        }
    }
    for (e, old) in &ovr.replacements {
        if !origin.override_replace_local.contains(e) {
            txn.message(format!("Replacing base package: {old} -> {}", entry_nevra(e)));
        }
    }
    for n in &ovr.inactive {
        txn.message(format!("Inactive override: {n}"));
    }
    for r in current_ovr.remove.iter().filter(|r| !new_ovr.remove.contains(r)) {
        txn.message(format!("Restoring base package: {r}"));
    }
    for e in current_ovr.replace_local.iter().filter(|e| !new_ovr.replace_local.contains(e)) {
        txn.message(format!("Dropping replacement: {}", entry_nevra(e)));
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
        active = with_replacements(local_active.clone(), &repo_entries);
    }
    if req.opts.download_only {
        build::in_repo_transaction(txn, &repo, || {
            for d in &downloads {
                txn.check_cancelled()?;
                pkgcache::ensure(&repo, &d.rpm, txn.cancellable())?;
            }
            Ok(())
        })?;
        txn.message(format!(
            "Downloaded {} package{}; apply with the same request and --cache-only",
            downloads.len(),
            if downloads.len() == 1 { "" } else { "s" }
        ));
        return Ok(false);
    }
    let digest = digest_of(&active);

    // Build: on the source's own layered commit when the request only adds packages to it,
    // else on the base.
    let prior = build::prior_build(&repo, &source, &origin, &base, &current_base, &active, req);
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
    // a plain base commit only when the origin asks for nothing (an origin with overrides,
    // even inactive ones, names a layered commit whose parent is the base)
    let commit = if entries.is_empty() && requested.is_empty() && new_ovr.is_empty() {
        base.clone()
    } else {
        let mut inputs: Vec<&LocalInput> = req.install_local.iter().collect();
        inputs.extend(req.overrides.replace_local.iter());
        inputs.extend(downloads.iter());
        let taken_out = ovr.taken_out();
        let removals: Vec<String> = ovr.removals.iter().map(|(_, n)| n.clone()).collect();
        let replacements: Vec<(String, String)> = ovr.replacements.iter().map(|(e, o)| (entry_nevra(e).to_string(), o.clone())).collect();
        let plan = build::BuildPlan {
            base: &base,
            active: &active,
            prior: &prior_active,
            inputs: &inputs,
            digest: &digest,
            opts: &req.opts,
            local: &local_active,
            requested: &requested,
            remove: &taken_out,
            removals: &removals,
            replacements: &replacements,
        };
        build::in_repo_transaction(txn, &repo, || build::build(txn, &repo, &tree, db, &plan, &scratch.0))?
    };
    txn.check_cancelled().inspect_err(|_| {
        pkgcache::prune_unused(&locked, None);
    })?;

    let new_origin = deploy::new_origin(&origin_kf, &origin, &new_base, &entries, &requested, &new_ovr)?;
    let res = deploy::stage(txn, &locked, &osname, &commit, &new_origin, &kargs, req.opts.lock_finalization);
    pkgcache::prune_unused(&locked, Some(&active));
    res?;
    Ok(true)
}

/// `refresh-md`: sync every enabled repository's metadata (of the booted deployment's
/// `/etc/yum.repos.d`). Returns whether anything was fetched.
pub fn refresh_md(txn: &Transaction, path: &SysrootPath, force: bool, settings: &resolve::Settings) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let source = origin_source(&locked)?;
    let etc = deployment_etc(&locked, path.path(), &source);
    let os_release = std::fs::read_to_string(etc.join("os-release")).unwrap_or_default();
    let freshness = if force { crate::repomd::Freshness::Force } else { crate::repomd::Freshness::Normal };
    let n = resolve::refresh(txn, &etc, &os_release, &settings.cache_dir, freshness)?;
    txn.message(format!("Metadata of {n} repositor{} up to date", if n == 1 { "y" } else { "ies" }));
    Ok(true)
}

/// `upgrade --check/--preview` on an image base: compare the registry's manifest digest with the
/// deployed one.
fn check_image(txn: &Transaction, repo: &ostree::Repo, img: &str, current: &str, preview: bool) -> Result<bool> {
    let deployed = commit_meta_str(repo, current, "ostree.manifest-digest");
    let (digest, version) = crate::container::check(txn, repo, &crate::container::parse(img)?)?;
    if deployed.as_deref() == Some(digest.as_str()) {
        txn.message("No update available.");
        return Ok(false);
    }
    match version {
        Some(v) => txn.message(format!("Available: {v} ({digest})")),
        None => txn.message(format!("Available: {digest}")),
    }
    if preview {
        txn.message("  (package differences are known once the image is fetched: upgrade --download-only)");
    }
    Ok(true)
}

/// `--check` / `--preview`: say what the new base would be (and, previewing, how its packages
/// differ from the current base's); change nothing. "Changed" means an update is available.
fn report_available(txn: &Transaction, repo: &ostree::Repo, current: &str, new: &str, preview: bool, scratch: &Path) -> Result<bool> {
    if new == current {
        txn.message("No update available.");
        return Ok(false);
    }
    txn.message(format!("Available: {}", base::describe(repo, new)));
    if preview {
        let pkgs = |commit: &str, dir: &str| -> Result<Vec<(String, String)>> {
            let tree = ostree::MutableTree::from_commit(repo, commit).with_context(|| format!("opening commit {commit}"))?;
            rpmdb::checkout(repo, &tree, commit, &scratch.join(dir), txn.cancellable())?.packages()
        };
        let (old, new) = (pkgs(current, "old")?, pkgs(new, "new")?);
        for (name, nevra) in &new {
            match old.iter().find(|(n, _)| n == name) {
                None => txn.message(format!("  Added: {nevra}")),
                Some((_, o)) if o != nevra => txn.message(format!("  Changed: {o} -> {nevra}")),
                _ => {}
            }
        }
        for (name, nevra) in &old {
            if !new.iter().any(|(n, _)| n == name) {
                txn.message(format!("  Removed: {nevra}"));
            }
        }
    }
    Ok(true)
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

}
