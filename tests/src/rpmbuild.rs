//! Building real RPMs for fixtures with the `rpm` crate (the same crate layerd reads RPMs with).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One payload entry.
#[derive(Clone, Debug)]
pub enum Entry {
    File { path: String, content: Vec<u8>, mode: u32 },
    Symlink { path: String, target: String },
    Dir { path: String, mode: u32 },
}

impl Entry {
    pub fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        Entry::File { path: path.into(), content: content.into(), mode }
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::Symlink { path: path.into(), target: target.into() }
    }
    pub fn dir(path: &str, mode: u32) -> Self {
        Entry::Dir { path: path.into(), mode }
    }
}

/// When a scriptlet runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    Pre,
    Post,
    PostTrans,
}

/// What to build.
#[derive(Clone, Debug)]
pub struct RpmSpec {
    pub name: String,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub entries: Vec<Entry>,
    pub provides: Vec<String>,
    pub requires: Vec<String>,
    /// Weak dependencies.
    pub recommends: Vec<String>,
    pub conflicts: Vec<String>,
    pub obsoletes: Vec<String>,
    pub epoch: u32,
    /// Scriptlets: when, body, interpreter (default `/bin/sh`; `<lua>` for Lua).
    pub scripts: Vec<(Script, String, Option<Vec<String>>)>,
    /// `(path, user, group)` of entries not owned by root.
    pub owners: Vec<(String, String, String)>,
    /// `(path, caps text)` file capabilities.
    pub caps: Vec<(String, String)>,
    /// `(transaction-wide?, prefix, body)`: `%filetriggerin` / `%transfiletriggerin`.
    pub file_triggers: Vec<(bool, String, String)>,
    /// `(path, set)`: regular files of one set are hardlinks of each other in the payload.
    pub hardlinks: Vec<(String, String)>,
    /// An ASCII-armoured secret key to sign the package with.
    pub signing_key: Option<Vec<u8>>,
}

impl RpmSpec {
    pub fn new(name: &str, version: &str) -> Self {
        RpmSpec {
            name: name.into(),
            version: version.into(),
            release: "1".into(),
            arch: "x86_64".into(),
            entries: Vec::new(),
            provides: Vec::new(),
            requires: Vec::new(),
            recommends: Vec::new(),
            conflicts: Vec::new(),
            obsoletes: Vec::new(),
            epoch: 0,
            scripts: Vec::new(),
            owners: Vec::new(),
            caps: Vec::new(),
            file_triggers: Vec::new(),
            hardlinks: Vec::new(),
            signing_key: None,
        }
    }
    /// Sign with this ASCII-armoured secret key.
    pub fn signed_with(mut self, secret: &[u8]) -> Self {
        self.signing_key = Some(secret.to_vec());
        self
    }
    /// Make `path` a member of hardlink set `set` (all members need the same content).
    pub fn hardlink(mut self, path: &str, set: &str) -> Self {
        self.hardlinks.push((path.into(), set.into()));
        self
    }
    /// A `%filetriggerin` (or with `trans`, `%transfiletriggerin`) on `prefix`.
    pub fn file_trigger(mut self, trans: bool, prefix: &str, body: &str) -> Self {
        self.file_triggers.push((trans, prefix.into(), body.into()));
        self
    }
    pub fn release(mut self, r: &str) -> Self {
        self.release = r.into();
        self
    }
    pub fn arch(mut self, a: &str) -> Self {
        self.arch = a.into();
        self
    }
    pub fn script(mut self, when: Script, body: &str) -> Self {
        self.scripts.push((when, body.into(), None));
        self
    }
    pub fn script_with(mut self, when: Script, body: &str, prog: &[&str]) -> Self {
        self.scripts.push((when, body.into(), Some(prog.iter().map(|s| s.to_string()).collect())));
        self
    }
    pub fn owner(mut self, path: &str, user: &str, group: &str) -> Self {
        self.owners.push((path.into(), user.into(), group.into()));
        self
    }
    pub fn caps(mut self, path: &str, caps: &str) -> Self {
        self.caps.push((path.into(), caps.into()));
        self
    }
    pub fn entry(mut self, e: Entry) -> Self {
        self.entries.push(e);
        self
    }
    pub fn provides(mut self, p: &str) -> Self {
        self.provides.push(p.into());
        self
    }
    /// A dependency: `name` or `name >= version`.
    pub fn requires(mut self, r: &str) -> Self {
        self.requires.push(r.into());
        self
    }
    pub fn recommends(mut self, r: &str) -> Self {
        self.recommends.push(r.into());
        self
    }
    pub fn conflicts(mut self, r: &str) -> Self {
        self.conflicts.push(r.into());
        self
    }
    pub fn obsoletes(mut self, r: &str) -> Self {
        self.obsoletes.push(r.into());
        self
    }
    pub fn epoch(mut self, e: u32) -> Self {
        self.epoch = e;
        self
    }

