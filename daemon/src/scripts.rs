//! Running the layered packages' scriptlets (`%pre`, `%post`, `%posttrans`) on the new tree.
//!
//! Scriptlets are the one place package code runs, so they run boxed in:
//! - the tree is a hardlink checkout of the assembled commit; scripts see it through an
//!   overlayfs (mounted in a private mount namespace of the child, gone when it exits), so a
//!   write to a file shared with the repository by a hardlink is copied up, never done in place,
//!   and exactly what the scripts changed is left in the upper directory;
//! - bubblewrap gives them the tree as `/` (with `/etc` = `usr/etc`), no network, a new pid,
//!   ipc and uts namespace, an empty `/var`, `/tmp` and `/run` (host state is unreachable), and
//!   only the capabilities package scripts need to create users and fix file modes;
//! - only shell scriptlets run (Lua and other interpreters are refused by name), their output
//!   goes to the journal as `layerd(<pkg>.<script>)` and its last lines into the error, and a
//!   cancel kills the script's whole process group.
//!
//! The changes under `usr/` in the upper directory are then written into the new tree; anything
//! else (a script writing to `/var` or `/run`) is machine state and is dropped, as on rpm-ostree.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{Context, Error, Result};
use crate::mtree::{self, Entry};
use crate::pkgcache::CachedPkg;
use crate::txn::Transaction;
use crate::{gio, ostree};

/// Lines of script output kept for the error message.
const TAIL_LINES: usize = 12;
/// Shells a scriptlet may name as its interpreter.
const SHELLS: &[&str] = &["sh", "bash", "dash"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pre,
    Post,
    PostTrans,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Pre => "pre",
            Phase::Post => "post",
            Phase::PostTrans => "posttrans",
        }
    }

    /// `$1` as rpm passes it on a fresh install.
    fn arg(self) -> &'static str {
        match self {
            Phase::Pre | Phase::Post => "1",
            Phase::PostTrans => "0",
        }
    }
}

/// One scriptlet to run.
#[derive(Clone, Debug)]
pub struct Script {
    /// Who it belongs to, in messages (a NEVRA, or "the base package X" for a trigger).
    pub owner: String,
    /// Package name, for the journal tag.
    pub pkg: String,
    /// `pre`, `post`, `posttrans`, `filetriggerin`, `transfiletriggerin`.
    pub what: &'static str,
    pub body: String,
    /// Interpreter and its arguments (`/bin/sh` when the package names none).
    pub prog: Vec<String>,
    /// `$1`, `$2`, as rpm passes them.
    pub args: Vec<String>,
    /// Fed to the script on stdin (file triggers get the matching paths).
    pub stdin: Option<String>,
}

impl Script {
    fn tag(&self) -> String {
        format!("layerd({}.{})", self.pkg, self.what)
    }
}

/// Check an interpreter the way every scriptlet is checked: a shell the new tree has.
fn check_prog(label: &str, prog: &[String], tree: &ostree::MutableTree) -> Result<()> {
    let Some(first) = prog.first() else {
        return Err(Error::InvalidArgument(format!("{label} names no interpreter")));
    };
    if first == "<lua>" {
        return Err(Error::InvalidArgument(format!(
            "{label} is a Lua scriptlet; layerd runs only shell scriptlets (sh, bash) in its sandbox"
        )));
    }
    let base = first.rsplit('/').next().unwrap_or("");
    if !SHELLS.contains(&base) {
        return Err(Error::InvalidArgument(format!(
            "{label} uses the interpreter {first}; layerd runs only shell scriptlets (sh, bash)"
        )));
    }
    if !runnable(tree, first)? {
        return Err(Error::InvalidArgument(format!("{label} needs {first}, which the new tree does not have")));
    }
    Ok(())
}

/// Payload paths of a package (what file triggers match against).
fn paths(p: &CachedPkg, m: &rpm::PackageMetadata) -> Result<Vec<String>> {
    let entries = m.get_file_entries().map_err(|e| Error::Failed(format!("{}: file list unreadable: {e}", p.nevra)))?;
    Ok(entries
        .iter()
        .filter(|e| !e.flags().contains(rpm::FileFlags::GHOST))
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect())
}

