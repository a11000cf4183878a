//! Applying the staged deployment's additions to the running system (`install --apply-live`,
//! `apply-live`), without a reboot.
//!
//! How: the difference between the booted commit's `/usr` and the staged commit's is computed
//! on the two trees (subtrees with the same checksum are skipped, so the cost follows the
//! change). The new and changed files are checked out into a fresh layer directory under
//! `/run/layerd/live/`, and only when the layer is complete is a read-only overlay mounted on
//! `/usr` with that layer over the original `/usr` (kept reachable by a bind mount). Nothing is
//! visible before the mount, so a cancel or failure leaves the running system as it was, and
//! `/usr` stays read-only to everyone (only layerd writes the layer, before mounting it). The
//! mounts are made in the host's mount namespace (PID 1's), since layerd's own may be private.
//!
//! By default only additions are applied: files of running packages changed or removed make the
//! request fail naming the packages, unless `allow_replacement` (then removed files become
//! overlay whiteouts). The rpmdb is always taken from the staged tree, so `rpm -q` answers for
//! the live packages. New `/etc` files are copied where the running `/etc` has nothing (local
//! edits win); new tmpfiles.d entries are applied and systemd reloaded when units arrived.
//! Scriptlets are not run live: they ran when the staged tree was built.
//!
//! The state lives in `/run/layerd/live.json` (gone with the reboot, which boots the staged
//! deployment holding the same packages). `apply-live --reset` unmounts the overlays.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};
use crate::mtree;
use crate::ostree;
use crate::sysroot::{deployment_id, SysrootPath};
use crate::txn::Transaction;

/// Where layers, the base bind mount and the state live.
pub const DIR: &str = "/run/layerd/live";
/// The state file (status reads it).
pub const STATE: &str = "/run/layerd/live.json";

/// What is applied live on the booted deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The booted commit the overlay sits on.
    pub booted: String,
    /// The staged commit whose content is applied.
    pub applied: String,
    /// Packages added live (NEVRAs).
    pub added: Vec<String>,
    /// Packages changed or removed live (with --allow-replacement), as `old -> new` or `old`.
    pub replaced: Vec<String>,
    /// Overlays mounted on /usr, oldest first (their layer directories).
    pub layers: Vec<String>,
}

pub fn read_state() -> Option<State> {
    let text = std::fs::read_to_string(STATE).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(s: &State) -> Result<()> {
    let text = serde_json::to_string_pretty(s).map_err(|e| Error::Failed(format!("encoding the live state: {e}")))?;
    let tmp = format!("{STATE}.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {tmp}"))?;
    std::fs::rename(&tmp, STATE).with_context(|| format!("writing {STATE}"))
}

/// One difference between two trees (paths relative to the tree root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Added(String),
    Modified(String),
    Removed(String),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added(p) | Change::Modified(p) | Change::Removed(p) => p,
        }
    }
}

/// The differences under `dir` between two commits' trees; unchanged subtrees (same dirtree
/// and dirmeta checksums) are not descended into. An added directory is one change.
pub fn diff(old: &ostree::MutableTree, new: &ostree::MutableTree, dir: &str, out: &mut Vec<Change>) -> Result<()> {
    let join = |name: &str| if dir.is_empty() { name.to_string() } else { format!("{dir}/{name}") };
    let (of, nf) = (old.copy_files(), new.copy_files());
    let (od, nd) = (old.copy_subdirs(), new.copy_subdirs());
    for (name, csum) in &nf {
        match of.get(name) {
            None if od.contains_key(name) => {
                out.push(Change::Removed(join(name)));
                out.push(Change::Added(join(name)));
            }
            None => out.push(Change::Added(join(name))),
            Some(c) if c != csum => out.push(Change::Modified(join(name))),
            Some(_) => {}
        }
    }
    for (name, sub) in &nd {
        match od.get(name) {
            None => {
                if of.contains_key(name) {
                    out.push(Change::Removed(join(name)));
                }
                out.push(Change::Added(join(name)));
            }
            Some(o) => {
                let same = o.contents_checksum() == sub.contents_checksum() && o.metadata_checksum() == sub.metadata_checksum();
                if !same || o.contents_checksum().is_empty() {
                    diff(o, sub, &join(name), out)?;
                }
            }
        }
    }
    for name in of.keys() {
        if !nf.contains_key(name) && !nd.contains_key(name) {
            out.push(Change::Removed(join(name)));
        }
    }
    for name in od.keys() {
        if !nd.contains_key(name) && !nf.contains_key(name) {
            out.push(Change::Removed(join(name)));
        }
    }
    Ok(())
}

