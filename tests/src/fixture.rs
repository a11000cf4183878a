//! The fixture OS: a small, real, bootable-by-ostree root filesystem built from RPMs.
//!
//! Its userland is a static busybox (so `/usr/bin/sh` works for scriptlets), it has a kernel
//! and initramfs under `usr/lib/modules/<kver>/`, `usr/etc`, an `os-release` carrying VERSION
//! and OSTREE_VERSION, and an rpmdb written by the host's `rpm --root` at `usr/share/rpm` with
//! `usr/lib/sysimage/rpm` pointing at it, as on Fedora CoreOS. Each version is committed to an
//! ostree repo with `version` in the commit metadata.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::cmd::{command, run};
use crate::rpmbuild::{Entry, RpmSpec};

/// The stateroot (osname) of fixture deployments.
pub const OSNAME: &str = "fixture";
/// The remote name fixture sysroots use for the fixture repo.
pub const REMOTE: &str = "fixture";
/// The branch fixture OS versions are committed to.
pub const REF: &str = "fixture/x86_64/coreos/stable";
/// The fixture kernel version.
pub const KVER: &str = "6.5.6-300.fc39.x86_64";
/// The fixture's `dracut`: `dracut [--no-hostonly] --kver KVER [--force] OUTPUT` writes an
/// initramfs naming the kernel version (enough to see which kernel it was made for).
const DRACUT: &str = r#"#!/bin/sh
kver=; out=
while [ $# -gt 0 ]; do
  case "$1" in
    --kver) kver=$2; shift ;;
    --add|--omit|--add-drivers) shift ;;
    --*) ;;
    *) out=$1 ;;
  esac
  shift
done
[ -n "$kver" ] && [ -n "$out" ] || { echo "dracut: need --kver and an output file" >&2; exit 1; }
[ -f "/usr/lib/modules/$kver/vmlinuz" ] || { echo "dracut: no kernel $kver" >&2; exit 1; }
echo "fixture initramfs $kver (dracut)" > "$out"
"#;

/// Busybox applets linked into `/usr/bin`.
const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "mkdir", "rm", "cp", "mv", "ln", "chmod", "chown", "sed", "grep",
    "id", "true", "false", "test", "env", "touch", "stat", "sleep", "head", "tail", "wc", "find",
    "readlink", "uname", "printf",
];

/// What one fixture OS version contains.
#[derive(Clone, Debug)]
pub struct OsSpec {
    /// `version` commit metadata and os-release VERSION.
    pub version: String,
    /// Extra unowned files under `/usr/share/fixture/bulk` (for realistic base sizes).
    pub bulk_files: usize,
    /// Size of each bulk file (0: a short line of text); larger files get incompressible
    /// content, for transfer benchmarks.
    pub bulk_file_bytes: usize,
    /// Add a CoreOS-like package set from real CentOS Stream 9 metadata (stub payloads, real
    /// names, versions and dependencies; see [`crate::centos`]), so solving runs against real
    /// dependency data.
    pub centos_base: bool,
    /// Packages of the fixture this version leaves out (a base that drops a package).
    pub without: Vec<String>,
}

impl OsSpec {
    pub fn new(version: &str) -> Self {
        OsSpec { version: version.into(), bulk_files: 0, bulk_file_bytes: 0, centos_base: false, without: Vec::new() }
    }

    /// This version without the package `name`.
    pub fn without(mut self, name: &str) -> Self {
        self.without.push(name.into());
        self
    }

    /// The fixture OS with the CoreOS-like CentOS Stream 9 package set.
    pub fn centos(version: &str) -> Self {
        OsSpec { centos_base: true, ..OsSpec::new(version) }
    }
}

/// An archive-mode ostree repo holding fixture OS commits on [`REF`].
pub struct FixtureRepo {
    pub path: PathBuf,
    work: PathBuf,
}

impl FixtureRepo {
    /// Create an empty repo at `<dir>/repo`, with `<dir>/work` for building trees.
    pub fn create(dir: &Path) -> Result<Self> {
        let path = dir.join("repo");
        let work = dir.join("work");
        fs::create_dir_all(&path)?;
        fs::create_dir_all(&work)?;
        run(command("ostree", ["init", "--mode=archive"]).arg(format!("--repo={}", path.display())))?;
        Ok(FixtureRepo { path, work })
    }