/// The base's file triggers that the layered packages set off, as scripts: each
/// `%filetriggerin` once per package bringing matching files (after the `%post`s), each
/// `%transfiletriggerin` once for all of them (after the `%posttrans`es); the matching paths
/// go to the script's stdin, as rpm does.
fn trigger_scripts(
    files: &[Vec<String>],
    triggers: &[crate::rpmdb::FileTrigger],
    tree: &ostree::MutableTree,
    trans: bool,
) -> Result<Vec<Script>> {
    let mut out = Vec::new();
    for t in triggers.iter().filter(|t| t.trans == trans) {
        let what = if trans { "transfiletriggerin" } else { "filetriggerin" };
        let matching = |f: &Vec<String>| -> Vec<String> {
            f.iter().filter(|p| t.prefixes.iter().any(|pre| p.starts_with(pre.as_str()))).cloned().collect()
        };
        let groups: Vec<Vec<String>> = if trans {
            vec![files.iter().flat_map(matching).collect()]
        } else {
            files.iter().map(matching).collect()
        };
        for g in groups.into_iter().filter(|g| !g.is_empty()) {
            let label = format!("the base package {}: %{what}", t.pkg);
            check_prog(&label, &t.prog, tree)?;
            out.push(Script {
                owner: format!("the base package {}", t.pkg),
                pkg: t.pkg.clone(),
                what,
                body: t.body.clone(),
                prog: t.prog.clone(),
                args: vec!["1".into()],
                stdin: Some(g.iter().map(|p| format!("{p}\n")).collect()),
            });
        }
    }
    Ok(out)
}

/// The scriptlets of `pkgs` and the base's file triggers they set off, in run order: every
/// `%pre`, every `%post`, the `%filetriggerin`s, every `%posttrans`, the
/// `%transfiletriggerin`s. Refuses interpreters the sandbox will not run, naming package and
/// script, before anything runs.
pub fn collect(pkgs: &[CachedPkg], tree: &ostree::MutableTree, triggers: &[crate::rpmdb::FileTrigger]) -> Result<Vec<Script>> {
    let mut out = Vec::new();
    // each header parsed once; file lists only when the base has file triggers
    let metas: Vec<rpm::PackageMetadata> = pkgs.iter().map(CachedPkg::metadata).collect::<Result<_>>()?;
    let files: Vec<Vec<String>> = if triggers.is_empty() {
        Vec::new()
    } else {
        pkgs.iter().zip(&metas).map(|(p, m)| paths(p, m)).collect::<Result<_>>()?
    };
    for phase in [Phase::Pre, Phase::Post, Phase::PostTrans] {
        for (p, m) in pkgs.iter().zip(&metas) {
            let s = match phase {
                Phase::Pre => m.get_pre_install_script(),
                Phase::Post => m.get_post_install_script(),
                Phase::PostTrans => m.get_post_trans_script(),
            };
            let Ok(s) = s else { continue };
            let prog = s.program.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| vec!["/bin/sh".into()]);
            if s.script.trim().is_empty() && prog.len() == 1 && prog[0] != "<lua>" {
                continue;
            }
            check_prog(&format!("{}: %{}", p.nevra, phase.name()), &prog, tree)?;
            out.push(Script {
                owner: p.nevra.clone(),
                pkg: p.name.clone(),
                what: phase.name(),
                body: s.script.clone(),
                prog,
                args: vec![phase.arg().into()],
                stdin: None,
            });
        }
        match phase {
            Phase::Post => out.extend(trigger_scripts(&files, triggers, tree, false)?),
            Phase::PostTrans => out.extend(trigger_scripts(&files, triggers, tree, true)?),
            Phase::Pre => {}
        }
    }
    Ok(out)
}

/// Whether `path` (absolute, in the running system's view) exists in the tree: `/bin/x` is
/// `usr/bin/x` on an ostree system.
fn runnable(tree: &ostree::MutableTree, path: &str) -> Result<bool> {
    let Ok(placement) = crate::pathrules::place(path.as_bytes()) else { return Ok(false) };
    let crate::pathrules::Placement::Tree { path, .. } = placement else { return Ok(false) };
    Ok(matches!(mtree::lookup(tree, &path)?, Entry::File(_)))
}

