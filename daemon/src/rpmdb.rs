//! The new deployment's rpmdb: the base's database plus the layered packages, written by the
//! host's `rpm` so the format is exactly what `rpm -qa` on the node reads.
//!
//! Only the database directory is checked out (copied, never hardlinked: sqlite writes in
//! place and must not touch repository objects); the layered packages are recorded with
//! `--justdb` from their cached headers (an RPM file without its payload), and the directory
//! replaces the base's in the new tree. The base's own rpmdb object is never modified.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::mtree::{self, Entry};
use crate::pkgcache::CachedPkg;
use crate::{gio, ostree};

/// Where an ostree base keeps its rpmdb (CoreOS: `usr/share/rpm`, with `usr/lib/sysimage/rpm`
/// a link to it), in order of preference.
const LOCATIONS: &[&str] = &["usr/share/rpm", "usr/lib/sysimage/rpm"];

const RPMSENSE_TRIGGERIN: u32 = 1 << 16;

/// A file trigger of a base package that fires when files under one of its prefixes arrive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTrigger {
    /// Name of the package defining it.
    pub pkg: String,
    /// `%transfiletriggerin` (once, after everything) rather than `%filetriggerin` (per package).
    pub trans: bool,
    pub prefixes: Vec<String>,
    /// Interpreter and arguments.
    pub prog: Vec<String>,
    pub body: String,
}

/// A scratch copy of a base's rpmdb.
pub struct Rpmdb {
    /// Root passed to `rpm --root`.
    root: PathBuf,
    /// Tree path of the database directory (`usr/share/rpm`).
    pub rel: String,
}

/// Check out the base's rpmdb into `scratch`.
pub fn checkout(repo: &ostree::Repo, base: &ostree::MutableTree, base_commit: &str, scratch: &Path, cancellable: &gio::Cancellable) -> Result<Rpmdb> {
    let mut rel = None;
    for l in LOCATIONS {
        if let Entry::Dir(_) = mtree::lookup(base, l)? {
            rel = Some(l.to_string());
            break;
        }
    }
    let rel = rel.ok_or_else(|| {
        Error::InvalidState(format!("the base commit {base_commit} has no rpmdb (looked in {})", LOCATIONS.join(", ")))
    })?;
    let root = scratch.join("rpmdb-root");
    let dest = root.join(&rel);
    std::fs::create_dir_all(dest.parent().unwrap_or(&root)).with_context(|| format!("creating {}", root.display()))?;
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::User,
        force_copy: true,
        subpath: Some(PathBuf::from(format!("/{rel}"))),
        ..Default::default()
    };
    repo.checkout_at(Some(&opts), libc::AT_FDCWD, &dest, base_commit, Some(cancellable))
        .context("checking out the base rpmdb")?;
    Ok(Rpmdb { root, rel })
}

impl Rpmdb {
    /// The root directory holding the database (for libsolv).
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn rpm(&self) -> Command {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(&self.root).arg("--dbpath").arg(format!("/{}", self.rel));
        c
    }