    /// Build the OS described by `spec` and commit it on [`REF`]; returns the commit checksum.
    pub fn commit(&self, spec: &OsSpec) -> Result<String> {
        self.commit_to(spec, REF)
    }

    /// Build the OS described by `spec` and commit it on `branch`; returns the commit checksum.
    pub fn commit_to(&self, spec: &OsSpec, branch: &str) -> Result<String> {
        let tree = self.build_tree(spec)?;
        let out = run(command(
            "ostree",
            [
                format!("--repo={}", self.path.display()),
                "commit".into(),
                format!("--branch={branch}"),
                format!("--tree=dir={}", tree.display()),
                "--bootable".into(),
                format!("--add-metadata-string=version={}", spec.version),
                format!("--subject=Fixture OS {}", spec.version),
            ],
        ))?;
        fs::remove_dir_all(&tree).ok();
        Ok(out.trim().to_string())
    }

    /// The packages of an OS version.
    pub fn packages(spec: &OsSpec) -> Result<Vec<RpmSpec>> {
        let mut pkgs = Self::own_packages(spec)?;
        pkgs.retain(|p| !spec.without.contains(&p.name));
        if spec.centos_base {
            let data = crate::centos::data()?;
            for m in crate::centos::coreos_like_base(data)? {
                let stub = m.stub(&data.file_requires, false);
                match pkgs.iter_mut().find(|p| p.name == m.name) {
                    // the fixture's own payload (users, libc directory) with CentOS's identity
                    Some(own) => *own = RpmSpec { entries: own.entries.clone(), ..stub },
                    None => pkgs.push(stub),
                }
            }
        }
        Ok(pkgs)
    }

    /// The fixture's own packages (busybox userland, kernel, os-release, users).
    fn own_packages(spec: &OsSpec) -> Result<Vec<RpmSpec>> {
        let busybox = fs::read(find_busybox()?).context("reading the host's static busybox")?;
        let mut bb = RpmSpec::new("busybox", "1.35.0")
            .entry(Entry::file("/usr/bin/busybox", busybox, 0o755))
            .provides("/bin/sh");
        for a in APPLETS {
            bb = bb.entry(Entry::symlink(&format!("/usr/bin/{a}"), "busybox"));
        }
        let os_release = format!(
            "NAME=\"Fixture CoreOS\"\nID=fixture\nID_LIKE=fedora\nVERSION=\"{v}\"\nVERSION_ID={v}\nOSTREE_VERSION='{v}'\nPRETTY_NAME=\"Fixture CoreOS {v}\"\n",
            v = spec.version
        );
        Ok(vec![
            RpmSpec::new("setup", "2.14.4")
                .entry(Entry::file(
                    "/etc/passwd",
                    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:Kernel Overflow User:/:/sbin/nologin\n",
                    0o644,
                ))
                .entry(Entry::file("/etc/group", "root:x:0:\nwheel:x:10:\nnobody:x:65534:\n", 0o644))
                .entry(Entry::file("/etc/shadow", "root:!::0:99999:7:::\n", 0o000))
                .entry(Entry::file("/etc/hostname", "fixture\n", 0o644)),
            bb,
            // file triggers like the base's ldconfig one: layered packages must set them off
            RpmSpec::new("glibc", "2.38")
                .entry(Entry::dir("/usr/lib64", 0o755))
                .file_trigger(true, "/usr/lib64", "{ echo '# fixture ld.so.cache'; cat; } > /etc/ld.so.cache")
                .file_trigger(false, "/usr/share/fixture-hooks", "echo \"run $1\" >> /usr/lib/fixture-hooks.log; cat >> /usr/lib/fixture-hooks.log")
                .provides("libc.so.6()(64bit)"),
            // the kernel split as Fedora/CentOS split it, so overrides (kernel → kernel-rt)
            // meet real dependencies: modules need their kernel, `kernel` needs both
            RpmSpec::new("kernel-core", "6.5.6")
                .entry(Entry::file(&format!("/usr/lib/modules/{KVER}/vmlinuz"), format!("fixture kernel {KVER}\n"), 0o755))
                .provides(&format!("kernel-uname-r = {KVER}")),
            RpmSpec::new("kernel-modules", "6.5.6")
                .entry(Entry::file(&format!("/usr/lib/modules/{KVER}/modules.dep"), "", 0o644))
                .requires(&format!("kernel-uname-r = {KVER}")),
            RpmSpec::new("kernel", "6.5.6").requires("kernel-core").requires("kernel-modules"),
            // the tree's initramfs generator, as CoreOS has dracut: a stand-in that writes an
            // initramfs naming the kernel it was made for
            RpmSpec::new("dracut", "059").entry(Entry::file("/usr/bin/dracut", DRACUT, 0o755)),
            RpmSpec::new("fixture-release", &spec.version)
                .entry(Entry::file("/usr/lib/os-release", os_release, 0o644))
                .entry(Entry::symlink("/etc/os-release", "../usr/lib/os-release")),
        ])
    }