/// Run a command in the host's mount namespace (PID 1's): layerd's own may be private
/// (systemd sandboxing), and the live overlay must be seen by every process.
fn host_mount_ns(args: &[&str]) -> Result<()> {
    let mut c = Command::new("nsenter");
    c.arg("--mount=/proc/1/ns/mnt").arg("--").args(args);
    let out = c.output().with_context(|| format!("running {}", args.join(" ")))?;
    if !out.status.success() {
        return Err(Error::Failed(format!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(())
}

fn is_rpmdb(path: &str) -> bool {
    ["usr/share/rpm/", "usr/lib/sysimage/rpm/"].iter().any(|p| path.starts_with(p)) || path == "usr/share/rpm" || path == "usr/lib/sysimage/rpm"
}

/// Files (as `/usr/…` paths) added under `prefix`: added one by one, or inside a directory
/// that was added as a whole (its files are in the layer).
fn added_under(changes: &[Change], layer: &Path, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in changes {
        let Change::Added(p) = c else { continue };
        if p.starts_with(&format!("{prefix}/")) || p == prefix || prefix.starts_with(&format!("{p}/")) {
            let start = if p.len() >= prefix.len() { p.as_str() } else { prefix };
            let mut stack = vec![layer.join(start.strip_prefix("usr/").unwrap_or(start))];
            while let Some(d) = stack.pop() {
                match std::fs::symlink_metadata(&d) {
                    Ok(m) if m.is_dir() => {
                        if let Ok(rd) = std::fs::read_dir(&d) {
                            stack.extend(rd.flatten().map(|e| e.path()));
                        }
                    }
                    Ok(_) => {
                        if let Ok(rel) = d.strip_prefix(layer) {
                            out.push(format!("/usr/{}", rel.display()));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Copy a directory's SELinux label (the top layer's directory attributes are what the overlay
/// shows, so a layer directory must look like the one it covers).
fn copy_dir_attrs(from: &Path, to: &Path) {
    let mut buf = vec![0u8; 1024];
    if let Ok(n) = rustix::fs::getxattr(from, "security.selinux", &mut buf) {
        let _ = rustix::fs::setxattr(to, "security.selinux", &buf[..n], rustix::fs::XattrFlags::empty());
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if let Ok(m) = std::fs::metadata(from) {
        let _ = std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777));
    }
}

/// The host's mount table (PID 1's). Unreadable is an error, never "nothing mounted": reset
/// would otherwise drop layers an overlay still uses.
fn host_mountinfo() -> Result<String> {
    std::fs::read_to_string("/proc/1/mountinfo").context("reading the host's mount table (/proc/1/mountinfo)")
}

/// The mounts on /usr in the host's mount namespace, oldest first: whether each is a live layer.
fn usr_mounts() -> Result<Vec<bool>> {
    Ok(host_mountinfo()?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dash = f.iter().position(|x| *x == "-")?;
            (f.get(4) == Some(&"/usr")).then(|| f.get(dash + 1) == Some(&"overlay") && f.get(dash + 2) == Some(&"layerd-live"))
        })
        .collect())
}

/// Whether `path` is a mount point in the host's mount namespace.
fn is_mount_point(path: &str) -> Result<bool> {
    Ok(host_mountinfo()?.lines().any(|l| l.split_whitespace().nth(4) == Some(path)))
}

/// How many live overlays sit on /usr.
fn live_mounts_on_usr() -> Result<usize> {
    Ok(usr_mounts()?.into_iter().filter(|live| *live).count())
}

/// Create the directories above `rel` in the layer with the owner and mode the running `/usr`
/// gives them (the top layer's directory attributes are what the overlay shows).
fn ensure_parents(layer: &Path, rel: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut cur = layer.to_path_buf();
    let mut running = PathBuf::from("/usr");
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push(part);
        running.push(part);
        if cur.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?;
        if let Ok(m) = std::fs::metadata(&running) {
            std::fs::set_permissions(&cur, std::fs::Permissions::from_mode(m.mode() & 0o7777)).with_context(|| format!("chmod {}", cur.display()))?;
            let _ = std::os::unix::fs::chown(&cur, Some(m.uid()), Some(m.gid()));
            copy_dir_attrs(&running, &cur);
        }
    }
    Ok(())
}

/// Apply the staged deployment live. Returns whether anything changed.
pub fn apply(txn: &Transaction, path: &SysrootPath, allow_replacement: bool) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let sysroot = &locked.sysroot;
    let booted = sysroot
        .booted_deployment()
        .ok_or_else(|| Error::InvalidState("apply-live needs the running system (this sysroot is not booted)".into()))?;
    let staged = sysroot.staged_deployment().ok_or_else(|| {
        Error::InvalidState("there is no staged deployment to apply live; change something first (e.g. `layerctl install --apply-live PKG`)".into())
    })?;
    if staged.osname() != booted.osname() {
        return Err(Error::InvalidState(format!("the staged deployment {} is of another stateroot", deployment_id(&staged))));
    }
    let (bc, sc) = (booted.csum().to_string(), staged.csum().to_string());
    let previous = read_state().filter(|s| s.booted == bc);
    // mounts and state must agree before anything is stacked on them
    let mounted = live_mounts_on_usr()?;
    if mounted != previous.as_ref().map_or(0, |s| s.layers.len()) {
        return Err(Error::InvalidState(format!(
            "/usr has {mounted} live overlay(s) but the live state says otherwise (an interrupted apply-live?); run `layerctl apply-live --reset` first"
        )));
    }
    if previous.as_ref().is_some_and(|s| s.applied == sc) {
        txn.message("The staged deployment is already applied live");
        return Ok(false);
    }
    let repo = sysroot.repo();
    let old = ostree::MutableTree::from_commit(&repo, &bc).with_context(|| format!("opening {bc}"))?;
    let new = ostree::MutableTree::from_commit(&repo, &sc).with_context(|| format!("opening {sc}"))?;
    let usr = |t: &ostree::MutableTree| -> Result<ostree::MutableTree> {
        match mtree::lookup(t, "usr")? {
            mtree::Entry::Dir(d) => Ok(d),
            _ => Err(Error::InvalidState("a deployment without /usr".into())),
        }
    };
    let mut changes = Vec::new();
    txn.task("Comparing the booted and the staged tree", || diff(&usr(&old)?, &usr(&new)?, "usr", &mut changes))?;
    let (etc, usr_changes): (Vec<Change>, Vec<Change>) = changes.into_iter().partition(|c| c.path().starts_with("usr/etc/") || c.path() == "usr/etc");
    if usr_changes.is_empty() && etc.is_empty() {
        if previous.is_some() {
            // back to the booted content: the live overlay goes
            drop(locked);
            return reset(txn);
        }
        txn.message("Nothing to apply live: the staged tree is the booted one");
        return Ok(false);
    }
    let mut replacing: Vec<Change> = usr_changes.iter().filter(|c| !matches!(c, Change::Added(_)) && !is_rpmdb(c.path())).cloned().collect();
    // what is live already counts as running: changing it is a replacement too
    if let Some(prev) = &previous {
        let live = ostree::MutableTree::from_commit(&repo, &prev.applied).with_context(|| format!("opening {}", prev.applied))?;
        let mut since = Vec::new();
        diff(&usr(&live)?, &usr(&new)?, "usr", &mut since)?;
        replacing.extend(since.into_iter().filter(|c| !matches!(c, Change::Added(_)) && !is_rpmdb(c.path()) && !c.path().starts_with("usr/etc")));
    }

    // packages, for messages and status
    let scratch = crate::build::Scratch::new(path.path(), &format!("{}-live", txn.id))?;
    let pkgs = |t: &ostree::MutableTree, c: &str, d: &str| -> Result<Vec<(String, String)>> {
        crate::rpmdb::checkout(&repo, t, c, &scratch.0.join(d), txn.cancellable())?.packages()
    };
    let (before, after) = (pkgs(&old, &bc, "old")?, pkgs(&new, &sc, "new")?);
    let added: Vec<String> = after.iter().filter(|(n, _)| !before.iter().any(|(m, _)| m == n)).map(|(_, v)| v.clone()).collect();
    let mut replaced: Vec<String> = Vec::new();
    for (n, v) in &before {
        match after.iter().find(|(m, _)| m == n) {
            None => replaced.push(format!("{v} (removed)")),
            Some((_, w)) if w != v => replaced.push(format!("{v} -> {w}")),
            _ => {}
        }
    }
    if !replacing.is_empty() && !allow_replacement {
        let what = if replaced.is_empty() {
            let files: Vec<&str> = replacing.iter().take(5).map(Change::path).collect();
            format!("files of the running system would be changed or removed: /{}{}", files.join(", /"), if replacing.len() > 5 { ", …" } else { "" })
        } else {
            format!("packages would be changed or removed: {}", replaced.join(", "))
        };
        return Err(Error::InvalidState(format!("{what}; use --allow-replacement to apply that live anyway (or reboot)")));
    }
    txn.check_cancelled()?;

    // the layer: complete before anything is mounted
    std::fs::create_dir_all(DIR).with_context(|| format!("creating {DIR}"))?;
    let n = previous.as_ref().map_or(0, |s| s.layers.len());
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let layer = PathBuf::from(format!("{DIR}/layer-{}-{n}-{stamp}", &sc[..12]));
    if layer.exists() {
        std::fs::remove_dir_all(&layer).with_context(|| format!("removing {}", layer.display()))?;
    }
    std::fs::create_dir_all(&layer).with_context(|| format!("creating {}", layer.display()))?;
    copy_dir_attrs(Path::new("/usr"), &layer);
    let built = txn.task("Preparing the live layer", || -> Result<()> {
        for c in &usr_changes {
            txn.check_cancelled()?;
            let rel = c.path().strip_prefix("usr/").unwrap_or(c.path());
            let dest = layer.join(rel);
            ensure_parents(&layer, rel)?;
            match c {
                Change::Added(p) | Change::Modified(p) => {
                    if dest.symlink_metadata().is_ok() {
                        let _ = std::fs::remove_dir_all(&dest).or_else(|_| std::fs::remove_file(&dest));
                    }
                    let opts = ostree::RepoCheckoutAtOptions {
                        mode: ostree::RepoCheckoutMode::None,
                        force_copy: true,
                        subpath: Some(PathBuf::from(format!("/{p}"))),
                        ..Default::default()
                    };
                    // a file is checked out into its directory; a directory to its own path
                    let target = match mtree::lookup(&new, p)? {
                        mtree::Entry::Dir(_) => dest.clone(),
                        _ => dest.parent().map(Path::to_path_buf).unwrap_or_else(|| layer.clone()),
                    };
                    repo.checkout_at(Some(&opts), libc::AT_FDCWD, &target, &sc, Some(txn.cancellable()))
                        .with_context(|| format!("checking out /{p}"))?;
                }
                // a whiteout hides the file of the running /usr
                Change::Removed(_) => rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &dest,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| Error::Failed(format!("creating a whiteout for /{}: {e}", c.path())))?,
            }
        }
        Ok(())
    });
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&layer);
        return Err(e);
    }
    txn.check_cancelled().inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&layer);
    })?;

    // the original /usr stays reachable below every live layer; whatever fails here takes
    // back what this apply mounted and the layer it made
    let base = format!("{DIR}/base");
    let mut bound = false;
    let mounted = (|| -> Result<()> {
        if previous.is_none() {
            std::fs::create_dir_all(&base).with_context(|| format!("creating {base}"))?;
            host_mount_ns(&["mount", "--bind", "/usr", &base])?;
            bound = true;
        }
        let opts = format!("ro,lowerdir={}:{base}", layer.display());
        host_mount_ns(&["mount", "-t", "overlay", "layerd-live", "-o", &opts, "/usr"])
    })();
    if let Err(e) = mounted {
        if bound {
            let _ = host_mount_ns(&["umount", &base]);
        }
        let _ = std::fs::remove_dir_all(&layer);
        return Err(e);
    }
    let mut state = previous.unwrap_or_else(|| State { booted: bc.clone(), ..Default::default() });
    state.applied = sc.clone();
    state.added = added.clone();
    state.replaced = replaced.clone();
    state.layers.push(layer.display().to_string());
    if let Err(e) = write_state(&state) {
        // no state, no overlay: what status cannot show must not be mounted
        let _ = host_mount_ns(&["umount", "--lazy", "/usr"]);
        if bound {
            let _ = host_mount_ns(&["umount", "--lazy", &base]);
        }
        let _ = std::fs::remove_dir_all(&layer);
        return Err(e);
    }
    txn.message(format!(
        "Applied live: {} package{} added{}",
        added.len(),
        if added.len() == 1 { "" } else { "s" },
        if replaced.is_empty() { String::new() } else { format!(", {} changed or removed", replaced.len()) }
    ));
    for a in &added {
        txn.message(format!("  Added: {a}"));
    }

    // /etc: new files only where the running /etc has nothing
    let etc_root = PathBuf::from("/etc");
    let mut etc_added = 0;
    for c in &etc {
        let Change::Added(p) = c else { continue };
        let dest = etc_root.join(p.strip_prefix("usr/etc/").unwrap_or(p));
        if dest.symlink_metadata().is_ok() {
            continue;
        }
        let opts = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            force_copy: true,
            subpath: Some(PathBuf::from(format!("/{p}"))),
            ..Default::default()
        };
        let Some(parent) = dest.parent() else { continue };
        let _ = std::fs::create_dir_all(parent);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // checked out beside its place, then renamed in: never half there
        let tmp = parent.join(format!(".layerd-live-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        let is_dir = matches!(mtree::lookup(&new, p)?, mtree::Entry::Dir(_));
        let target = tmp.clone();
        if !is_dir {
            let _ = std::fs::create_dir_all(&tmp);
        }
        let done = repo
            .checkout_at(Some(&opts), libc::AT_FDCWD, &target, &sc, crate::gio::Cancellable::NONE)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let from = if is_dir { tmp.clone() } else { tmp.join(&name) };
                std::fs::rename(&from, &dest).map_err(|e| e.to_string())
            });
        let _ = std::fs::remove_dir_all(&tmp);
        match done {
            Ok(()) => etc_added += 1,
            Err(e) => txn.message(format!("Not copied to /etc: {}: {e}", dest.display())),
        }
    }
    if etc_added > 0 {
        txn.message(format!("Added {etc_added} new entr{} to /etc (existing files kept)", if etc_added == 1 { "y" } else { "ies" }));
    }
    // tmpfiles.d entries and units of the new packages
    let tmpfiles = added_under(&usr_changes, &layer, "usr/lib/tmpfiles.d");
    if !tmpfiles.is_empty() {
        let mut args = vec!["systemd-tmpfiles", "--create"];
        args.extend(tmpfiles.iter().map(String::as_str));
        match host_mount_ns(&args) {
            Ok(()) => txn.message(format!("Applied {} tmpfiles.d entr{}", tmpfiles.len(), if tmpfiles.len() == 1 { "y" } else { "ies" })),
            Err(e) => txn.message(format!("tmpfiles.d entries not applied: {e}")),
        }
    }
    let units = !added_under(&usr_changes, &layer, "usr/lib/systemd/system").is_empty();
    if units && Path::new("/run/systemd/system").exists() {
        match host_mount_ns(&["systemctl", "daemon-reload"]) {
            Ok(()) => txn.message("Reloaded systemd (new units)"),
            Err(e) => txn.message(format!("systemd not reloaded: {e}")),
        }
    }
    txn.message("Scriptlets are not run on the live system (they ran in the staged tree)");
    Ok(true)
}

