//! Small helpers for building ostree trees in memory (`OstreeMutableTree`).
//!
//! Layering never checks the base out to disk to change it: a base commit is opened as a lazily
//! loaded mutable tree, package trees are grafted into it and only the directories touched are
//! ever read or rewritten, so the cost follows the size of what is layered, not of the base.

use std::io::Read;

use crate::error::{Context, Error, Result};
use crate::gio::prelude::*;
use crate::{gio, glib, ostree};

/// What a path names inside a mutable tree.
pub enum Entry {
    Missing,
    /// A non-directory (regular file or symlink) and its content checksum.
    File(String),
    Dir(ostree::MutableTree),
}

/// Components of a relative path (`usr/bin/x` → `["usr", "bin", "x"]`).
pub fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// Look one name up in a directory: `(file checksum, subdirectory)`, both `None` when absent
/// (libostree reports absence as a NOT_FOUND error).
pub fn child(dir: &ostree::MutableTree, name: &str) -> Result<(Option<String>, Option<ostree::MutableTree>)> {
    match dir.lookup(name) {
        Ok((f, d)) => Ok((f.map(|f| f.to_string()), d)),
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => Ok((None, None)),
        Err(e) => Err(e).with_context(|| format!("reading {name:?} in the tree")),
    }
}

/// Look a relative path up without creating anything.
pub fn lookup(root: &ostree::MutableTree, path: &str) -> Result<Entry> {
    let parts = components(path);
    let mut cur = root.clone();
    for (i, name) in parts.iter().enumerate() {
        let (file, dir) = child(&cur, name)?;
        match (file, dir) {
            (_, Some(d)) if i + 1 == parts.len() => return Ok(Entry::Dir(d)),
            (_, Some(d)) => cur = d,
            (Some(f), None) if i + 1 == parts.len() => return Ok(Entry::File(f)),
            _ => return Ok(Entry::Missing),
        }
    }
    Ok(Entry::Dir(cur))
}

/// The parent directory of `path` (created with `dirmeta` where missing) and the final name.
pub fn parent_of<'a>(root: &ostree::MutableTree, path: &'a str, dirmeta: &str) -> Result<(ostree::MutableTree, &'a str)> {
    let parts = components(path);
    let Some((name, dirs)) = parts.split_last() else {
        return Err(Error::InvalidArgument("empty path".into()));
    };
    // libostree creates the parents of the last component of the path it is given
    let parent = if dirs.is_empty() {
        root.clone()
    } else {
        root.ensure_parent_dirs(&parts, dirmeta)
            .with_context(|| format!("placing /{path}: a file or symlink is in the way of its directories"))?
    };
    Ok((parent, name))
}

/// ostree's xattr list type `a(ayay)`; names are NUL-terminated byte strings.
pub fn xattrs_variant(list: &[(Vec<u8>, Vec<u8>)]) -> glib::Variant {
    use glib::prelude::*;
    list.to_vec().to_variant()
}

/// Write a directory metadata object; returns its checksum.
pub fn write_dirmeta(repo: &ostree::Repo, uid: u32, gid: u32, mode: u32, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<String> {
    let info = gio::FileInfo::new();
    info.set_attribute_uint32("unix::uid", uid);
    info.set_attribute_uint32("unix::gid", gid);
    info.set_attribute_uint32("unix::mode", (mode & 0o7777) | libc::S_IFDIR);
    info.set_file_type(gio::FileType::Directory);
    let v = ostree::create_directory_metadata(&info, Some(&xattrs_variant(xattrs)));
    let c = repo
        .write_metadata(ostree::ObjectType::DirMeta, None, &v, gio::Cancellable::NONE)
        .context("writing directory metadata")?;
    Ok(c.to_hex())
}

/// The content of a regular file object.
pub fn read_content(repo: &ostree::Repo, checksum: &str) -> Result<Vec<u8>> {
    let (stream, _info, _x) = repo
        .load_file(checksum, gio::Cancellable::NONE)
        .with_context(|| format!("reading object {checksum}"))?;
    let Some(stream) = stream else {
        return Err(Error::Failed(format!("object {checksum} is not a regular file")));
    };
    let mut out = Vec::new();
    stream
        .into_read()
        .read_to_end(&mut out)
        .with_context(|| format!("reading object {checksum}"))?;
    Ok(out)
}

/// Write an in-memory tree and commit it; returns the commit checksum. Must run inside a repo
/// transaction.
pub fn commit(
    repo: &ostree::Repo,
    root: &ostree::MutableTree,
    parent: Option<&str>,
    subject: &str,
    metadata: &glib::Variant,
    cancellable: &gio::Cancellable,
) -> Result<String> {
    let file = repo.write_mtree(root, Some(cancellable)).context("writing the new tree")?;
    let root_file = file
        .downcast::<ostree::RepoFile>()
        .map_err(|_| Error::Failed("libostree returned a tree that is not a RepoFile".into()))?;
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let c = repo
        .write_commit_with_time(parent, Some(subject), None, Some(metadata), &root_file, time, Some(cancellable))
        .context("writing the commit")?;
    Ok(c.to_string())
}

/// Build an `a{sv}` from key/value pairs.
pub fn vardict(entries: &[(&str, glib::Variant)]) -> glib::Variant {
    let d = glib::VariantDict::new(None);
    for (k, v) in entries {
        d.insert_value(k, v);
    }
    d.end()
}
