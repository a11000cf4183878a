//! An ostree sysroot in a directory, deployed from the fixture repo.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{command, run};
use crate::fixture::{FixtureRepo, OSNAME, REF, REMOTE};

/// Kernel arguments of the first deployment.
pub const KARGS: &[&str] = &["root=LABEL=root", "rw", "console=ttyS0"];
/// Where the fixture repo appears inside a booted virtual host; the sysroot's `fixture`
/// remote points here so `ostree pull`/upgrades work from inside.
pub const FIXTURE_REPO_IN_HOST: &str = "/run/host/fixture-repo";

pub struct Sysroot {
    pub path: PathBuf,
}

impl Sysroot {
    /// `ostree admin init-fs`, `os-init`, a `fixture` remote, pull [`REF`] from `fixture`, and
    /// deploy it (unbooted, so the deployment is written directly).
    pub fn create(path: &Path, fixture: &FixtureRepo) -> Result<Self> {
        fs::create_dir_all(path)?;
        let s = Sysroot { path: path.to_path_buf() };
        let sp = format!("--sysroot={}", path.display());
        run(command("ostree", ["admin", "init-fs"]).arg(path))?;
        run(command("ostree", ["admin", "os-init", &sp, OSNAME]))?;
        run(command(
            "ostree",
            [
                s.repo_arg().as_str(),
                "remote",
                "add",
                "--no-gpg-verify",
                REMOTE,
                &format!("file://{FIXTURE_REPO_IN_HOST}"),
            ],
        ))?;
        s.pull_from(fixture)?;
        let mut deploy = command("ostree", ["admin", "deploy", &sp, &format!("--os={OSNAME}")]);
        for k in KARGS {
            deploy.arg(format!("--karg={k}"));
        }
        run(deploy.arg(format!("{REMOTE}:{REF}")))?;
        // what systemd-tmpfiles would create on a first boot
        let var = s.stateroot_var();
        for d in ["tmp", "lib", "cache", "log"] {
            fs::create_dir_all(var.join(d))?;
        }
        fs::set_permissions(var.join("tmp"), fs::Permissions::from_mode(0o1777))?;
        Ok(s)
    }

    fn repo_arg(&self) -> String {
        format!("--repo={}", self.path.join("ostree/repo").display())
    }

    /// Copy the latest fixture commit into the sysroot repo as `fixture:REF` (what a pull from
    /// the remote does, but usable from outside the booted host).
    pub fn pull_from(&self, fixture: &FixtureRepo) -> Result<()> {
        run(command("ostree", [self.repo_arg().as_str(), "pull-local", &format!("--remote={REMOTE}")])
            .arg(&fixture.path)
            .arg(REF))?;
        Ok(())
    }

    /// The stateroot's `/var`.
    pub fn stateroot_var(&self) -> PathBuf {
        self.path.join("ostree/deploy").join(OSNAME).join("var")
    }

    /// The options line of the boot entry that boots next (highest `version`).
    pub fn default_boot_options(&self) -> Result<String> {
        let entries = self.path.join("boot/loader/entries");
        let mut best: Option<(u64, String)> = None;
        for e in fs::read_dir(&entries).with_context(|| format!("reading {}", entries.display()))? {
            let p = e?.path();
            if p.extension().and_then(|x| x.to_str()) != Some("conf") {
                continue;
            }
            let text = fs::read_to_string(&p)?;
            let field = |k: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
            };
            let version: u64 = field("version ").and_then(|v| v.parse().ok()).unwrap_or(0);
            let options = field("options ").ok_or_else(|| anyhow!("{} has no options", p.display()))?;
            if best.as_ref().map_or(true, |(v, _)| version > *v) {
                best = Some((version, options));
            }
        }
        best.map(|(_, o)| o)
            .ok_or_else(|| anyhow!("no boot entries in {}", entries.display()))
    }

    /// The deployment directory a boot entry's `ostree=` argument leads to.
    pub fn deployment_for_options(&self, options: &str) -> Result<PathBuf> {
        let ostree_arg = options
            .split_whitespace()
            .find_map(|a| a.strip_prefix("ostree="))
            .ok_or_else(|| anyhow!("no ostree= in boot options {options:?}"))?;
        let link = self.path.join(ostree_arg.trim_start_matches('/'));
        fs::canonicalize(&link).with_context(|| format!("resolving {}", link.display()))
    }

    /// Every deployment directory.
    pub fn deployment_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(osdirs) = fs::read_dir(self.path.join("ostree/deploy")) {
            for os in osdirs.flatten() {
                if let Ok(deps) = fs::read_dir(os.path().join("deploy")) {
                    for d in deps.flatten() {
                        if d.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                            out.push(d.path());
                        }
                    }
                }
            }
        }
        out
    }
}

/// Remove a directory tree holding sysroots: ostree marks deployment roots immutable, so clear
/// that flag first.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for sysroot_deploy in find_deploy_dirs(dir) {
        clear_immutable(&sysroot_deploy)?;
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn find_deploy_dirs(dir: &Path) -> Vec<PathBuf> {
    // deployment roots are .../ostree/deploy/<os>/deploy/<csum>.<serial>
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        if depth > 8 {
            continue;
        }
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            let parent_is_deploy = d.file_name().map_or(false, |n| n == "deploy")
                && d.parent().and_then(|x| x.parent()).and_then(|x| x.file_name()).map_or(false, |n| n == "deploy");
            if parent_is_deploy {
                out.push(p);
            } else {
                stack.push((p, depth + 1));
            }
        }
    }
    out
}

fn clear_immutable(path: &Path) -> Result<()> {
    const FS_IOC_GETFLAGS: libc::c_ulong = 0x8008_6601;
    const FS_IOC_SETFLAGS: libc::c_ulong = 0x4008_6602;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let f = fs::File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: the ioctls read/write one long through a valid pointer on an open fd.
    unsafe {
        if libc::ioctl(f.as_raw_fd(), FS_IOC_GETFLAGS, &mut flags) != 0 {
            return Ok(()); // filesystem without flags: nothing to clear
        }
        if flags & FS_IMMUTABLE_FL != 0 {
            flags &= !FS_IMMUTABLE_FL;
            if libc::ioctl(f.as_raw_fd(), FS_IOC_SETFLAGS, &flags) != 0 {
                bail!("clearing the immutable flag of {}: {}", path.display(), std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
