//! Assembling a new tree: the base commit with the cached package trees grafted on.
//!
//! The base is opened lazily as an `OstreeMutableTree`; only directories a package touches are
//! read. Every package file is checked against what is already there before anything is
//! committed: a file the base (or another package) has with different content or metadata is
//! a clash, and all clashes are reported together; identical files are fine;
//! `--force-replacefiles` lets the package win.

use std::collections::HashMap;

use crate::error::{Context, Error, Result};
use crate::mtree::{self, Entry};
use crate::ostree;
use crate::gio::prelude::*;
use crate::pkgcache::CachedPkg;

/// How many clashes an error lists before summarising.
const SHOWN_CLASHES: usize = 20;

/// Graft `pkgs[first_new..]` onto `tree`; `pkgs[..first_new]` are already in it (a rebuild on
/// a previous layered commit) and only name the owner in clash messages. Fails listing every
/// clash unless `force_replacefiles`.
pub fn overlay(repo: &ostree::Repo, tree: &ostree::MutableTree, pkgs: &[CachedPkg], first_new: usize, force_replacefiles: bool) -> Result<()> {
    let mut placed: HashMap<String, usize> = HashMap::new();
    let mut clashes = Vec::new();
    for (i, p) in pkgs.iter().enumerate().take(first_new) {
        let src = ostree::MutableTree::from_commit(repo, &p.commit)
            .with_context(|| format!("opening the cached tree of {}", p.nevra))?;
        record(&src, "", i, &mut placed);
    }
    for (i, p) in pkgs.iter().enumerate().skip(first_new) {
        let src = ostree::MutableTree::from_commit(repo, &p.commit)
            .with_context(|| format!("opening the cached tree of {}", p.nevra))?;
        let mut g = Graft { pkgs, pkg: i, placed: &mut placed, clashes: &mut clashes, force: force_replacefiles };
        g.merge(&src, tree, "")?;
    }
    if clashes.is_empty() {
        return Ok(());
    }
    let n = clashes.len();
    let mut msg = format!(
        "{n} file clash{} (pass --force-replacefiles to let the layered package win):",
        if n == 1 { "" } else { "es" }
    );
    for c in clashes.iter().take(SHOWN_CLASHES) {
        msg.push_str("\n  ");
        msg.push_str(c);
    }
    if n > SHOWN_CLASHES {
        msg.push_str(&format!("\n  … and {} more", n - SHOWN_CLASHES));
    }
    Err(Error::InvalidArgument(msg))
}

/// Note which package owns each file of `src`.
fn record(src: &ostree::MutableTree, prefix: &str, pkg: usize, placed: &mut HashMap<String, usize>) {
    for name in src.copy_files().into_keys() {
        placed.insert(format!("{prefix}/{name}"), pkg);
    }
    for (name, sub) in src.copy_subdirs() {
        record(&sub, &format!("{prefix}/{name}"), pkg, placed);
    }
}

struct Graft<'a> {
    pkgs: &'a [CachedPkg],
    pkg: usize,
    /// Which package put each file there.
    placed: &'a mut HashMap<String, usize>,
    clashes: &'a mut Vec<String>,
    force: bool,
}

impl Graft<'_> {
    fn owner(&self, path: &str) -> String {
        match self.placed.get(path) {
            Some(&i) => format!("the layered package {}", self.pkgs[i].nevra),
            None => "the base".to_string(),
        }
    }

    fn merge(&mut self, src: &ostree::MutableTree, dst: &ostree::MutableTree, prefix: &str) -> Result<()> {
        let me = &self.pkgs[self.pkg].nevra;
        let mut files: Vec<(String, String)> = src.copy_files().into_iter().collect();
        files.sort();
        for (name, csum) in files {
            let path = format!("{prefix}/{name}");
            let (have_file, have_dir) = mtree::child(dst, &name)?;
            match (have_file, have_dir) {
                (None, None) => {}
                (Some(c), _) if c == csum => continue,
                (Some(_), _) if self.force => {}
                (Some(_), _) => {
                    self.clashes.push(format!("{path}: {me} and {} differ", self.owner(&path)));
                    continue;
                }
                (None, Some(_)) => {
                    self.clashes.push(format!("{path}: a file in {me}, a directory in {}", self.owner(&path)));
                    continue;
                }
            }
            dst.replace_file(&name, &csum).with_context(|| format!("placing {path}"))?;
            self.placed.insert(path, self.pkg);
        }
        let mut dirs: Vec<(String, ostree::MutableTree)> = src.copy_subdirs().into_iter().collect();
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, sub) in dirs {
            let path = format!("{prefix}/{name}");
            let (have_file, have_dir) = mtree::child(dst, &name)?;
            let target = match (have_file, have_dir) {
                (_, Some(d)) => d,
                (Some(_), None) => {
                    // e.g. the base has a symlink where the package ships a directory
                    self.clashes.push(format!("{path}: a directory in {me}, a file or symlink in {}", self.owner(&path)));
                    continue;
                }
                (None, None) => {
                    let d = dst.ensure_dir(&name).with_context(|| format!("creating {path}"))?;
                    d.set_metadata_checksum(&sub.metadata_checksum());
                    d
                }
            };
            self.merge(&sub, &target, &path)?;
        }
        Ok(())
    }
}