/// Run `scripts` against `tree` (which has been committed as `commit`), then write what they
/// changed back into `tree`. `scratch` is an empty directory on the repository's filesystem.
pub fn run(
    txn: &Transaction,
    repo: &ostree::Repo,
    tree: &ostree::MutableTree,
    commit: &str,
    scripts: &[Script],
    scratch: &Path,
) -> Result<()> {
    if scripts.is_empty() {
        return Ok(());
    }
    let lower = scratch.join("lower");
    let upper = scratch.join("upper");
    let work = scratch.join("work");
    let merged = scratch.join("merged");
    let bodies = scratch.join("scripts");
    for d in [&upper, &work, &merged, &bodies] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    txn.task("Preparing the tree for scriptlets", || -> Result<()> {
        let opts = ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            no_copy_fallback: false,
            ..Default::default()
        };
        repo.checkout_at(Some(&opts), libc::AT_FDCWD, &lower, commit, Some(txn.cancellable()))
            .context("checking out the tree for scriptlets")
    })?;
    for (i, s) in scripts.iter().enumerate() {
        txn.check_cancelled()?;
        let file = bodies.join(format!("{i}"));
        std::fs::write(&file, &s.body).with_context(|| format!("writing {}", file.display()))?;
        txn.message(format!("Running %{} of {}", s.what, s.owner));
        run_one(txn, s, &lower, &upper, &work, &merged, &file)?;
    }
    txn.task("Collecting scriptlet changes", || apply_upper(repo, tree, &upper, txn.cancellable()))
}

/// The bubblewrap command line for one scriptlet (the overlay is mounted at `merged`).
fn bwrap_args(s: &Script, merged: &Path, script: &Path) -> Vec<std::ffi::OsString> {
    let mut a: Vec<std::ffi::OsString> = Vec::new();
    let mut push = |x: &str| a.push(x.into());
    for x in ["--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"] {
        push(x);
    }
    push("--bind");
    a.push(merged.as_os_str().into());
    a.push("/".into());
    a.push("--bind".into());
    a.push(merged.join("usr/etc").into_os_string());
    a.push("/etc".into());
    for x in ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var", "--tmpfs", "/run"] {
        a.push(x.into());
    }
    a.push("--ro-bind".into());
    a.push(script.as_os_str().into());
    a.push("/run/layerd-scriptlet".into());
    a.push("--cap-drop".into());
    a.push("ALL".into());
    for cap in ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID", "CAP_SETGID"] {
        a.push("--cap-add".into());
        a.push(cap.into());
    }
    a.push("--chdir".into());
    a.push("/".into());
    a.push("--".into());
    for p in &s.prog {
        a.push(p.into());
    }
    a.push("/run/layerd-scriptlet".into());
    for x in &s.args {
        a.push(x.into());
    }
    a
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::Failed(format!("{} has a NUL byte", p.display())))
}

