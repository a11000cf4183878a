//! The package cache: every layered RPM imported once into its own ostree commit.
//!
//! A package's payload becomes a commit on `layerd/pkg/<name>/<evr>.<arch>` (each part escaped
//! so any RPM name makes a valid ref), already in ostree layout (see [`crate::pathrules`]):
//! building a new deployment then only grafts these small trees onto the base, and a local RPM
//! stays available after its file is gone (carry-over on a new base, uninstalling another
//! package). The commit metadata keeps what later steps need without the file: the RPM's lead,
//! signature and header bytes (for the rpmdb and scriptlets), its sha256 (a rebuilt RPM with
//! the same NEVRA is a different package and is re-imported) and the file owners that are not
//! root (resolved against the new tree's users once its scriptlets have run).
//!
//! Payload content is written straight into the repository as objects (no extraction to disk),
//! so nothing a package contains can touch the filesystem: paths are checked by
//! [`crate::pathrules::place`], device nodes, FIFOs and sockets are refused, hardlinks become
//! shared objects, file capabilities become the `security.capability` xattr.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Context, Error, Result};
use crate::mtree::{self, vardict};
use crate::pathrules::{self, Placement};
use crate::rpmfile::LocalRpm;
use crate::{gio, glib, ostree};
use glib::prelude::*;
use crate::gio::prelude::*;

/// Bump when the import format changes: entries of another format are re-imported.
const FORMAT: u32 = 1;
/// Where ref names start.
pub const REF_PREFIX: &str = "layerd/pkg/";

/// A package in the cache.
#[derive(Clone, Debug)]
pub struct CachedPkg {
    pub name: String,
    pub nevra: String,
    pub sha256: String,
    /// The package's commit.
    pub commit: String,
    /// Lead, signature header and header of the RPM (everything but the payload).
    pub header: Vec<u8>,
    /// `(tree path, user, group)` of entries not owned by root:root.
    pub owners: Vec<(String, String, String)>,
}

impl CachedPkg {
    /// `<sha256>:<nevra>`, as the origin's `requested-local` lists it.
    pub fn origin_entry(&self) -> String {
        format!("{}:{}", self.sha256, self.nevra)
    }

    /// The parsed header.
    pub fn metadata(&self) -> Result<rpm::PackageMetadata> {
        rpm::PackageMetadata::parse(&mut self.header.as_slice())
            .map_err(|e| Error::Failed(format!("{}: cached header unreadable: {e}", self.nevra)))
    }
}

/// Escape one ref component as rpm-ostree does for its package refs: keep `[A-Za-z0-9.-]`,
/// write `_` as `__` and every other byte as `_XX` (so `x86_64` is `x86__64`).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else if b == b'_' {
            out.push_str("__");
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The cache ref of a package.
pub fn ref_name(rpm: &LocalRpm) -> String {
    let evr = if rpm.epoch > 0 {
        format!("{}:{}-{}", rpm.epoch, rpm.version, rpm.release)
    } else {
        format!("{}-{}", rpm.version, rpm.release)
    };
    ref_for(&rpm.name, &evr, &rpm.arch)
}

/// The cache ref of `name-evr.arch` (`evr` as `[epoch:]version-release`).
pub fn ref_for(name: &str, evr: &str, arch: &str) -> String {
    format!("{REF_PREFIX}{}/{}.{}", escape(name), escape(evr), escape(arch))
}

fn meta_str(d: &glib::VariantDict, k: &str) -> Option<String> {
    d.lookup::<String>(k).ok().flatten()
}

/// Read a cached package from its commit.
pub fn load(repo: &ostree::Repo, commit: &str) -> Result<CachedPkg> {
    load_with_format(repo, commit).map(|(p, _)| p)
}

/// [`load`], and the import format the commit was written with.
fn load_with_format(repo: &ostree::Repo, commit: &str) -> Result<(CachedPkg, Option<u32>)> {
    let (c, _) = repo.load_commit(commit).with_context(|| format!("loading package commit {commit}"))?;
    let d = glib::VariantDict::new(Some(&c.child_value(0)));
    let format = d.lookup::<u32>("layerd.pkg.format").ok().flatten();
    let missing = |k: &str| Error::Failed(format!("package commit {commit} has no {k}"));
    let pkg = CachedPkg {
        name: meta_str(&d, "layerd.pkg.name").ok_or_else(|| missing("name"))?,
        nevra: meta_str(&d, "layerd.pkg.nevra").ok_or_else(|| missing("nevra"))?,
        sha256: meta_str(&d, "layerd.pkg.sha256").ok_or_else(|| missing("sha256"))?,
        header: d.lookup::<Vec<u8>>("layerd.pkg.header").ok().flatten().ok_or_else(|| missing("header"))?,
        owners: d.lookup::<Vec<(String, String, String)>>("layerd.pkg.owners").ok().flatten().unwrap_or_default(),
        commit: commit.to_string(),
    };
    Ok((pkg, format))
}