    /// `(name, nevra)` of every package in the database.
    pub fn packages(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .query("%{NAME}\t%{NEVRA}\n")?
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect())
    }

    /// The file triggers (`%filetriggerin`, `%transfiletriggerin`) the packages in the database
    /// define: they must run when layered packages bring matching files.
    pub fn file_triggers(&self) -> Result<Vec<FileTrigger>> {
        let mut out = Vec::new();
        for trans in [false, true] {
            let t = if trans { "TRANSFILETRIGGER" } else { "FILETRIGGER" };
            // scripts (one per trigger) and conditions (prefix → script index), read separately
            // since they are arrays of different lengths; fields and records are split by
            // ASCII unit/record separators, which scripts do not contain
            let scripts = self.query(&format!("%{{NAME}}\x1f[%{{{t}SCRIPTPROG}}\x1e%{{{t}SCRIPTS}}\x1d]\x1c"))?;
            let conds = self.query(&format!("%{{NAME}}\x1f[%{{{t}INDEX}}\x1e%{{{t}NAME}}\x1e%{{{t}FLAGS}}\x1d]\x1c"))?;
            let parse = |text: &str| -> Vec<(String, Vec<Vec<String>>)> {
                text.split('\x1c')
                    .filter_map(|rec| rec.split_once('\x1f'))
                    .map(|(name, rest)| {
                        let items = rest
                            .split('\x1d')
                            .filter(|i| !i.is_empty())
                            .map(|i| i.split('\x1e').map(str::to_string).collect())
                            .collect();
                        (name.to_string(), items)
                    })
                    .collect()
            };
            let scripts = parse(&scripts);
            let conds = parse(&conds);
            for ((pkg, scripts), (_, conds)) in scripts.iter().zip(conds.iter()) {
                for (i, s) in scripts.iter().enumerate() {
                    let [prog, body] = s.as_slice() else { continue };
                    let mut prefixes = Vec::new();
                    let mut flags = 0u32;
                    for c in conds {
                        if let [idx, name, f] = c.as_slice() {
                            if idx.parse::<usize>().ok() == Some(i) {
                                prefixes.push(name.clone());
                                flags |= f.parse::<u32>().unwrap_or(0);
                            }
                        }
                    }
                    // RPMSENSE_TRIGGERIN: only "in" triggers apply when packages are added
                    if flags & RPMSENSE_TRIGGERIN == 0 || prefixes.is_empty() {
                        continue;
                    }
                    out.push(FileTrigger {
                        pkg: pkg.clone(),
                        trans,
                        prefixes,
                        prog: prog.split_whitespace().map(str::to_string).collect(),
                        body: body.clone(),
                    });
                }
            }
        }
        Ok(out)
    }

    fn query(&self, qf: &str) -> Result<String> {
        let out = self.rpm().args(["-qa", "--qf", qf]).output().context("querying the base rpmdb")?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "querying the base rpmdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Files and directories (tree paths, as packages place them) that only the packages
    /// `nevras` own: what removing those packages takes out of the tree. Paths shared with a
    /// package that stays are kept. Directories come after the files in them.
    pub fn owned_only_by(&self, nevras: &[String]) -> Result<Vec<String>> {
        let text = self.query("%{NEVRA}\x1f[%{FILENAMES}\x1e%{FILEMODES}\x1d]\x1c")?;
        let mut gone: Vec<(String, bool)> = Vec::new();
        let mut kept = std::collections::HashSet::new();
        for rec in text.split('\x1c') {
            let Some((nevra, files)) = rec.split_once('\x1f') else { continue };
            let removed = nevras.iter().any(|n| n == nevra);
            for f in files.split('\x1d').filter(|f| !f.is_empty()) {
                let Some((path, mode)) = f.split_once('\x1e') else { continue };
                if removed {
                    let dir = mode.parse::<u32>().is_ok_and(|m| m & 0o170000 == 0o040000);
                    gone.push((path.to_string(), dir));
                } else {
                    kept.insert(path.to_string());
                }
            }
        }
        let mut out: Vec<String> = Vec::new();
        let mut dirs: Vec<String> = Vec::new();
        for (path, dir) in gone {
            if kept.contains(&path) {
                continue;
            }
            let Ok(crate::pathrules::Placement::Tree { path: rel, .. }) = crate::pathrules::place(path.as_bytes()) else { continue };
            if dir {
                dirs.push(rel);
            } else {
                out.push(rel);
            }
        }
        // deepest directories first
        dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        dirs.dedup();
        out.extend(dirs);
        Ok(out)
    }

    /// Drop `nevras` from the database (no files, no scripts).
    pub fn erase(&self, nevras: &[String]) -> Result<()> {
        if nevras.is_empty() {
            return Ok(());
        }
        let out = self
            .rpm()
            .args(["-e", "--justdb", "--nodeps", "--noscripts", "--notriggers"])
            .args(nevras)
            .output()
            .context("running rpm -e --justdb")?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "removing {} from the rpmdb failed: {}",
                nevras.join(", "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Record `pkgs` in the database (no files, no scripts: those are layerd's job).
    pub fn add(&self, pkgs: &[CachedPkg], scratch: &Path) -> Result<()> {
        if pkgs.is_empty() {
            return Ok(());
        }
        let dir = scratch.join("headers");
        std::fs::create_dir_all(&dir).context("creating the header directory")?;
        let mut files = Vec::new();
        for (i, p) in pkgs.iter().enumerate() {
            let f = dir.join(format!("{i}.rpm"));
            std::fs::write(&f, &p.header).with_context(|| format!("writing the header of {}", p.nevra))?;
            files.push(f);
        }
        // The files carry no payload: skip digest checks (each RPM was verified when imported).
        let out = self
            .rpm()
            .args(["-i", "--justdb", "--nodeps", "--noscripts", "--notriggers", "--ignorearch", "--ignoreos", "--ignoresize"])
            .args(["--nodigest", "--nosignature", "--replacefiles", "--replacepkgs"])
            .args(&files)
            .output()
            .context("running rpm --justdb")?;
        if !out.status.success() {
            return Err(Error::Failed(format!(
                "recording the layered packages in the rpmdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(())
    }

    /// Replace the database directory in `tree` with this copy.
    pub fn store(&self, repo: &ostree::Repo, tree: &ostree::MutableTree, cancellable: &gio::Cancellable) -> Result<()> {
        let parts = mtree::components(&self.rel);
        let Some((name, dirs)) = parts.split_last() else {
            return Err(Error::Failed("empty rpmdb path".into()));
        };
        let Entry::Dir(parent) = mtree::lookup(tree, &dirs.join("/"))? else {
            return Err(Error::Failed(format!("{} is not a directory in the new tree", dirs.join("/"))));
        };
        parent.remove(name, true).context("replacing the rpmdb directory")?;
        let sub = parent.ensure_dir(name).context("replacing the rpmdb directory")?;
        let dir = gio::File::for_path(self.root.join(&self.rel));
        repo.write_directory_to_mtree(&dir, &sub, None, Some(cancellable))
            .context("storing the new rpmdb")?;
        Ok(())
    }
}