    /// Build the root filesystem for `spec` the way a compose does: install the RPMs with the
    /// host's rpm into an empty root, then give it the ostree layout (`/etc` → `/usr/etc`,
    /// top-level symlinks into `/usr` and `/var`).
    fn build_tree(&self, spec: &OsSpec) -> Result<PathBuf> {
        let tree = self.work.join(format!("tree-{}", spec.version));
        let rpms = self.work.join(format!("rpms-{}", spec.version));
        for d in [&tree, &rpms] {
            if d.exists() {
                fs::remove_dir_all(d)?;
            }
            fs::create_dir_all(d)?;
        }
        let mut files = Vec::new();
        for p in Self::packages(spec)? {
            files.push(p.write(&rpms)?);
        }
        let root = tree.display().to_string();
        run(command("rpm", ["--root", &root, "--dbpath", "/usr/share/rpm", "--initdb"]))?;
        run(command(
            "rpm",
            ["--root", &root, "--dbpath", "/usr/share/rpm", "-i", "--nodeps", "--noscripts", "--notriggers", "--ignorearch", "--ignoreos"],
        )
        .args(&files))
        .context("installing fixture RPMs with the host's rpm")?;
        fs::remove_dir_all(&rpms).ok();

        // ostree layout
        fs::rename(tree.join("etc"), tree.join("usr/etc")).context("moving /etc to /usr/etc")?;
        for d in ["boot", "dev", "proc", "run", "sys", "sysroot", "tmp", "var", "usr/sbin", "usr/lib64"] {
            fs::create_dir_all(tree.join(d))?;
        }
        fs::set_permissions(tree.join("tmp"), fs::Permissions::from_mode(0o1777))?;
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("ostree", "sysroot/ostree"),
            ("home", "var/home"),
            ("root", "var/roothome"),
            ("opt", "var/opt"),
            ("srv", "var/srv"),
            ("mnt", "var/mnt"),
            ("media", "run/media"),
        ] {
            symlink(target, tree.join(link))?;
        }
        fs::create_dir_all(tree.join("usr/lib/sysimage"))?;
        symlink("../../share/rpm", tree.join("usr/lib/sysimage/rpm"))?;
        fs::write(
            tree.join(format!("usr/lib/modules/{KVER}/initramfs.img")),
            format!("fixture initramfs {KVER}\n"),
        )?;
        if spec.bulk_files > 0 {
            let bulk = tree.join("usr/share/fixture/bulk");
            for i in 0..spec.bulk_files {
                let d = bulk.join(format!("{:03}", i / 1000));
                if i % 1000 == 0 {
                    fs::create_dir_all(&d)?;
                }
                if spec.bulk_file_bytes > 0 {
                    fs::write(d.join(format!("f{i}")), noise(i as u64, spec.bulk_file_bytes))?;
                } else {
                    fs::write(d.join(format!("f{i}")), format!("bulk file {i} of {}\n", spec.version))?;
                }
            }
        }
        Ok(tree)
    }
}

/// `len` bytes that do not compress (xorshift), the same for the same `seed`.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The host's static busybox (Debian's busybox-static, Fedora's busybox).
fn find_busybox() -> Result<PathBuf> {
    for p in ["/usr/bin/busybox", "/bin/busybox", "/usr/sbin/busybox", "/sbin/busybox"] {
        let p = PathBuf::from(p);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(anyhow!("no busybox on this machine (install busybox-static)"))
}
