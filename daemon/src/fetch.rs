//! Downloading from repositories: `http(s)://` with the repository's TLS and proxy settings, or
//! `file://`; bounded sizes, retries with resume (`Range`), fallback across the repository's
//! base URLs, and a checksum check before a file is used. A file is written next to its final
//! name and renamed into place only once complete and verified.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::error::{Error, Result};
use crate::repos::Repo;

/// Attempts per URL before moving to the next base URL.
const ATTEMPTS: u32 = 3;

/// An expected checksum: `(type, lowercase hex)` as rpm-md writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checksum {
    pub kind: String,
    pub hex: String,
}

impl Checksum {
    pub fn new(kind: &str, hex: &str) -> Self {
        Checksum { kind: kind.to_ascii_lowercase(), hex: hex.to_ascii_lowercase() }
    }

    /// Checksum of a file on disk, of this kind.
    pub fn of_file(&self, path: &Path) -> Result<String> {
        let mut f = std::fs::File::open(path).map_err(|e| Error::Failed(format!("reading {}: {e}", path.display())))?;
        let mut buf = vec![0u8; 1 << 16];
        macro_rules! digest {
            ($h:expr) => {{
                let mut h = $h;
                loop {
                    let n = f.read(&mut buf).map_err(|e| Error::Failed(format!("reading {}: {e}", path.display())))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                format!("{:x}", h.finalize())
            }};
        }
        Ok(match self.kind.as_str() {
            "sha256" => digest!(sha2::Sha256::new()),
            "sha512" => digest!(sha2::Sha512::new()),
            "sha384" => digest!(sha2::Sha384::new()),
            "sha224" => digest!(sha2::Sha224::new()),
            other => return Err(Error::InvalidArgument(format!("unsupported checksum type {other:?} (sha224/256/384/512 are)"))),
        })
    }
}

/// A client for one repository.
pub struct Fetcher {
    agent: ureq::Agent,
    repo_id: String,
    baseurls: Vec<String>,
}

fn read_file(path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Failed(format!("reading {path}: {e}")))
}

