//! Reading and checking a local RPM before anything is built from it (groundwork for
//! `layerctl install ./x.rpm`, issue 4).
//!
//! The client hands the daemon an open file descriptor (so it works from `oc debug` + `chroot`
//! and any working directory); the file is read once, its sha256 computed on the way (it pins
//! the package in the origin as `<sha256>:<nevra>`), and it must be a real binary RPM whose
//! header and payload digests match, for an architecture this host runs. Errors name the file.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A checked local RPM.
pub struct LocalRpm {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
    /// Hex sha256 of the whole file.
    pub sha256: String,
    /// The lead, signature header and header bytes (the file without its payload): enough for
    /// rpm to record the package in an rpmdb, kept in the package cache.
    pub head: Vec<u8>,
    pub package: rpm::Package,
}

impl std::fmt::Debug for LocalRpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalRpm({} sha256:{})", self.nevra(), self.sha256)
    }
}

impl LocalRpm {
    /// `name-[epoch:]version-release.arch`, as rpm prints it.
    pub fn nevra(&self) -> String {
        nevra(&self.name, self.epoch, &self.version, &self.release, &self.arch)
    }
}

/// `name-[epoch:]version-release.arch`, the epoch shown only when set.
fn nevra(name: &str, epoch: u32, version: &str, release: &str, arch: &str) -> String {
    let epoch = if epoch > 0 { format!("{epoch}:") } else { String::new() };
    format!("{name}-{epoch}{version}-{release}.{arch}")
}

/// Architectures a host of `host_arch` runs packages of.
pub fn compatible_arches(host_arch: &str) -> Vec<&str> {
    let mut v = vec![host_arch, "noarch"];
    if host_arch == "x86_64" {
        v.push("i686");
    }
    v
}

/// Larger than any RPM a distribution ships (firmware packages are a few hundred MB); a
/// descriptor that yields more is not an RPM file (a pipe or device fed to us by mistake).
pub const MAX_RPM_BYTES: u64 = 2 << 30;

/// Read and check an RPM. `label` names it in errors (the file name the client gave).
pub fn read(label: &str, input: impl Read, host_arch: &str) -> Result<LocalRpm> {
    let mut bytes = Vec::new();
    input
        .take(MAX_RPM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::InvalidArgument(format!("{label}: cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_RPM_BYTES {
        return Err(Error::InvalidArgument(format!("{label}: larger than {} GiB, not an RPM file", MAX_RPM_BYTES >> 30)));
    }
    let sha256 = format!("{:x}", Sha256::digest(&bytes));
    let bad = |what: String| Error::InvalidArgument(format!("{label}: {what}"));
    let package = rpm::Package::parse(&mut bytes.as_slice())
        .map_err(|e| bad(format!("not a valid RPM (bad lead, header or truncated): {e}")))?;
    if package.metadata.is_source_package() {
        return Err(bad("is a source RPM; only binary packages can be layered".into()));
    }
    package
        .verify_digests()
        .map_err(|e| bad(format!("digest check failed (corrupt or truncated): {e}")))?;
    let m = &package.metadata;
    let field = |r: std::result::Result<&str, rpm::Error>, what: &str| {
        r.map(str::to_string).map_err(|e| bad(format!("header has no {what}: {e}")))
    };
    let name = field(m.get_name(), "name")?;
    let version = field(m.get_version(), "version")?;
    let release = field(m.get_release(), "release")?;
    let arch = field(m.get_arch(), "architecture")?;
    let epoch = m.get_epoch().unwrap_or(0);
    if !compatible_arches(host_arch).contains(&arch.as_str()) {
        return Err(bad(format!("is built for {arch}, this host runs {}", compatible_arches(host_arch).join(", "))));
    }
    // refused at once, naming the script: the sandbox runs shell scriptlets only (the other
    // interpreters are checked against the new tree when the scriptlets are collected)
    let nevra = nevra(&name, epoch, &version, &release, &arch);
    for (what, s) in [("pre", m.get_pre_install_script()), ("post", m.get_post_install_script()), ("posttrans", m.get_post_trans_script())] {
        if s.is_ok_and(|s| s.program.as_ref().and_then(|p| p.first()).is_some_and(|p| p == "<lua>")) {
            return Err(bad(format!("{nevra}: %{what} is a Lua scriptlet; layerd runs only shell scriptlets (sh, bash) in its sandbox")));
        }
    }
    let head_len = bytes.len().saturating_sub(package.payload.len());
    let head = bytes[..head_len].to_vec();
    Ok(LocalRpm { name, epoch, version, release, arch, sha256, head, package })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(arch: &str) -> Vec<u8> {
        let pkg = rpm::PackageBuilder::new("htop", "3.2.1", "GPL-2.0", arch, "test")
            .release("1.el8")
            .with_file_contents(vec![7u8; 4096], rpm::FileOptions::new("/usr/bin/htop").permissions(0o755))
            .unwrap()
            .build()
            .unwrap();
        let mut out = Vec::new();
        pkg.write(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_a_good_rpm() {
        let bytes = build("x86_64");
        let r = read("./htop.rpm", bytes.as_slice(), "x86_64").unwrap();
        assert_eq!(r.nevra(), "htop-3.2.1-1.el8.x86_64");
        assert_eq!(r.sha256, format!("{:x}", Sha256::digest(&bytes)));
    }

    #[test]
    fn refuses_truncated_corrupt_foreign_and_non_rpms() {
        let bytes = build("x86_64");
        let e = read("./t.rpm", &bytes[..bytes.len() / 2], "x86_64").unwrap_err().to_string();
        assert!(e.starts_with("./t.rpm: "), "{e}");
        let mut corrupt = bytes.clone();
        let n = corrupt.len();
        corrupt[n - 10] ^= 0xff; // inside the compressed payload
        let e = read("./c.rpm", corrupt.as_slice(), "x86_64").unwrap_err().to_string();
        assert!(e.contains("./c.rpm") && (e.contains("digest") || e.contains("not a valid RPM")), "{e}");
        let e = read("./a.rpm", build("aarch64").as_slice(), "x86_64").unwrap_err().to_string();
        assert!(e.contains("built for aarch64"), "{e}");
        assert!(read("./n.rpm", build("noarch").as_slice(), "x86_64").is_ok());
        let e = read("./x.rpm", &b"#!/bin/sh\necho not an rpm\n"[..], "x86_64").unwrap_err().to_string();
        assert!(e.contains("not a valid RPM"), "{e}");
    }
}
