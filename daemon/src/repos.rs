//! Repository definitions: the `*.repo` files (dnf's INI format) of the deployment's
//! `/etc/yum.repos.d`, with `$basearch`, `$arch`, `$releasever` and `/etc/dnf/vars` expanded.
//!
//! Unknown keys are ignored (dnf has many that do not apply here); a malformed line fails with
//! the file name and line number, so an admin can fix it.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};

/// One `[id]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repo {
    pub id: String,
    pub name: String,
    /// Where it was defined (`/etc/yum.repos.d/x.repo`), for messages.
    pub file: String,
    pub baseurls: Vec<String>,
    pub mirrorlist: Option<String>,
    pub metalink: Option<String>,
    pub enabled: bool,
    pub gpgcheck: bool,
    pub repo_gpgcheck: bool,
    pub gpgkeys: Vec<String>,
    pub sslverify: bool,
    pub sslcacert: Option<String>,
    pub sslclientcert: Option<String>,
    pub sslclientkey: Option<String>,
    pub proxy: Option<String>,
    /// Seconds cached metadata stays fresh (dnf's default: 48 hours).
    pub metadata_expire: u64,
    /// Lower wins (dnf's default 99).
    pub priority: i32,
    pub cost: i32,
    pub exclude: Vec<String>,
    pub includepkgs: Vec<String>,
    pub skip_if_unavailable: bool,
}

/// Variables `$name` / `${name}` expand to.
pub type Vars = BTreeMap<String, String>;

/// The standard variables for a host of `arch` running `releasever`, plus `/etc/dnf/vars/*`
/// (one file per variable, its first line the value) under `etc_dir`.
pub fn vars(arch: &str, releasever: &str, etc_dir: &Path) -> Vars {
    let mut v = Vars::new();
    v.insert("arch".into(), arch.into());
    v.insert("basearch".into(), basearch(arch).into());
    v.insert("releasever".into(), releasever.into());
    for dir in ["dnf/vars", "yum/vars"] {
        if let Ok(rd) = std::fs::read_dir(etc_dir.join(dir)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(text) = std::fs::read_to_string(e.path()) {
                    v.insert(name, text.lines().next().unwrap_or("").trim().to_string());
                }
            }
        }
    }
    v
}

/// dnf's base architecture of a machine architecture.
pub fn basearch(arch: &str) -> &str {
    match arch {
        "i386" | "i486" | "i586" | "i686" => "i386",
        "armv7l" | "armv7hl" => "armhfp",
        "ppc64le" => "ppc64le",
        other => other,
    }
}

