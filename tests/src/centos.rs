//! Real dependency data: CentOS Stream 9 BaseOS + AppStream rpm-md metadata (in
//! `../shared/data/centos-stream-9/`, no payloads) turned into test packages.
//!
//! Each chosen metadata entry becomes a small RPM with the entry's real name, EVR, arch,
//! Provides, Requires, Conflicts and Obsoletes; its payload is a stub of our own (a shell
//! script at the package's first binary path, else a marker file). File requires (`/bin/sh`,
//! `/usr/bin/perl`) are kept satisfiable by adding the entry's own listed files that anything
//! requires as explicit provides. Rich (boolean) dependencies and `rpmlib(...)` requires are
//! left out: the `rpm` crate cannot express the former and writes the latter itself.

use std::collections::{BTreeMap, HashSet};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use quick_xml::events::Event;

use crate::rpmbuild::{Entry, RpmSpec};

/// Where the data lives (next to the project, as `../shared/data/centos-stream-9`).
pub fn data_dir() -> Result<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/centos-stream-9");
    if !d.join("baseos/repodata/repomd.xml").exists() {
        return Err(anyhow!("CentOS Stream 9 metadata not found at {}", d.display()));
    }
    Ok(d.canonicalize()?)
}

/// One dependency as rpm-md writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// `EQ`, `LT`, `LE`, `GT`, `GE`, or none.
    pub flags: Option<String>,
    pub evr: Option<String>,
}

impl Dep {
    /// `name`, or `name OP [epoch:]ver[-rel]` as [`RpmSpec`] takes it.
    pub fn spec(&self) -> String {
        match (&self.flags, &self.evr) {
            (Some(f), Some(evr)) => {
                let op = match f.as_str() {
                    "EQ" => "=",
                    "LT" => "<",
                    "LE" => "<=",
                    "GT" => ">",
                    _ => ">=",
                };
                format!("{} {op} {evr}", self.name)
            }
            _ => self.name.clone(),
        }
    }

    fn usable(&self) -> bool {
        !self.name.starts_with('(') && !self.name.starts_with("rpmlib(")
    }
}

/// One package entry of a primary.xml.
#[derive(Clone, Debug, Default)]
pub struct Meta {
    pub name: String,
    pub arch: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub provides: Vec<Dep>,
    pub requires: Vec<Dep>,
    pub conflicts: Vec<Dep>,
    pub obsoletes: Vec<Dep>,
    pub recommends: Vec<Dep>,
    /// The files primary.xml lists (binaries, /etc): what file requires can name.
    pub files: Vec<String>,
}

impl Meta {
    pub fn evr(&self) -> String {
        if self.epoch > 0 {
            format!("{}:{}-{}", self.epoch, self.version, self.release)
        } else {
            format!("{}-{}", self.version, self.release)
        }
    }

    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr(), self.arch)
    }

    /// A stub RPM with this entry's identity and dependencies. `file_requires` are the paths
    /// something requires: those among the entry's files become explicit provides. With
    /// `binary`, the payload is a shell script at the package's first binary path (so a test
    /// can run it); else a marker file that clashes with nothing.
    pub fn stub(&self, file_requires: &HashSet<String>, binary: bool) -> RpmSpec {
        let mut s = RpmSpec::new(&self.name, &self.version).release(&self.release).arch(&self.arch).epoch(self.epoch);
        let bin = self.files.iter().find(|f| f.starts_with("/usr/bin/") || f.starts_with("/usr/sbin/")).filter(|_| binary);
        s = match bin {
            Some(b) => s.entry(Entry::file(b, format!("#!/bin/sh\necho '{} (CentOS Stream 9 stub)'\n", self.name), 0o755)),
            None => s.entry(Entry::file(&format!("/usr/share/centos-stubs/{}", self.name), self.nevra(), 0o644)),
        };
        for f in &self.files {
            if file_requires.contains(f) && Some(f) != bin {
                s = s.provides(f);
            }
        }
        for d in self.provides.iter().filter(|d| d.usable()) {
            s = s.provides(&d.spec());
        }
        for d in self.requires.iter().filter(|d| d.usable()) {
            s = s.requires(&d.spec());
        }
        for d in self.recommends.iter().filter(|d| d.usable()) {
            s = s.recommends(&d.spec());
        }
        for d in self.conflicts.iter().filter(|d| d.usable()) {
            s = s.conflicts(&d.spec());
        }
        for d in self.obsoletes.iter().filter(|d| d.usable()) {
            s = s.obsoletes(&d.spec());
        }
        s
    }
}