/// `apply-live --reset`: back to the booted tree (the live overlays are unmounted). Works
/// from the mounts themselves, so an interrupted apply or a stale state is cleaned up too.
pub fn reset(txn: &Transaction) -> Result<bool> {
    let state = read_state();
    let mounted = live_mounts_on_usr()?;
    if state.is_none() && mounted == 0 {
        txn.message("Nothing is applied live");
        return Ok(false);
    }
    // only our overlays: each umount takes the top one, checked to be a live layer first;
    // lazily, so processes that opened live files keep them until they close them
    for _ in 0..mounted {
        // the top /usr mount must be a live layer: never unmount what someone else put there,
        // and never drop the layers or the state while an overlay still uses them
        if usr_mounts()?.last() != Some(&true) {
            return Err(Error::InvalidState(
                "another mount sits on /usr above the live overlays; unmount it, then run `layerctl apply-live --reset` again".into(),
            ));
        }
        host_mount_ns(&["umount", "--lazy", "/usr"])?;
    }
    // an interrupted apply may have left more than one bind mount of the original /usr
    let base = format!("{DIR}/base");
    while is_mount_point(&base)? {
        host_mount_ns(&["umount", "--lazy", &base])?;
    }
    if let Ok(rd) = std::fs::read_dir(DIR) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("layer-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let _ = std::fs::remove_file(STATE);
    let n = state.map_or(0, |s| s.added.len());
    txn.message(format!("Reset: /usr is the booted tree again ({n} package{} no longer live)", if n == 1 { "" } else { "s" }));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(repo: &ostree::Repo, dir: &Path) -> String {
        let tree = ostree::MutableTree::new();
        repo.prepare_transaction(crate::gio::Cancellable::NONE).unwrap();
        repo.write_directory_to_mtree(&crate::gio::File::for_path(dir), &tree, None, crate::gio::Cancellable::NONE).unwrap();
        let root = repo.write_mtree(&tree, crate::gio::Cancellable::NONE).unwrap();
        let root = crate::glib::prelude::Cast::downcast::<ostree::RepoFile>(root).unwrap();
        let c = repo.write_commit(None, None, None, None, &root, crate::gio::Cancellable::NONE).unwrap();
        repo.commit_transaction(crate::gio::Cancellable::NONE).unwrap();
        c.to_string()
    }

    #[test]
    fn diff_sees_only_what_changed() {
        let d = tempfile::tempdir().unwrap();
        let repo = ostree::Repo::new_for_path(d.path().join("repo"));
        repo.create(ostree::RepoMode::BareUser, crate::gio::Cancellable::NONE).unwrap();
        let t = d.path().join("t");
        for (p, c) in [("usr/bin/a", "a"), ("usr/bin/b", "b"), ("usr/share/x/y", "y"), ("usr/etc/conf", "c")] {
            std::fs::create_dir_all(t.join(p).parent().unwrap()).unwrap();
            std::fs::write(t.join(p), c).unwrap();
        }
        let one = commit(&repo, &t);
        let again = commit(&repo, &t);
        let tree = |c: &str| ostree::MutableTree::from_commit(&repo, c).unwrap();
        let mut out = Vec::new();
        diff(&tree(&one), &tree(&again), "", &mut out).unwrap();
        assert!(out.is_empty(), "{out:?}");
        std::fs::write(t.join("usr/bin/b"), "b2").unwrap();
        std::fs::write(t.join("usr/bin/c"), "c").unwrap();
        std::fs::create_dir_all(t.join("usr/lib/new")).unwrap();
        std::fs::write(t.join("usr/lib/new/f"), "f").unwrap();
        std::fs::remove_file(t.join("usr/share/x/y")).unwrap();
        let two = commit(&repo, &t);
        let mut out = Vec::new();
        diff(&tree(&one), &tree(&two), "", &mut out).unwrap();
        out.sort_by(|a, b| a.path().cmp(b.path()));
        assert_eq!(
            out,
            [
                Change::Modified("usr/bin/b".into()),
                Change::Added("usr/bin/c".into()),
                Change::Added("usr/lib".into()),
                Change::Removed("usr/share/x/y".into())
            ]
        );
    }
}