/// `VERSION_ID` from an os-release file's text (dnf's `$releasever` on Fedora/RHEL).
pub fn releasever(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("VERSION_ID=")?;
        Some(v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// Expand `$var` and `${var}`; unknown variables stay as written (as dnf does).
pub fn expand(s: &str, vars: &Vars) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        match vars.get(name) {
            Some(v) if !name.is_empty() => {
                out.push_str(v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn boolean(file: &str, line: usize, key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Ok(true),
        "0" | "no" | "false" | "off" => Ok(false),
        _ => Err(Error::InvalidArgument(format!("{file}:{line}: {key}={v} is not a boolean (1/0, yes/no, true/false)"))),
    }
}

/// dnf's duration syntax: seconds, or a number with `s`, `m`, `h`, `d`; `never`/`-1` for never.
fn duration(file: &str, line: usize, v: &str) -> Result<u64> {
    let v = v.trim();
    if v == "never" || v == "-1" {
        return Ok(u64::MAX);
    }
    let (num, mult) = match v.chars().last() {
        Some('s') => (&v[..v.len() - 1], 1),
        Some('m') => (&v[..v.len() - 1], 60),
        Some('h') => (&v[..v.len() - 1], 3600),
        Some('d') => (&v[..v.len() - 1], 86400),
        _ => (v, 1),
    };
    num.parse::<u64>()
        .map(|n| n.saturating_mul(mult))
        .map_err(|_| Error::InvalidArgument(format!("{file}:{line}: metadata_expire={v} is not a duration")))
}

/// A value list: comma and/or whitespace separated.
fn list(v: &str) -> Vec<String> {
    v.split([',', ' ', '\t']).filter(|x| !x.is_empty()).map(str::to_string).collect()
}

/// Parse one `.repo` file's text.
pub fn parse(file: &str, text: &str, vars: &Vars) -> Result<Vec<Repo>> {
    let mut repos: Vec<Repo> = Vec::new();
    let mut last_key: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim_end();
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        // continuation lines (indented) extend the previous list value, as dnf allows for baseurl
        if raw.starts_with([' ', '\t']) {
            match (repos.last_mut(), last_key.as_deref()) {
                (Some(r), Some("baseurl")) => {
                    r.baseurls.extend(list(&expand(t, vars)));
                    continue;
                }
                (Some(r), Some("gpgkey")) => {
                    r.gpgkeys.extend(list(&expand(t, vars)));
                    continue;
                }
                (Some(_), Some(_)) => continue,
                _ => {}
            }
        }
        if let Some(section) = t.strip_prefix('[') {
            let id = section
                .strip_suffix(']')
                .ok_or_else(|| Error::InvalidArgument(format!("{file}:{line}: section header {t:?} has no closing ']'")))?
                .trim();
            if id.is_empty() || id.contains(char::is_whitespace) || id.contains('/') {
                return Err(Error::InvalidArgument(format!("{file}:{line}: {id:?} is not a valid repository id")));
            }
            repos.push(Repo {
                id: id.to_string(),
                name: id.to_string(),
                file: file.to_string(),
                baseurls: vec![],
                mirrorlist: None,
                metalink: None,
                enabled: true,
                gpgcheck: false,
                repo_gpgcheck: false,
                gpgkeys: vec![],
                sslverify: true,
                sslcacert: None,
                sslclientcert: None,
                sslclientkey: None,
                proxy: None,
                metadata_expire: 48 * 3600,
                priority: 99,
                cost: 1000,
                exclude: vec![],
                includepkgs: vec![],
                skip_if_unavailable: false,
            });
            last_key = None;
            continue;
        }
        let Some((k, v)) = t.split_once('=') else {
            return Err(Error::InvalidArgument(format!("{file}:{line}: expected key=value, found {t:?}")));
        };
        let Some(r) = repos.last_mut() else {
            return Err(Error::InvalidArgument(format!("{file}:{line}: {k} appears before any [repository] section")));
        };
        let k = k.trim();
        let v = expand(v.trim(), vars);
        let opt = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match k {
            "name" => r.name = v,
            "baseurl" => r.baseurls = list(&v),
            "mirrorlist" => r.mirrorlist = opt(&v),
            "metalink" => r.metalink = opt(&v),
            "enabled" => r.enabled = boolean(file, line, k, &v)?,
            "gpgcheck" => r.gpgcheck = boolean(file, line, k, &v)?,
            "repo_gpgcheck" => r.repo_gpgcheck = boolean(file, line, k, &v)?,
            "gpgkey" => r.gpgkeys = list(&v),
            "sslverify" => r.sslverify = boolean(file, line, k, &v)?,
            "sslcacert" => r.sslcacert = opt(&v),
            "sslclientcert" => r.sslclientcert = opt(&v),
            "sslclientkey" => r.sslclientkey = opt(&v),
            "proxy" => r.proxy = opt(&v).filter(|p| p != "_none_"),
            "metadata_expire" => r.metadata_expire = duration(file, line, &v)?,
            "priority" => {
                r.priority = v.parse().map_err(|_| Error::InvalidArgument(format!("{file}:{line}: priority={v} is not a number")))?
            }
            "cost" => r.cost = v.parse().map_err(|_| Error::InvalidArgument(format!("{file}:{line}: cost={v} is not a number")))?,
            "exclude" | "excludepkgs" => r.exclude = list(&v),
            "includepkgs" => r.includepkgs = list(&v),
            "skip_if_unavailable" => r.skip_if_unavailable = boolean(file, line, k, &v)?,
            _ => {} // dnf knows many more; they do not change what layerd does
        }
        last_key = Some(k.to_string());
    }
    for r in &repos {
        if r.enabled && r.baseurls.is_empty() && r.mirrorlist.is_none() && r.metalink.is_none() {
            return Err(Error::InvalidArgument(format!(
                "{file}: repository [{}] has no baseurl, mirrorlist or metalink",
                r.id
            )));
        }
    }
    Ok(repos)
}

/// Every repository defined in `etc_dir/yum.repos.d/*.repo`, in file then section order.
/// A repository id defined twice is an error naming both files.
pub fn load(etc_dir: &Path, vars: &Vars) -> Result<Vec<Repo>> {
    let dir = etc_dir.join("yum.repos.d");
    let mut files: Vec<_> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "repo")).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Failed(format!("reading {}: {e}", dir.display()))),
    };
    files.sort();
    let mut out: Vec<Repo> = Vec::new();
    for f in files {
        let shown = format!("/etc/yum.repos.d/{}", f.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
        let text = std::fs::read_to_string(&f).map_err(|e| Error::Failed(format!("reading {shown}: {e}")))?;
        for r in parse(&shown, &text, vars)? {
            if let Some(prev) = out.iter().find(|p| p.id == r.id) {
                return Err(Error::InvalidArgument(format!(
                    "repository [{}] is defined in both {} and {}",
                    r.id, prev.file, r.file
                )));
            }
            out.push(r);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v() -> Vars {
        let mut v = Vars::new();
        v.insert("basearch".into(), "x86_64".into());
        v.insert("releasever".into(), "9".into());
        v.insert("stream".into(), "9-stream".into());
        v
    }

    #[test]
    fn parses_dnf_repo_files() {
        let text = "# comment\n[baseos]\nname=CentOS Stream $releasever - BaseOS\nbaseurl=http://mirror/$stream/BaseOS/$basearch/os/\n  http://other/${stream}/BaseOS/$basearch/os/\ngpgcheck=1\ngpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY\nmetadata_expire=6h\npriority=10\nexclude=kernel*, foo\nfastestmirror=1\n\n[off]\nenabled=0\nmetalink=https://x/metalink?repo=$basearch\n";
        let r = parse("/etc/yum.repos.d/c.repo", text, &v()).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "CentOS Stream 9 - BaseOS");
        assert_eq!(r[0].baseurls, ["http://mirror/9-stream/BaseOS/x86_64/os/", "http://other/9-stream/BaseOS/x86_64/os/"]);
        assert!(r[0].gpgcheck && r[0].enabled);
        assert_eq!(r[0].metadata_expire, 6 * 3600);
        assert_eq!(r[0].priority, 10);
        assert_eq!(r[0].exclude, ["kernel*", "foo"]);
        assert!(!r[1].enabled);
        assert_eq!(r[1].metalink.as_deref(), Some("https://x/metalink?repo=x86_64"));
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        for (text, want) in [
            ("[a]\nbaseurl=x\ngpgcheck=maybe\n", "/etc/yum.repos.d/x.repo:3: gpgcheck=maybe is not a boolean"),
            ("baseurl=x\n", "/etc/yum.repos.d/x.repo:1: baseurl appears before any [repository] section"),
            ("[a\n", "/etc/yum.repos.d/x.repo:1: section header"),
            ("[a]\njunk line\n", "/etc/yum.repos.d/x.repo:2: expected key=value"),
            ("[a]\nname=x\n", "repository [a] has no baseurl"),
            ("[a]\nbaseurl=x\nmetadata_expire=soon\n", "x.repo:3: metadata_expire=soon"),
        ] {
            let e = parse("/etc/yum.repos.d/x.repo", text, &v()).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn variables() {
        assert_eq!(expand("$basearch/${releasever}/$unknown/$", &v()), "x86_64/9/$unknown/$");
        assert_eq!(releasever("NAME=x\nVERSION_ID=\"39\"\n").as_deref(), Some("39"));
        assert_eq!(basearch("i686"), "i386");
    }
}