fn run_one(txn: &Transaction, s: &Script, lower: &Path, upper: &Path, work: &Path, merged: &Path, script: &Path) -> Result<()> {
    let tag = s.tag();
    for p in [lower, upper, work] {
        if p.as_os_str().as_bytes().iter().any(|b| matches!(b, b',' | b':')) {
            return Err(Error::Failed(format!("scratch path {} cannot be an overlay layer", p.display())));
        }
    }
    let data = CString::new(format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    ))
    .map_err(|_| Error::Failed("overlay options have a NUL byte".into()))?;
    let target = cstr(merged)?;
    let root = CString::new("/").unwrap_or_default();
    let overlay = CString::new("overlay").unwrap_or_default();
    let (reader, writer) = std::io::pipe().context("creating the scriptlet output pipe")?;
    let mut cmd = Command::new("bwrap");
    cmd.args(bwrap_args(s, merged, script))
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .env("RPM_INSTALL_PREFIX", "/usr")
        .stdin(if s.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(writer.try_clone().context("duplicating the output pipe")?)
        .stderr(writer)
        .process_group(0);
    // SAFETY: only async-signal-safe system calls on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(overlay.as_ptr(), target.as_ptr(), overlay.as_ptr(), 0, data.as_ptr().cast()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::Failed(format!("{tag}: starting the sandbox (bwrap with an overlay) failed: {e}")))?;
    drop(cmd); // closes our copies of the pipe's write end
    if let (Some(data), Some(mut input)) = (s.stdin.clone(), child.stdin.take()) {
        // a script that does not read its input must not block us
        std::thread::spawn(move || {
            let _ = std::io::Write::write_all(&mut input, data.as_bytes());
        });
    }
    let tag2 = tag.clone();
    let reader_thread = std::thread::spawn(move || {
        let mut tail = VecDeque::new();
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if !journal_line(&tag2, &line) {
                log::info!(target: "layerd-scriptlet", "{tag2}: {line}");
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail
    });
    let status = loop {
        if let Some(st) = child.try_wait().context("waiting for the scriptlet")? {
            break st;
        }
        if txn.is_cancelled() {
            let pgid = child.id() as i32;
            // SAFETY: plain kill(2) on the process group we created.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
            let _ = child.wait();
            let _ = reader_thread.join();
            log::info!("{tag}: killed (transaction cancelled)");
            return Err(Error::Cancelled);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let tail = reader_thread.join().unwrap_or_default();
    for l in &tail {
        txn.message(format!("{tag}: {l}"));
    }
    if !status.success() {
        let mut msg = format!("{}: %{} scriptlet failed ({status})", s.owner, s.what);
        if tail.is_empty() {
            msg.push_str(" with no output");
        } else {
            msg.push_str("; last output:");
            for l in &tail {
                msg.push_str("\n  ");
                msg.push_str(l);
            }
        }
        return Err(Error::Failed(msg));
    }
    Ok(())
}

/// journald's native socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Send one line of scriptlet output to the journal with `SYSLOG_IDENTIFIER=<tag>`, so
/// `journalctl -t 'layerd(htop.post)'` finds it. Returns false when there is no journal (the
/// caller logs it the ordinary way instead).
fn journal_line(tag: &str, line: &str) -> bool {
    if !Path::new(JOURNAL_SOCKET).exists() {
        return false;
    }
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return false };
    // the simple form of journald's native protocol: KEY=value lines, values without newlines
    let clean = |s: &str| s.replace('\n', " ");
    let msg = format!("MESSAGE={}\nSYSLOG_IDENTIFIER={}\nPRIORITY=6\n", clean(line), clean(tag));
    sock.send_to(msg.as_bytes(), JOURNAL_SOCKET).is_ok()
}

/// Overlayfs marks deleted entries as 0/0 character devices.
fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> bool {
    let mut buf = [0u8; 4];
    matches!(rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut buf), Ok(1) if buf[0] == b'y')
}

fn file_caps(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut buf = [0u8; 64];
    match rustix::fs::lgetxattr(p, "security.capability", &mut buf[..]) {
        Ok(n) => vec![(b"security.capability\0".to_vec(), buf[..n].to_vec())],
        Err(_) => Vec::new(),
    }
}

/// Write the scripts' changes under `upper/usr` into `tree`.
fn apply_upper(repo: &ostree::Repo, tree: &ostree::MutableTree, upper: &Path, cancellable: &gio::Cancellable) -> Result<()> {
    let usr = upper.join("usr");
    if !usr.is_dir() {
        return Ok(());
    }
    let dst = tree.ensure_dir("usr").context("opening usr in the new tree")?;
    apply_dir(repo, &dst, &usr, "usr", cancellable)
}

fn apply_dir(repo: &ostree::Repo, dst: &ostree::MutableTree, dir: &Path, rel: &str, cancellable: &gio::Cancellable) -> Result<()> {
    let safe = crate::safefs::Tree::open(dir)?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    names.sort();
    for p in names {
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            return Err(Error::Failed(format!("a scriptlet created a file with a non-UTF-8 name in /{rel}")));
        };
        let path = format!("{rel}/{name}");
        let m = std::fs::symlink_metadata(&p).with_context(|| format!("reading /{path}"))?;
        let ft = m.file_type();
        if is_whiteout(&m) {
            dst.remove(&name, true).with_context(|| format!("removing /{path}"))?;
            continue;
        }
        let xattrs = file_caps(&p);
        if ft.is_dir() {
            let meta = mtree::write_dirmeta(repo, m.uid(), m.gid(), m.mode(), &[])?;
            let (_, have_dir) = mtree::child(dst, &name)?;
            if is_opaque(&p) || have_dir.is_none() {
                dst.remove(&name, true).with_context(|| format!("replacing /{path}"))?;
            }
            let sub = dst.ensure_dir(&name).with_context(|| format!("creating /{path}"))?;
            sub.set_metadata_checksum(&meta);
            apply_dir(repo, &sub, &p, &path, cancellable)?;
            continue;
        }
        let csum = if ft.is_file() {
            let data = safe.read_file(&name)?;
            repo.write_regfile_inline(None, m.uid(), m.gid(), m.mode(), Some(&mtree::xattrs_variant(&xattrs)), &data, Some(cancellable))
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&p).with_context(|| format!("reading /{path}"))?;
            repo.write_symlink(None, m.uid(), m.gid(), None, &target.to_string_lossy(), Some(cancellable))
        } else {
            return Err(Error::InvalidArgument(format!(
                "a scriptlet created /{path}, a device node, FIFO or socket, which an ostree tree cannot hold"
            )));
        }
        .with_context(|| format!("storing /{path}"))?;
        let (_, have_dir) = mtree::child(dst, &name)?;
        if have_dir.is_some() {
            dst.remove(&name, false).with_context(|| format!("replacing /{path}"))?;
        }
        dst.replace_file(&name, &csum).with_context(|| format!("storing /{path}"))?;
    }
    Ok(())
}