    /// `name-[epoch:]version-release.arch`.
    pub fn nevra(&self) -> String {
        let e = if self.epoch > 0 { format!("{}:", self.epoch) } else { String::new() };
        format!("{}-{e}{}-{}.{}", self.name, self.version, self.release, self.arch)
    }

    /// The file name [`RpmSpec::write`] gives it.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.{}.rpm", self.name, self.version, self.release, self.arch)
    }

    /// Build and write `<dir>/<nevra>.rpm`; returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let mut b = rpm::PackageBuilder::new(
            &self.name,
            &self.version,
            "MIT",
            &self.arch,
            &format!("layerd test fixture package {}", self.name),
        );
        if self.epoch > 0 {
            b.epoch(self.epoch);
        }
        b.release(self.release.clone())
            .using_config(rpm::BuildConfig::default().compression(rpm::CompressionType::Gzip));
        let owned = |path: &str, o: rpm::FileOptionsBuilder| -> Result<rpm::FileOptionsBuilder> {
            let mut o = o;
            if let Some((_, u, g)) = self.owners.iter().find(|(p, _, _)| p == path) {
                o = o.user(u.as_str()).group(g.as_str());
            }
            if let Some((_, c)) = self.caps.iter().find(|(p, _)| p == path) {
                o = o.caps(c.as_str())?;
            }
            if let Some((_, set)) = self.hardlinks.iter().find(|(p, _)| p == path) {
                o = o.hardlink(set.as_str());
            }
            Ok(o)
        };
        for e in &self.entries {
            match e {
                Entry::File { path, content, mode } => {
                    b.with_file_contents(
                        content.clone(),
                        owned(path, rpm::FileOptions::new(path.as_str()).permissions(*mode as u16))?,
                    )?;
                }
                Entry::Symlink { path, target } => {
                    b.with_symlink(rpm::FileOptions::symlink(path.as_str(), target.as_str()))?;
                }
                Entry::Dir { path, mode } => {
                    b.with_dir_entry(owned(path, rpm::FileOptions::dir(path.as_str()).permissions(*mode as u16))?)?;
                }
            }
        }
        for p in &self.provides {
            b.provides(dependency(p));
        }
        for c in &self.conflicts {
            b.conflicts(dependency(c));
        }
        for o in &self.obsoletes {
            b.obsoletes(dependency(o));
        }
        for (when, body, prog) in &self.scripts {
            let mut sc = rpm::Scriptlet::new(body.as_str());
            if let Some(p) = prog {
                sc = sc.prog(p.clone());
            }
            match when {
                Script::Pre => b.pre_install_script(sc),
                Script::Post => b.post_install_script(sc),
                Script::PostTrans => b.post_trans_script(sc),
            };
        }
        for (trans, prefix, body) in &self.file_triggers {
            if *trans {
                b.trans_file_trigger_in(prefix, None, rpm::Scriptlet::new(body.as_str()));
            } else {
                b.file_trigger_in(prefix, None, rpm::Scriptlet::new(body.as_str()));
            }
        }
        for r in &self.requires {
            b.requires(dependency(r));
        }
        for r in &self.recommends {
            b.recommends(dependency(r));
        }
        let pkg = match &self.signing_key {
            Some(k) => b
                .build_and_sign(rpm::signature::pgp::Signer::from_asc_bytes(k)?)
                .with_context(|| format!("building and signing {}", self.nevra()))?,
            None => b.build().with_context(|| format!("building {}", self.nevra()))?,
        };
        let out = dir.join(self.file_name());
        pkg.write_file(&out)
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(out)
    }
}

/// `name` or `name OP [epoch:]version[-release]` (OP one of `<`, `<=`, `=`, `>=`, `>`) as an
/// rpm dependency.
fn dependency(s: &str) -> rpm::Dependency {
    let parts: Vec<&str> = s.splitn(3, ' ').collect();
    match parts.as_slice() {
        [n, "<", v] => rpm::Dependency::less(*n, *v),
        [n, "<=", v] => rpm::Dependency::less_eq(*n, *v),
        [n, "=", v] => rpm::Dependency::eq(*n, *v),
        [n, ">=", v] => rpm::Dependency::greater_eq(*n, *v),
        [n, ">", v] => rpm::Dependency::greater(*n, *v),
        _ => rpm::Dependency::any(s),
    }
}
