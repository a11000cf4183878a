//! Repository metadata (rpm-md): `repodata/repomd.xml`, then the `primary` (and, for file
//! requests, `filelists`) it names, every file checked against the checksum repomd.xml gives,
//! cached under `/var/cache/layerd/repomd/<repo>/` until `metadata_expire` passes.
//!
//! Hostile metadata is bounded: repomd.xml may not exceed 16 MiB and the files it names must
//! have the size and checksum it says; XML is parsed without entity expansion (quick-xml for
//! repomd.xml; libsolv's parser for the rest).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use quick_xml::events::Event;

use crate::error::{Error, Result};
use crate::fetch::{Checksum, Fetcher};
use crate::repos::Repo;

const MAX_REPOMD: u64 = 16 << 20;
const MAX_METADATA: u64 = 2 << 30;

/// One `<data>` entry of repomd.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: String,
    pub location: String,
    pub checksum: Checksum,
    pub size: Option<u64>,
}

/// The parts of repomd.xml layerd uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoMd {
    pub revision: Option<String>,
    pub entries: Vec<Entry>,
}

impl RepoMd {
    pub fn get(&self, kind: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.kind == kind)
    }
}

/// Parse repomd.xml.
pub fn parse(xml: &[u8]) -> std::result::Result<RepoMd, String> {
    let mut r = quick_xml::Reader::from_reader(xml);
    r.config_mut().trim_text(true);
    let mut md = RepoMd::default();
    let mut cur: Option<(String, Option<String>, Option<Checksum>, Option<u64>)> = None;
    let mut text_for: Option<String> = None;
    let mut sum_kind = String::new();
    let mut buf = Vec::new();
    loop {
        match r.read_event_into(&mut buf).map_err(|e| format!("at byte {}: {e}", r.buffer_position()))? {
            Event::DocType(_) => return Err("has a DOCTYPE (entity declarations are not accepted)".into()),
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let attr = |k: &str| -> Option<String> {
                    e.attributes().flatten().find(|a| a.key.local_name().as_ref() == k.as_bytes()).map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match name.as_str() {
                    "data" => cur = Some((attr("type").unwrap_or_default(), None, None, None)),
                    "location" => {
                        if let Some(c) = cur.as_mut() {
                            c.1 = attr("href");
                        }
                    }
                    "checksum" => {
                        sum_kind = attr("type").unwrap_or_else(|| "sha256".into());
                        text_for = Some("checksum".into());
                    }
                    "size" | "revision" => text_for = Some(name),
                    _ => text_for = None,
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| e.to_string())?.trim().to_string();
                match (text_for.as_deref(), cur.as_mut()) {
                    (Some("checksum"), Some(c)) => c.2 = Some(Checksum::new(&sum_kind, &text)),
                    (Some("size"), Some(c)) => c.3 = text.parse().ok(),
                    (Some("revision"), None) => md.revision = Some(text),
                    _ => {}
                }
            }
            Event::End(e) => {
                text_for = None;
                if e.local_name().as_ref() == b"data" {
                    if let Some((kind, Some(location), Some(checksum), size)) = cur.take() {
                        md.entries.push(Entry { kind, location, checksum, size });
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if md.get("primary").is_none() {
        return Err("names no primary metadata".into());
    }
    Ok(md)
}

/// A repository's metadata, ready for the solver.
#[derive(Clone, Debug)]
pub struct Synced {
    pub id: String,
    pub primary: PathBuf,
    pub filelists: Option<PathBuf>,
    /// Identifies this metadata (the primary checksum): keys the solver cache.
    pub key: String,
    pub priority: i32,
    pub cost: i32,
}

/// How to treat the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Use the cache while `metadata_expire` allows, else fetch.
    Normal,
    /// Fetch repomd.xml now (`refresh-md -f`).
    Force,
    /// Never touch the network (`--cache-only`).
    CacheOnly,
}

/// The mirror list a `mirrorlist=`/`metalink=` resolved to, kept next to the metadata so
/// packages can be downloaded (and `--cache-only` works) without asking again.
const MIRRORS: &str = "mirrors";

/// `repo` with its base URLs: its own `baseurl`s, else the mirrors its `metalink=` or
/// `mirrorlist=` names (fetched now), plus the repomd.xml checksums a metalink gives.
fn resolve_mirrors(repo: &Repo, dir: &Path, cancelled: &dyn Fn() -> bool) -> Result<(Repo, Vec<Checksum>)> {
    if !repo.baseurls.is_empty() {
        return Ok((repo.clone(), Vec::new()));
    }
    let (url, is_metalink) = match (&repo.metalink, &repo.mirrorlist) {
        (Some(m), _) => (m.clone(), true),
        (None, Some(m)) => (m.clone(), false),
        (None, None) => return Err(Error::InvalidArgument(format!("repository [{}] has no baseurl, mirrorlist or metalink", repo.id))),
    };
    let bad = |what: String| Error::Failed(format!("repository [{}]: {what}", repo.id));
    let bytes = crate::fetch::fetch_url(repo, &url, &dir.join("mirrorlist.new"), 4 << 20, cancelled)?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (urls, hashes) = if is_metalink { parse_metalink(&text).map_err(|e| bad(format!("metalink {url}: {e}")))? } else { (parse_mirrorlist(&text), Vec::new()) };
    if urls.is_empty() {
        return Err(bad(format!("{url} lists no usable mirrors")));
    }
    let _ = std::fs::write(dir.join(MIRRORS), urls.join("\n"));
    Ok((Repo { baseurls: urls, ..repo.clone() }, hashes))
}

/// `repo` with base URLs for downloading packages: its own, or the mirrors cached by the last
/// metadata sync.
pub fn with_mirrors(repo: &Repo, cache_root: &Path) -> Repo {
    if !repo.baseurls.is_empty() {
        return repo.clone();
    }
    let urls = std::fs::read_to_string(cache_root.join(&repo.id).join(MIRRORS))
        .map(|t| t.lines().map(str::to_string).filter(|l| !l.is_empty()).collect())
        .unwrap_or_default();
    Repo { baseurls: urls, ..repo.clone() }
}

/// A mirrorlist: one base URL per line, `#` comments.
fn parse_mirrorlist(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| l.starts_with("http://") || l.starts_with("https://") || l.starts_with("file://"))
        .map(str::to_string)
        .collect()
}

/// A metalink for repomd.xml: the mirrors' base URLs (the `<url>`s without
/// `repodata/repomd.xml`, by preference) and the repomd.xml hashes.
fn parse_metalink(text: &str) -> std::result::Result<(Vec<String>, Vec<Checksum>), String> {
    let mut r = quick_xml::Reader::from_str(text);
    r.config_mut().trim_text(true);
    let mut urls: Vec<(u32, String)> = Vec::new();
    let mut hashes = Vec::new();
    let mut in_url: Option<u32> = None;
    let mut in_hash: Option<String> = None;
    loop {
        match r.read_event().map_err(|e| e.to_string())? {
            Event::DocType(_) => return Err("has a DOCTYPE (entity declarations are not accepted)".into()),
            Event::Start(e) => {
                let attr = |k: &str| {
                    e.attributes().flatten().find(|a| a.key.local_name().as_ref() == k.as_bytes()).map(|a| String::from_utf8_lossy(&a.value).into_owned())
                };
                match e.local_name().as_ref() {
                    b"url" => in_url = Some(attr("preference").and_then(|p| p.parse().ok()).unwrap_or(0)),
                    b"hash" => in_hash = attr("type"),
                    _ => {}
                }
            }
            Event::Text(t) => {
                let v = t.decode().map_err(|e| e.to_string())?.trim().to_string();
                if let Some(pref) = in_url {
                    if let Some(base) = v.strip_suffix("repodata/repomd.xml") {
                        if base.starts_with("http://") || base.starts_with("https://") {
                            urls.push((pref, base.to_string()));
                        }
                    }
                }
                if let Some(k) = &in_hash {
                    if matches!(k.as_str(), "sha256" | "sha512") {
                        hashes.push(Checksum::new(k, &v));
                    }
                }
            }
            Event::End(_) => {
                in_url = None;
                in_hash = None;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    urls.sort_by(|a, b| b.0.cmp(&a.0));
    Ok((urls.into_iter().map(|(_, u)| u).collect(), hashes))
}

pub(crate) fn file_name(location: &str) -> &str {
    location.rsplit('/').next().unwrap_or(location)
}

/// Bring `repo`'s metadata into `cache_root/<id>/` and return where it is.
pub fn sync(repo: &Repo, cache_root: &Path, freshness: Freshness, want_filelists: bool, cancelled: &dyn Fn() -> bool) -> Result<Synced> {
    let dir = cache_root.join(&repo.id);
    let repomd_path = dir.join("repomd.xml");
    let bad = |what: String| Error::Failed(format!("repository [{}]: {what}", repo.id));
    let age = std::fs::metadata(&repomd_path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok());
    let cached = std::fs::read(&repomd_path).ok().and_then(|b| parse(&b).ok());
    let expired = age.is_none_or(|a| a > Duration::from_secs(repo.metadata_expire));
    let fetch = match freshness {
        Freshness::CacheOnly => false,
        Freshness::Force => true,
        Freshness::Normal => cached.is_none() || expired,
    };
    let needs = |md: &RepoMd| -> Vec<Entry> {
        let mut v: Vec<Entry> = md.get("primary").cloned().into_iter().collect();
        if want_filelists {
            v.extend(md.get("filelists").cloned());
        }
        v
    };
    let md = if fetch {
        std::fs::create_dir_all(&dir).map_err(|e| bad(format!("creating {}: {e}", dir.display())))?;
        let (mirrored, repomd_hashes) = resolve_mirrors(repo, &dir, cancelled)?;
        let repo = &mirrored;
        let fetcher = Fetcher::new(repo)?;
        let tmp = dir.join("repomd.xml.new");
        fetcher.download("repodata/repomd.xml", &tmp, MAX_REPOMD, None, cancelled, &|_| {})?;
        if !repomd_hashes.is_empty() {
            let ok = repomd_hashes.iter().any(|h| h.of_file(&tmp).is_ok_and(|got| got == h.hex));
            if !ok {
                let _ = std::fs::remove_file(&tmp);
                return Err(bad("repomd.xml does not match the checksum the metalink gives (a stale or tampered mirror)".into()));
            }
        }
        let bytes = std::fs::read(&tmp).map_err(|e| bad(format!("reading repomd.xml: {e}")))?;
        if repo.repo_gpgcheck {
            let asc = dir.join("repomd.xml.asc.new");
            fetcher
                .download("repodata/repomd.xml.asc", &asc, 1 << 20, None, cancelled, &|_| {})
                .map_err(|e| bad(format!("repomd.xml is not signed (repo_gpgcheck=1): {e}")))?;
            let sig = std::fs::read_to_string(&asc).map_err(|e| bad(format!("reading repomd.xml.asc: {e}")))?;
            let _ = std::fs::remove_file(&asc);
            if let Err(e) = crate::gpg::verify_detached(repo, &bytes, &sig, &dir) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let md = parse(&bytes).map_err(|e| bad(format!("repomd.xml is not valid rpm-md metadata: {e}")))?;
        for e in needs(&md) {
            let dest = dir.join(file_name(&e.location));
            let ok = dest.exists() && e.checksum.of_file(&dest).is_ok_and(|h| h == e.checksum.hex);
            if !ok {
                let max = e.size.map_or(MAX_METADATA, |s| s.min(MAX_METADATA));
                fetcher.download(&e.location, &dest, max, Some(&e.checksum), cancelled, &|_| {})?;
            }
        }
        std::fs::rename(&tmp, &repomd_path).map_err(|e| bad(format!("storing repomd.xml: {e}")))?;
        // drop metadata files the new repomd.xml no longer names
        let keep: Vec<String> = md.entries.iter().map(|e| file_name(&e.location).to_string()).collect();
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for f in rd.flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n != "repomd.xml" && n != MIRRORS && !n.ends_with(".solv") && !keep.contains(&n) {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        md
    } else {
        let md = cached.ok_or_else(|| bad("no cached metadata (run `layerctl refresh-md` while the repository is reachable)".into()))?;
        for e in needs(&md) {
            let p = dir.join(file_name(&e.location));
            if !p.exists() {
                if freshness == Freshness::CacheOnly {
                    return Err(bad(format!("{} is not cached", e.kind)));
                }
                return sync(repo, cache_root, Freshness::Force, want_filelists, cancelled);
            }
        }
        md
    };
    let primary = md.get("primary").ok_or_else(|| bad("no primary metadata".into()))?;
    let filelists = if want_filelists {
        let f = md.get("filelists").ok_or_else(|| bad("no filelists metadata, needed for file requests".into()))?;
        Some(dir.join(file_name(&f.location)))
    } else {
        None
    };
    Ok(Synced {
        id: repo.id.clone(),
        primary: dir.join(file_name(&primary.location)),
        filelists,
        key: format!("{}{}", primary.checksum.hex, if want_filelists { "-fl" } else { "" }),
        priority: repo.priority,
        cost: repo.cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrorlists_and_metalinks() {
        assert_eq!(parse_mirrorlist("# comment\nhttp://a/x/\n\nftp://no\nhttps://b/x/\n"), ["http://a/x/", "https://b/x/"]);
        let ml = r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/"><files><file name="repomd.xml">
<verification><hash type="md5">00</hash><hash type="sha256">ABCD</hash></verification>
<resources maxconnections="1">
<url protocol="http" type="http" location="DE" preference="50">http://slow/9/BaseOS/x86_64/os/repodata/repomd.xml</url>
<url protocol="https" type="https" location="US" preference="100">https://fast/9/BaseOS/x86_64/os/repodata/repomd.xml</url>
<url protocol="rsync" type="rsync" preference="99">rsync://r/repodata/repomd.xml</url>
</resources></file></files></metalink>"#;
        let (urls, hashes) = parse_metalink(ml).unwrap();
        assert_eq!(urls, ["https://fast/9/BaseOS/x86_64/os/", "http://slow/9/BaseOS/x86_64/os/"]);
        assert_eq!(hashes, [Checksum::new("sha256", "abcd")]);
    }

    #[test]
    fn parses_createrepo_output_and_refuses_doctype() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <data type="primary">
    <checksum type="sha256">AAAA</checksum>
    <open-checksum type="sha256">bbbb</open-checksum>
    <location href="repodata/aaaa-primary.xml.gz"/>
    <size>123</size>
  </data>
  <data type="filelists">
    <checksum type="sha512">cccc</checksum>
    <location href="repodata/cccc-filelists.xml.gz"/>
  </data>
</repomd>"#;
        let md = parse(xml).unwrap();
        assert_eq!(md.revision.as_deref(), Some("1700000000"));
        let p = md.get("primary").unwrap();
        assert_eq!(p.location, "repodata/aaaa-primary.xml.gz");
        assert_eq!(p.checksum, Checksum::new("sha256", "aaaa"));
        assert_eq!(p.size, Some(123));
        assert_eq!(md.get("filelists").unwrap().checksum.kind, "sha512");
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">]><repomd>&lol;</repomd>"#;
        assert!(parse(bomb).unwrap_err().contains("DOCTYPE"));
        assert!(parse(b"<repomd></repomd>").unwrap_err().contains("no primary"));
        assert!(parse(b"<repomd><data type=\"primary\">").is_err());
    }
}
