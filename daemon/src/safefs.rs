//! Writing inside a tree without ever leaving it (groundwork for layering, issue 4).
//!
//! Every path that comes from a package or a request is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the tree's root directory fd:
//! the kernel refuses any resolution that would leave the tree, whether through `..`, an
//! absolute path or a symlink (relative ones pointing outside, and absolute ones, which under
//! `RESOLVE_BENEATH` always count as escaping). The final component is created with `O_EXCL |
//! O_NOFOLLOW`, so an existing symlink is never written through. Errors name the path.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

fn err(path: &str, what: &str, e: Errno) -> Error {
    let reason = match e {
        Errno::XDEV => "would leave the tree (through '..', an absolute path or a symlink)".to_string(),
        Errno::EXIST => "already exists".to_string(),
        Errno::LOOP => "is a symlink where a directory or new file was expected".to_string(),
        other => other.to_string(),
    };
    Error::InvalidArgument(format!("{what} {path:?}: {reason}"))
}

/// A directory tree being written: the root fd everything is resolved beneath.
pub struct Tree {
    root: OwnedFd,
}

/// Split `a/b/c` into (`a/b`, `c`); a single component has parent `.`.
fn split(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (if p.is_empty() { "." } else { p }, n),
        None => (".", rel),
    }
}

impl Tree {
    pub fn open(path: &Path) -> Result<Self> {
        let root = rfs::open(path, OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::PATH, Mode::empty())
            .map_err(|e| Error::Failed(format!("opening {}: {e}", path.display())))?;
        Ok(Tree { root })
    }

    /// Open a directory beneath the root.
    fn dir(&self, rel: &str) -> std::result::Result<OwnedFd, Errno> {
        rfs::openat2(self.root.as_fd(), rel, OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::PATH, Mode::empty(), RESOLVE)
    }

    /// `mkdir -p` beneath the root, each component checked; existing directories are fine.
    pub fn create_dir_all(&self, rel: &str, mode: u32) -> Result<()> {
        let mut done = String::new();
        for c in rel.split('/').filter(|c| !c.is_empty()) {
            let parent = if done.is_empty() { ".".to_string() } else { done.clone() };
            let pfd = self.dir(&parent).map_err(|e| err(rel, "creating directory", e))?;
            match rfs::mkdirat(&pfd, c, Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(err(rel, "creating directory", e)),
            }
            if !done.is_empty() {
                done.push('/');
            }
            done.push_str(c);
            // what exists there must be a directory reachable beneath the root
            self.dir(&done).map_err(|e| err(rel, "creating directory", e))?;
        }
        Ok(())
    }

    /// Create a new regular file (never through an existing file or symlink).
    pub fn write_new_file(&self, rel: &str, content: &[u8], mode: u32) -> Result<()> {
        let (parent, name) = split(rel);
        let pfd = self.dir(parent).map_err(|e| err(rel, "writing", e))?;
        let fd = rfs::openat(
            &pfd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| err(rel, "writing", e))?;
        let mut f = std::fs::File::from(fd);
        std::io::Write::write_all(&mut f, content).map_err(|e| Error::Failed(format!("writing {rel:?}: {e}")))?;
        // the umask may have narrowed the mode; packages say exactly what they want
        rfs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(|e| err(rel, "setting the mode of", e))?;
        Ok(())
    }

    /// Read a regular file beneath the root, never following a symlink on the way or at the end.
    pub fn read_file(&self, rel: &str) -> Result<Vec<u8>> {
        let fd = rfs::openat2(
            self.root.as_fd(),
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            RESOLVE | ResolveFlags::NO_SYMLINKS,
        )
        .map_err(|e| err(rel, "reading", e))?;
        let mut f = std::fs::File::from(fd);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut f, &mut out).map_err(|e| Error::Failed(format!("reading {rel:?}: {e}")))?;
        Ok(out)
    }

    /// Create a symlink (its target is stored, not followed).
    pub fn symlink(&self, rel: &str, target: &str) -> Result<()> {
        let (parent, name) = split(rel);
        let pfd = self.dir(parent).map_err(|e| err(rel, "creating symlink", e))?;
        rfs::symlinkat(target, &pfd, name).map_err(|e| err(rel, "creating symlink", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn tree() -> (tempfile::TempDir, tempfile::TempDir, Tree) {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib")).unwrap();
        symlink("usr/lib", d.path().join("lib")).unwrap();
        symlink(outside.path(), d.path().join("evil-abs")).unwrap();
        symlink("../../../../../../../../../..", d.path().join("evil-rel")).unwrap();
        symlink("/etc/shadow", d.path().join("usr/lib/shadow-link")).unwrap();
        let t = Tree::open(d.path()).unwrap();
        (outside, d, t)
    }

    #[test]
    fn writes_inside_following_relative_links_within_the_tree() {
        let (_o, d, t) = tree();
        t.create_dir_all("usr/share/doc/x", 0o755).unwrap();
        t.write_new_file("usr/share/doc/x/README", b"hi", 0o644).unwrap();
        t.write_new_file("lib/libx.so", b"elf", 0o755).unwrap();
        t.symlink("usr/lib/liby.so", "libx.so").unwrap();
        assert_eq!(std::fs::read(d.path().join("usr/lib/libx.so")).unwrap(), b"elf");
        let mode = std::fs::metadata(d.path().join("usr/lib/libx.so")).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o755);
    }

    #[test]
    fn refuses_every_way_out() {
        let (outside, _d, t) = tree();
        for (rel, want) in [
            ("evil-abs/pwned", "leave the tree"),
            ("evil-rel/tmp/pwned", "leave the tree"),
            ("../pwned", "leave the tree"),
            ("usr/../../pwned", "leave the tree"),
        ] {
            let e = t.write_new_file(rel, b"x", 0o644).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(rel), "{rel}: {e}");
            let e = t.create_dir_all(&format!("{rel}/d"), 0o755).unwrap_err().to_string();
            assert!(e.contains(want), "{rel}: {e}");
        }
        // an existing symlink is never written through
        let e = t.write_new_file("usr/lib/shadow-link", b"x", 0o644).unwrap_err().to_string();
        assert!(e.contains("already exists") || e.contains("symlink"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing written outside");
    }
}