/// Users and groups of a tree, from `usr/etc/{passwd,group}` and `usr/lib/{passwd,group}`
/// (nss-altfiles, as CoreOS keeps system users).
fn ids(repo: &ostree::Repo, tree: &ostree::MutableTree, file: &str) -> Result<HashMap<String, u32>> {
    let mut map = HashMap::new();
    for dir in ["usr/lib", "usr/etc"] {
        if let Entry::File(c) = mtree::lookup(tree, &format!("{dir}/{file}"))? {
            let text = mtree::read_content(repo, &c)?;
            for line in String::from_utf8_lossy(&text).lines() {
                let mut f = line.split(':');
                if let (Some(name), Some(_), Some(id)) = (f.next(), f.next(), f.next()) {
                    if let Ok(id) = id.parse() {
                        map.insert(name.to_string(), id);
                    }
                }
            }
        }
    }
    Ok(map)
}

/// Give files owned by users other than root their owners, resolved against the new tree's
/// users and groups (after the scriptlets, which may have created them).
pub fn apply_owners(repo: &ostree::Repo, tree: &ostree::MutableTree, pkgs: &[CachedPkg], cancellable: &crate::gio::Cancellable) -> Result<()> {
    if pkgs.iter().all(|p| p.owners.is_empty()) {
        return Ok(());
    }
    let users = ids(repo, tree, "passwd")?;
    let groups = ids(repo, tree, "group")?;
    for p in pkgs {
        for (path, user, group) in &p.owners {
            let uid = *users.get(user).ok_or_else(|| {
                Error::InvalidArgument(format!("{}: /{path} is owned by user '{user}', which the new tree does not define", p.nevra))
            })?;
            let gid = *groups.get(group).ok_or_else(|| {
                Error::InvalidArgument(format!("{}: /{path} is owned by group '{group}', which the new tree does not define", p.nevra))
            })?;
            match mtree::lookup(tree, path)? {
                Entry::Missing => {}
                Entry::Dir(d) => {
                    let m = repo.read_dirmeta(&d.metadata_checksum()).context("reading directory metadata")?;
                    d.set_metadata_checksum(&mtree::write_dirmeta(repo, uid, gid, m.mode, &m.xattrs)?);
                }
                Entry::File(c) => {
                    let (stream, info, xattrs) = repo.load_file(&c, Some(cancellable)).with_context(|| format!("reading /{path}"))?;
                    let new = match stream {
                        Some(stream) => {
                            let mut data = Vec::new();
                            std::io::Read::read_to_end(&mut stream.into_read(), &mut data)
                                .with_context(|| format!("reading /{path}"))?;
                            repo.write_regfile_inline(None, uid, gid, info.attribute_uint32("unix::mode"), Some(&xattrs), &data, Some(cancellable))
                        }
                        None => {
                            let target = info.symlink_target().map(|t| t.to_string_lossy().into_owned()).unwrap_or_default();
                            repo.write_symlink(None, uid, gid, Some(&xattrs), &target, Some(cancellable))
                        }
                    }
                    .with_context(|| format!("setting the owner of /{path}"))?;
                    let (parent, name) = mtree::parent_of(tree, path, "")?;
                    parent.replace_file(name, &new).with_context(|| format!("setting the owner of /{path}"))?;
                }
            }
        }
    }
    Ok(())
}

/// Take removed base packages' paths (from [`crate::rpmdb::Rpmdb::owned_only_by`]: files, then
/// directories deepest first) out of `tree`. Directories go only when nothing is left in them
/// (a directory may hold files the rpmdb does not know, e.g. generated ones).
pub fn remove_paths(tree: &ostree::MutableTree, paths: &[String]) -> Result<usize> {
    let mut removed = 0;
    for p in paths {
        let parts = crate::mtree::components(p);
        let Some((name, dirs)) = parts.split_last() else { continue };
        let crate::mtree::Entry::Dir(parent) = crate::mtree::lookup(tree, &dirs.join("/"))? else { continue };
        match crate::mtree::child(&parent, name)? {
            (Some(_), _) => {}
            (None, Some(d)) if d.copy_files().is_empty() && d.copy_subdirs().is_empty() => {}
            _ => continue,
        }
        parent.remove(name, true).with_context(|| format!("removing {p} from the new tree"))?;
        removed += 1;
    }
    Ok(removed)
}