impl Fetcher {
    pub fn new(repo: &Repo) -> Result<Self> {
        let bad = |what: String| Error::InvalidArgument(format!("repository [{}] ({}): {what}", repo.id, repo.file));
        let mut tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::NativeTls)
            .disable_verification(!repo.sslverify);
        if let Some(ca) = &repo.sslcacert {
            let pem = read_file(ca)?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(bad(format!("sslcacert {ca} holds no certificate")));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&repo.sslclientcert, &repo.sslclientkey) {
            let c = ureq::tls::Certificate::from_pem(&read_file(cert)?).map_err(|e| bad(format!("sslclientcert {cert}: {e}")))?;
            let k = ureq::tls::PrivateKey::from_pem(&read_file(key)?).map_err(|e| bad(format!("sslclientkey {key}: {e}")))?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[c], k)));
        }
        let proxy = match &repo.proxy {
            Some(p) => Some(ureq::Proxy::new(p).map_err(|e| bad(format!("proxy {p}: {e}")))?),
            None => None,
        };
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .proxy(proxy)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .user_agent(format!("layerd/{}", crate::VERSION))
            .http_status_as_error(false)
            .build();
        Ok(Fetcher { agent: config.new_agent(), repo_id: repo.id.clone(), baseurls: repo.baseurls.clone() })
    }

    /// Download `rel` (relative to the base URLs, tried in order) to `dest`, at most
    /// `max_bytes`, verified against `checksum` when given. `on_bytes` sees progress.
    pub fn download(
        &self,
        rel: &str,
        dest: &Path,
        max_bytes: u64,
        checksum: Option<&Checksum>,
        cancelled: &dyn Fn() -> bool,
        on_bytes: &dyn Fn(u64),
    ) -> Result<()> {
        if rel.contains("..") || rel.starts_with('/') {
            return Err(Error::InvalidArgument(format!("repository [{}]: refusing location {rel:?}", self.repo_id)));
        }
        let part = part_path(dest);
        let mut errors = Vec::new();
        for base in &self.baseurls {
            let url = format!("{}/{}", base.trim_end_matches('/'), rel);
            for attempt in 1..=ATTEMPTS {
                if cancelled() {
                    let _ = std::fs::remove_file(&part);
                    return Err(Error::Cancelled);
                }
                match self.fetch_once(&url, &part, max_bytes, cancelled, on_bytes) {
                    Ok(()) => {
                        if let Some(c) = checksum {
                            let got = c.of_file(&part)?;
                            if got != c.hex {
                                let _ = std::fs::remove_file(&part);
                                errors.push(format!("{url}: {} checksum mismatch (expected {}, got {got})", c.kind, c.hex));
                                break; // a corrupt mirror: try the next one
                            }
                        }
                        std::fs::rename(&part, dest).map_err(|e| Error::Failed(format!("storing {}: {e}", dest.display())))?;
                        return Ok(());
                    }
                    Err(Failure::Cancelled) => {
                        let _ = std::fs::remove_file(&part);
                        return Err(Error::Cancelled);
                    }
                    Err(Failure::Permanent(e)) => {
                        let _ = std::fs::remove_file(&part);
                        errors.push(format!("{url}: {e}"));
                        break;
                    }
                    Err(Failure::Transient(e)) => {
                        errors.push(format!("{url} (attempt {attempt}): {e}"));
                        std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&part);
        Err(Error::Failed(format!(
            "repository [{}]: downloading {rel} failed:\n  {}",
            self.repo_id,
            errors.join("\n  ")
        )))
    }

    /// One attempt; continues a partial file with a `Range` request.
    fn fetch_once(&self, url: &str, part: &Path, max: u64, cancelled: &dyn Fn() -> bool, on_bytes: &dyn Fn(u64)) -> std::result::Result<(), Failure> {
        if let Some(path) = url.strip_prefix("file://") {
            let meta = std::fs::metadata(path).map_err(|e| Failure::Permanent(e.to_string()))?;
            if meta.len() > max {
                return Err(Failure::Permanent(format!("{} bytes, more than the {max} allowed", meta.len())));
            }
            std::fs::copy(path, part).map_err(|e| Failure::Permanent(e.to_string()))?;
            on_bytes(meta.len());
            return Ok(());
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Failure::Permanent("only http, https and file URLs are supported".into()));
        }
        let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
        let mut req = self.agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = req.call().map_err(|e| Failure::Transient(e.to_string()))?;
        let status = resp.status().as_u16();
        let append = match status {
            200 => false,
            206 if have > 0 => true,
            416 if have > 0 => {
                // already complete (or the server disagrees): start over next time
                let _ = std::fs::remove_file(part);
                return Err(Failure::Transient("range not satisfiable".into()));
            }
            404 | 403 | 410 => return Err(Failure::Permanent(format!("HTTP {status}"))),
            s => return Err(Failure::Transient(format!("HTTP {s}"))),
        };
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .map_err(|e| Failure::Permanent(e.to_string()))?;
        let mut written = if append { have } else { 0 };
        let mut body = resp.into_body().into_reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            if cancelled() {
                return Err(Failure::Cancelled);
            }
            let n = body.read(&mut buf).map_err(|e| Failure::Transient(e.to_string()))?;
            if n == 0 {
                break;
            }
            written += n as u64;
            if written > max {
                return Err(Failure::Permanent(format!("more than the {max} bytes allowed")));
            }
            out.write_all(&buf[..n]).map_err(|e| Failure::Permanent(e.to_string()))?;
            on_bytes(n as u64);
        }
        out.sync_all().map_err(|e| Failure::Permanent(e.to_string()))?;
        Ok(())
    }
}

/// Fetch one absolute `url` (a mirror list, a key) with `repo`'s TLS and proxy settings into
/// `dest`; returns its bytes.
pub fn fetch_url(repo: &Repo, url: &str, dest: &Path, max_bytes: u64, cancelled: &dyn Fn() -> bool) -> Result<Vec<u8>> {
    if let Some(p) = url.strip_prefix("file://") {
        return std::fs::read(p).map_err(|e| Error::InvalidArgument(format!("repository [{}]: {url}: {e}", repo.id)));
    }
    let (base, file) = url.rsplit_once('/').ok_or_else(|| Error::InvalidArgument(format!("{url} is not a URL")))?;
    let one = Repo { baseurls: vec![base.to_string()], ..repo.clone() };
    Fetcher::new(&one)?.download(file, dest, max_bytes, None, cancelled, &|_| {})?;
    let bytes = std::fs::read(dest).map_err(|e| Error::Failed(format!("reading {}: {e}", dest.display())))?;
    let _ = std::fs::remove_file(dest);
    Ok(bytes)
}

enum Failure {
    /// Try again (network trouble, server errors).
    Transient(String),
    /// This URL will not work (missing, forbidden, too large).
    Permanent(String),
    Cancelled,
}

fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}