/// The cached package with this NEVRA and sha256, if any.
pub fn find(repo: &ostree::Repo, rpm_ref: &str, sha256: &str) -> Result<Option<CachedPkg>> {
    let Some(commit) = repo.resolve_rev(rpm_ref, true).context("reading the package cache")? else {
        return Ok(None);
    };
    // an entry of another import format, or unreadable, is imported again
    match load_with_format(repo, &commit) {
        Ok((p, Some(FORMAT))) => Ok((p.sha256 == sha256).then_some(p)),
        _ => Ok(None),
    }
}

/// Find a cached package by its `<sha256>:<nevra>` origin entry (carry-over, uninstall of
/// another package: the original file is gone).
pub fn find_entry(repo: &ostree::Repo, entry: &str) -> Result<Option<CachedPkg>> {
    let Some((sha, _nevra)) = entry.split_once(':') else {
        return Err(Error::InvalidState(format!("origin entry {entry:?} is not <sha256>:<nevra>")));
    };
    for (_r, commit) in list(repo)? {
        if let Ok(p) = load(repo, &commit) {
            if p.sha256 == sha {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

/// All cache refs and their commits.
pub fn list(repo: &ostree::Repo) -> Result<Vec<(String, String)>> {
    let refs = repo
        .list_refs(Some(REF_PREFIX.trim_end_matches('/')), gio::Cancellable::NONE)
        .context("listing the package cache")?;
    let mut v: Vec<(String, String)> =
        refs.into_iter().map(|(k, c)| (format!("{REF_PREFIX}{k}"), c.to_string())).collect();
    v.sort();
    Ok(v)
}

/// Return the cached package for `rpm`, importing it when it is not cached yet (or cached
/// from a different file with the same NEVRA). Must run inside a repo transaction; the ref is
/// set when the transaction commits.
pub fn ensure(repo: &ostree::Repo, rpm: &LocalRpm, cancellable: &gio::Cancellable) -> Result<(CachedPkg, bool)> {
    let r = ref_name(rpm);
    if let Some(p) = find(repo, &r, &rpm.sha256)? {
        return Ok((p, false));
    }
    let nevra = rpm.nevra();
    let p = import(repo, rpm, cancellable).map_err(|e| match e {
        Error::InvalidArgument(m) if !m.starts_with(&nevra) => Error::InvalidArgument(format!("{nevra}: {m}")),
        Error::Ostree { context, source } if !context.starts_with(&nevra) => {
            Error::Ostree { context: format!("{nevra}: {context}"), source }
        }
        other => other,
    })?;
    repo.transaction_set_ref(None, &r, Some(&p.commit));
    Ok((p, true))
}

/// Where a payload entry goes, with its metadata.
struct Item {
    path: String,
    kind: rpm::FileType,
    mode: u32,
    user: String,
    group: String,
    caps: Option<String>,
    link: Option<String>,
    content: Option<Vec<u8>>,
    /// `(device, inode)` of a hardlink set member.
    hardlink: Option<(u32, u32)>,
}

/// Import one RPM's payload as a commit.
fn import(repo: &ostree::Repo, rpm: &LocalRpm, cancellable: &gio::Cancellable) -> Result<CachedPkg> {
    let nevra = rpm.nevra();
    let bad = |what: String| Error::InvalidArgument(format!("{nevra}: {what}"));
    let header = &rpm.package.metadata.header;
    // hardlink identities, by path, from the header arrays (header order)
    let entries = rpm.package.metadata.get_file_entries().map_err(|e| bad(format!("file list unreadable: {e}")))?;
    let inodes = header.get_entry_data_as_u32_array(rpm::IndexTag::RPMTAG_FILEINODES).unwrap_or_default();
    let devices = header.get_entry_data_as_u32_array(rpm::IndexTag::RPMTAG_FILEDEVICES).unwrap_or_default();
    let mut ident: HashMap<Vec<u8>, (u32, u32)> = HashMap::new();
    let mut count: HashMap<(u32, u32), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if e.file_type() == rpm::FileType::Regular {
            if let (Some(&ino), Some(&dev)) = (inodes.get(i), devices.get(i)) {
                ident.insert(e.path().as_os_str().as_bytes().to_vec(), (dev, ino));
                *count.entry((dev, ino)).or_default() += 1;
            }
        }
    }
    drop(entries);

    let mut items = Vec::new();
    for f in rpm.package.files().map_err(|e| bad(format!("payload unreadable: {e}")))? {
        if cancellable.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let f = f.map_err(|e| bad(format!("payload unreadable (corrupt or truncated): {e}")))?;
        let m = &f.metadata;
        if m.flags().contains(rpm::FileFlags::GHOST) {
            continue;
        }
        let raw = m.path().as_os_str().as_bytes().to_vec();
        let id = ident.get(&raw).copied().filter(|k| count.get(k).copied().unwrap_or(0) > 1);
        let item = Item {
            path: String::from_utf8_lossy(&raw).into_owned(),
            kind: m.file_type(),
            mode: u32::from(m.permissions()),
            user: m.user().to_string(),
            group: m.group().to_string(),
            caps: m.caps().filter(|c| !c.is_empty()).map(str::to_string),
            link: m.linkto().map(str::to_string),
            hardlink: id,
            content: None,
        };
        let content = f.into_content();
        items.push(Item { content, ..item });
    }

    let root_meta = mtree::write_dirmeta(repo, 0, 0, 0o755, &[])?;
    let root = ostree::MutableTree::new();
    root.set_metadata_checksum(&root_meta);
    let mut tmpfiles: BTreeSet<String> = BTreeSet::new();
    let mut owners = Vec::new();
    // content checksum of each hardlink set, from the member that carries the data
    let mut linked: HashMap<(u32, u32), String> = HashMap::new();
    let mut pending_links: Vec<(String, (u32, u32))> = Vec::new();

    for it in &items {
        let placement = pathrules::place(it.path.as_bytes()).map_err(|r| bad(format!("payload path {r}")))?;
        let rootowned = it.user == "root" && it.group == "root";
        match placement {
            Placement::State(p) => match it.kind {
                rpm::FileType::Dir => {
                    tmpfiles.insert(pathrules::tmpfiles_dir(&p, it.mode, &it.user, &it.group));
                }
                rpm::FileType::SymbolicLink => {
                    tmpfiles.insert(pathrules::tmpfiles_symlink(&p, it.link.as_deref().unwrap_or("")));
                }
                rpm::FileType::Regular => {
                    // shipped read-only in /usr and copied into place at boot if missing
                    let stash = format!("usr/share/layerd/state{p}");
                    let data = it.content.as_deref().unwrap_or_default();
                    let c = repo
                        .write_regfile_inline(None, 0, 0, libc::S_IFREG | it.mode, None, data, Some(cancellable))
                        .with_context(|| format!("{nevra}: storing {}", it.path))?;
                    let (parent, name) = mtree::parent_of(&root, &stash, &root_meta)?;
                    parent.replace_file(name, &c).with_context(|| format!("{nevra}: placing {}", it.path))?;
                    tmpfiles.insert(format!("C {p} - - - - /{stash}"));
                    tmpfiles.insert(format!("z {p} {:04o} {} {} - -", it.mode & 0o7777, it.user, it.group));
                }
                _ => return Err(bad(format!("{:?} is a device node, FIFO or socket, which a package layer cannot carry", it.path))),
            },
            Placement::Tree { path, opt_dir } => {
                if let Some(d) = opt_dir {
                    tmpfiles.insert(pathrules::tmpfiles_symlink(&format!("/var/opt/{d}"), &format!("/usr/lib/opt/{d}")));
                }
                if !rootowned {
                    owners.push((path.clone(), it.user.clone(), it.group.clone()));
                }
                let mut xattrs = Vec::new();
                if let Some(c) = &it.caps {
                    match crate::caps::from_text(c) {
                        Ok(Some(v)) => xattrs.push((b"security.capability\0".to_vec(), v)),
                        Ok(None) => {}
                        Err(e) => return Err(bad(format!("{:?}: file capabilities: {e}", it.path))),
                    }
                }
                let placed = |csum: &str| -> Result<()> {
                    let (parent, name) = mtree::parent_of(&root, &path, &root_meta)?;
                    parent
                        .replace_file(name, csum)
                        .map_err(|e| bad(format!("{:?}: {e}", it.path)))
                };
                match it.kind {
                    rpm::FileType::Dir => {
                        let meta = mtree::write_dirmeta(repo, 0, 0, it.mode, &xattrs)?;
                        if path.is_empty() {
                            continue;
                        }
                        let (parent, name) = mtree::parent_of(&root, &path, &root_meta)?;
                        let d = parent.ensure_dir(name).map_err(|e| bad(format!("{:?}: {e}", it.path)))?;
                        d.set_metadata_checksum(&meta);
                    }
                    rpm::FileType::SymbolicLink => {
                        let target = it.link.as_deref().filter(|t| !t.is_empty()).ok_or_else(|| bad(format!("symlink {:?} has no target", it.path)))?;
                        let c = repo
                            .write_symlink(None, 0, 0, Some(&mtree::xattrs_variant(&xattrs)), target, Some(cancellable))
                            .with_context(|| format!("{nevra}: storing {}", it.path))?;
                        placed(&c)?;
                    }
                    rpm::FileType::Regular => match (&it.content, it.hardlink) {
                        (None, Some(id)) => pending_links.push((path.clone(), id)),
                        (content, id) => {
                            let data = content.as_deref().unwrap_or_default();
                            let c = repo
                                .write_regfile_inline(
                                    None,
                                    0,
                                    0,
                                    libc::S_IFREG | it.mode,
                                    Some(&mtree::xattrs_variant(&xattrs)),
                                    data,
                                    Some(cancellable),
                                )
                                .with_context(|| format!("{nevra}: storing {}", it.path))?;
                            if let Some(id) = id {
                                linked.insert(id, c.to_string());
                            }
                            placed(&c)?;
                        }
                    },
                    _ => return Err(bad(format!("{:?} is a device node, FIFO or socket, which a package layer cannot carry", it.path))),
                }
            }
        }
    }
    for (path, id) in pending_links {
        let c = linked
            .get(&id)
            .ok_or_else(|| bad(format!("hardlink {path:?} has no member carrying its content")))?;
        let (parent, name) = mtree::parent_of(&root, &path, &root_meta)?;
        parent.replace_file(name, c).map_err(|e| bad(format!("{path:?}: {e}")))?;
    }
    if !tmpfiles.is_empty() {
        let mut text = format!("# Machine state of the layered package {nevra} (written by layerd)\n");
        for l in &tmpfiles {
            text.push_str(l);
            text.push('\n');
        }
        let c = repo
            .write_regfile_inline(None, 0, 0, libc::S_IFREG | 0o644, None, text.as_bytes(), Some(cancellable))
            .context("storing the tmpfiles.d entries")?;
        let conf = format!("usr/lib/tmpfiles.d/layerd-{}.conf", rpm.name);
        let (parent, name) = mtree::parent_of(&root, &conf, &root_meta)?;
        parent.replace_file(name, &c).context("placing the tmpfiles.d entries")?;
    }

    let header_bytes = rpm.head.clone();
    let meta = vardict(&[
        ("layerd.pkg.format", FORMAT.to_variant()),
        ("layerd.pkg.name", rpm.name.to_variant()),
        ("layerd.pkg.nevra", nevra.to_variant()),
        ("layerd.pkg.sha256", rpm.sha256.to_variant()),
        ("layerd.pkg.header", header_bytes.to_variant()),
        ("layerd.pkg.owners", owners.to_variant()),
    ]);
    let commit = mtree::commit(repo, &root, None, &format!("layerd package cache: {nevra}"), &meta, cancellable)?;
    Ok(CachedPkg {
        name: rpm.name.clone(),
        nevra,
        sha256: rpm.sha256.clone(),
        commit,
        header: header_bytes,
        owners,
    })
}

/// Drop package cache refs no deployment's origin (and not `keep`) asks for; returns how many.
/// Their objects go with the next repository prune (`cleanup -b`, or libostree's own).
pub fn prune_unused(locked: &crate::sysroot::LockedSysroot, keep: Option<&[String]>) -> usize {
    let repo = locked.sysroot.repo();
    let mut used: HashSet<String> = HashSet::new();
    if let Err(e) = locked.sysroot.load(gio::Cancellable::NONE) {
        log::warn!("reloading the sysroot to prune the package cache: {e}");
        return 0;
    }
    for d in locked.sysroot.deployments() {
        if let Some(kf) = d.origin() {
            let o = crate::origin::Origin::from_keyfile(&kf);
            // replacements too: an inactive one applies again on a later base
            for e in o.requested_local.iter().chain(&o.override_replace_local) {
                used.insert(crate::origin::entry_sha(e).to_string());
            }
        }
        for e in crate::layering::commit_meta_strs(&repo, d.csum().as_str(), "layerd.layered") {
            used.insert(crate::origin::entry_sha(&e).to_string());
        }
    }
    for e in keep.unwrap_or_default() {
        used.insert(crate::origin::entry_sha(e).to_string());
    }
    let Ok(refs) = list(&repo) else { return 0 };
    let mut dropped = 0;
    for (r, commit) in refs {
        let Ok(p) = load(&repo, &commit) else { continue };
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
    fn refs_are_valid_and_unambiguous() {
        assert_eq!(escape("libstdc++"), "libstdc_2B_2B");
        assert_eq!(escape("a_b"), "a__b");
        assert_eq!(escape("x86_64"), "x86__64");
        assert_eq!(escape("1:2.0-1.el9"), "1_3A2.0-1.el9");
        assert_eq!(escape("x~y^z"), "x_7Ey_5Ez");
    }
}