/// Parse a (gzip-compressed) primary.xml.
pub fn load_primary(path: &Path) -> Result<Vec<Meta>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut r = quick_xml::Reader::from_reader(BufReader::new(flate2::read::GzDecoder::new(f)));
    r.config_mut().trim_text(true);
    let mut out = Vec::new();
    let mut cur: Option<Meta> = None;
    let mut section = String::new();
    let mut text_for = String::new();
    let mut buf = Vec::new();
    loop {
        let ev = r.read_event_into(&mut buf).with_context(|| format!("parsing {}", path.display()))?;
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let attr = |k: &str| -> Option<String> {
                    e.attributes().flatten().find(|a| a.key.as_ref() == k.as_bytes()).map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match name.as_str() {
                    "package" => cur = Some(Meta::default()),
                    "version" => {
                        if let Some(m) = cur.as_mut() {
                            m.epoch = attr("epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
                            m.version = attr("ver").unwrap_or_default();
                            m.release = attr("rel").unwrap_or_default();
                        }
                    }
                    "rpm:provides" | "rpm:requires" | "rpm:conflicts" | "rpm:obsoletes" | "rpm:recommends" => section = name,
                    "rpm:entry" => {
                        if let Some(m) = cur.as_mut() {
                            let evr = attr("ver").map(|v| {
                                let epoch = attr("epoch").filter(|e| e != "0").map(|e| format!("{e}:")).unwrap_or_default();
                                match attr("rel") {
                                    Some(rel) => format!("{epoch}{v}-{rel}"),
                                    None => format!("{epoch}{v}"),
                                }
                            });
                            let d = Dep { name: attr("name").unwrap_or_default(), flags: attr("flags"), evr };
                            match section.as_str() {
                                "rpm:provides" => m.provides.push(d),
                                "rpm:requires" => {
                                    if !m.requires.contains(&d) {
                                        m.requires.push(d)
                                    }
                                }
                                "rpm:conflicts" => m.conflicts.push(d),
                                "rpm:obsoletes" => m.obsoletes.push(d),
                                "rpm:recommends" => m.recommends.push(d),
                                _ => {}
                            }
                        }
                    }
                    "name" | "arch" | "file" => text_for = name,
                    _ => text_for.clear(),
                }
            }
            Event::Text(t) => {
                if let Some(m) = cur.as_mut() {
                    let v = t.decode().map(|c| c.into_owned()).unwrap_or_default();
                    match text_for.as_str() {
                        "name" => m.name = v,
                        "arch" => m.arch = v,
                        "file" => m.files.push(v),
                        _ => {}
                    }
                }
            }
            Event::End(e) => {
                text_for.clear();
                match e.name().as_ref() {
                    b"package" => out.extend(cur.take()),
                    b"rpm:provides" | b"rpm:requires" | b"rpm:conflicts" | b"rpm:obsoletes" | b"rpm:recommends" => section.clear(),
                    _ => {}
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// The primary.xml of a data repository (`baseos` or `appstream`).
pub fn primary_path(repo: &str) -> Result<PathBuf> {
    let dir = data_dir()?.join(repo).join("repodata");
    std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("primary.xml.gz"))
        .ok_or_else(|| anyhow!("no primary.xml.gz in {}", dir.display()))
}

/// BaseOS and AppStream entries, by NEVRA, and every file path anything requires.
pub struct Data {
    pub by_nevra: BTreeMap<String, Meta>,
    pub file_requires: HashSet<String>,
}

pub fn load() -> Result<Data> {
    let mut by_nevra = BTreeMap::new();
    let mut file_requires = HashSet::new();
    for repo in ["baseos", "appstream"] {
        for m in load_primary(&primary_path(repo)?)? {
            for r in &m.requires {
                if r.name.starts_with('/') {
                    file_requires.insert(r.name.clone());
                }
            }
            by_nevra.insert(m.nevra(), m);
        }
    }
    Ok(Data { by_nevra, file_requires })
}

/// A CoreOS-like set of BaseOS packages (what an FCOS/RHCOS node has), before dependencies.
pub const COREOS_LIKE: &[&str] = &[
    "bash", "coreutils", "glibc", "systemd", "openssl-libs", "util-linux", "iproute", "procps-ng", "shadow-utils",
    "kmod", "curl", "rpm", "sudo", "NetworkManager", "e2fsprogs", "xfsprogs", "openssh-server", "chrony", "less",
    "findutils", "gzip", "tar", "hostname",
];

/// The CoreOS-like base: [`COREOS_LIKE`] closed under dependencies over BaseOS (no weak
/// dependencies), solved by libsolv; returns the entries.
pub fn coreos_like_base(data: &Data) -> Result<Vec<Meta>> {
    let baseos = data_dir()?.join("baseos/repodata");
    let filelists = std::fs::read_dir(&baseos)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("filelists.xml.gz"));
    let mut pool = layerd::solve::Pool::new("x86_64")?;
    pool.add_rpmmd("baseos", &primary_path("baseos")?, filelists.as_deref(), None, 99)?;
    let names: Vec<String> = COREOS_LIKE.iter().map(|s| s.to_string()).collect();
    let picks = pool
        .solve(&names, layerd::solve::SolveOptions { weak_deps: false, ..Default::default() })?
        .map_err(|e| anyhow!("solving the CoreOS-like base: {e}"))?;
    picks
        .iter()
        .map(|p| data.by_nevra.get(&p.nevra()).cloned().ok_or_else(|| anyhow!("{} not in the metadata", p.nevra())))
        .collect()
}

/// The data, parsed once per process.
pub fn data() -> Result<&'static Data> {
    static DATA: std::sync::OnceLock<Data> = std::sync::OnceLock::new();
    if let Some(d) = DATA.get() {
        return Ok(d);
    }
    let d = load()?;
    Ok(DATA.get_or_init(|| d))
}
