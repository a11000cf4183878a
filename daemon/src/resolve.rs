//! Resolving repository package requests into RPM files in the package cache.
//!
//! Repositories come from the merge deployment's `/etc/yum.repos.d` (with `$releasever` from
//! the base's os-release); their metadata is synced by [`crate::repomd`], the requests are solved
//! by [`crate::solve`] against the base's rpmdb, and the packages the solution adds are
//! downloaded in parallel (a bounded number at a time), checked against the repository's
//! checksum and, with `gpgcheck=1`, against the repository's signing keys. A package the
//! package cache already holds (same NEVRA and sha256) is not downloaded again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::fetch::{Checksum, Fetcher};
use crate::layering::LocalInput;
use crate::pkgcache;
use crate::repomd::{self, Freshness, Synced};
use crate::repos::{self, Repo};
use crate::solve::{Pick, Pool, SolveError, SolveOptions};
use crate::txn::{Progress, Transaction};
use crate::{ostree, rpmfile};

/// Downloads running at once.
const PARALLEL: usize = 4;
/// RPMs larger than this are refused (matches the local-file limit).
const MAX_RPM: u64 = rpmfile::MAX_RPM_BYTES;

/// Where caches live and how to solve.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `/var/cache/layerd`: `repomd/` (metadata), `solv/` (solver caches).
    pub cache_dir: PathBuf,
    pub weak_deps: bool,
    pub freshness: Freshness,
}

/// The repositories and solver for one transaction.
pub struct Resolver {
    repos: Vec<Repo>,
    /// What the pool was built from (see [`pool_cache`]).
    key: String,
    /// Where repository metadata (and resolved mirror lists) are cached.
    cache_root: PathBuf,
    /// Always `Some` until dropped (then handed back to [`pool_cache`]).
    pool: Option<Pool>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if let Some(p) = self.pool.take() {
            pool_cache::put(std::mem::take(&mut self.key), p);
        }
    }
}

/// The last solver pool, kept for a short while: loading BaseOS + AppStream from `.solv` files
/// and indexing them costs ~75 ms, the solve itself ~2 ms, so back-to-back requests (a
/// controller's dry run then its install) reuse it. It is dropped after [`pool_cache::KEEP`]
/// unused, so an idle daemon does not hold tens of MB.
mod pool_cache {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use crate::solve::Pool;

    pub const KEEP: Duration = Duration::from_secs(30);

    struct Entry {
        key: String,
        pool: Pool,
        used: Instant,
    }

    static CACHE: Mutex<Option<Entry>> = Mutex::new(None);

    pub fn take(key: &str) -> Option<Pool> {
        let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        match c.take() {
            Some(e) if e.key == key => Some(e.pool),
            _ => None, // a different pool: dropped now
        }
    }

    pub fn put(key: String, pool: Pool) {
        let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        let had = c.is_some();
        *c = Some(Entry { key, pool, used: Instant::now() });
        drop(c);
        if !had {
            std::thread::spawn(|| loop {
                std::thread::sleep(KEEP / 3);
                let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
                match c.as_ref() {
                    Some(e) if e.used.elapsed() >= KEEP => {
                        *c = None;
                        drop(c);
                        // hand the freed pool's memory back to the system, not just to malloc
                        // SAFETY: malloc_trim has no preconditions.
                        unsafe { libc::malloc_trim(0) };
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
            });
        }
    }
}

/// A package of the solution: already cached (its `sha256:nevra` entry), or downloaded.
pub enum Fetched {
    Cached(String),
    Downloaded(LocalInput),
}

fn enabled(repos: &[Repo]) -> Vec<&Repo> {
    repos.iter().filter(|r| r.enabled).collect()
}

impl Resolver {
    /// Load repositories from `etc_dir`, sync their metadata and build the solver pool with
    /// the base's rpmdb (under `rpmdb_root`) installed.
    pub fn open(
        txn: &Transaction,
        etc_dir: &Path,
        os_release: &str,
        rpmdb_root: &Path,
        base_commit: &str,
        settings: &Settings,
        want_filelists: bool,
    ) -> Result<Self> {
        let arch = std::env::consts::ARCH;
        let repos = load_enabled(etc_dir, os_release)?;
        let mut synced = Vec::new();
        txn.task("Updating metadata", || -> Result<()> {
            // every repository at once: fetching is network-bound
            let results: Vec<(&Repo, Result<Synced>)> = std::thread::scope(|sc| {
                let jobs: Vec<_> = enabled(&repos)
                    .into_iter()
                    .map(|r| {
                        let cache = settings.cache_dir.join("repomd");
                        (r, sc.spawn(move || repomd::sync(r, &cache, settings.freshness, want_filelists, &|| txn.is_cancelled())))
                    })
                    .collect();
                jobs.into_iter()
                    .map(|(r, j)| (r, j.join().unwrap_or_else(|_| Err(Error::Failed(format!("repository [{}]: metadata sync panicked", r.id))))))
                    .collect()
            });
            for (r, res) in results {
                match res {
                    Ok(s) => synced.push(s),
                    Err(Error::Cancelled) => return Err(Error::Cancelled),
                    Err(e) if r.skip_if_unavailable => txn.message(format!("Skipping repository [{}]: {e}", r.id)),
                    Err(e) => return Err(e),
                }
            }
            txn.check_cancelled()
        })?;
        // everything the pool is built from: an identical key means an identical pool
        let mut key = format!("{arch}\n{base_commit}\n");
        for s in &synced {
            key.push_str(&format!("{} {} {} {}\n", s.id, s.key, s.priority, s.cost));
        }
        for r in enabled(&repos) {
            key.push_str(&format!("{} exclude={:?} include={:?}\n", r.id, r.exclude, r.includepkgs));
        }
        let pool = match pool_cache::take(&key) {
            Some(p) => p,
            None => {
                let solv = settings.cache_dir.join("solv");
                // parse metadata without a .solv cache yet in parallel, one pool per repository
                // (libsolv pools are single-threaded); the pool below then loads the caches
                let todo: Vec<&Synced> = synced.iter().filter(|s| !solv_cache(&solv, s).exists()).collect();
                if todo.len() > 1 {
                    std::thread::scope(|sc| -> Result<()> {
                        let jobs: Vec<_> = todo
                            .iter()
                            .map(|s| {
                                let cache = solv_cache(&solv, s);
                                sc.spawn(move || -> Result<()> {
                                    let mut p = Pool::new(arch)?;
                                    p.add_rpmmd_with_cost(&s.id, &s.primary, s.filelists.as_deref(), Some(&cache), s.priority, s.cost)
                                })
                            })
                            .collect();
                        for j in jobs {
                            j.join().unwrap_or_else(|_| Err(Error::Failed("metadata parsing panicked".into())))?;
                        }
                        Ok(())
                    })?;
                }
                let mut pool = Pool::new(arch)?;
                pool.set_installed_rpmdb(rpmdb_root, Some(&solv.join(format!("@System-{base_commit}.solv"))))?;
                for s in &synced {
                    let cache = solv_cache(&solv, s);
                    pool.add_rpmmd_with_cost(&s.id, &s.primary, s.filelists.as_deref(), Some(&cache), s.priority, s.cost)?;
                }
                for r in enabled(&repos) {
                    pool.filter_repo(&r.id, &r.exclude, false)?;
                    pool.filter_repo(&r.id, &r.includepkgs, true)?;
                }
                pool
            }
        };
        Ok(Resolver { repos, pool: Some(pool), key, cache_root: settings.cache_dir.join("repomd") })
    }

    fn pool(&mut self) -> &mut Pool {
        self.pool.as_mut().expect("the pool is present until drop")
    }

    /// The base package that already satisfies `request`, if any.
    pub fn base_provides(&mut self, request: &str) -> Result<Option<String>> {
        self.pool().installed_match(request)
    }

    /// Solve `requests`; errors name what is missing or which base packages would change.
    pub fn solve(&mut self, requests: &[String], weak_deps: bool) -> Result<Vec<Pick>> {
        self.solve_with(requests, SolveOptions { weak_deps, ..Default::default() })
    }

    /// [`Self::solve`] with base packages removed (`override remove`).
    pub fn solve_with(&mut self, requests: &[String], opts: SolveOptions) -> Result<Vec<Pick>> {
        self.pool().solve(requests, opts)?.map_err(solve_error)
    }

    /// Bring every pick into reach: cached ones by entry, others downloaded into `dir` and
    /// checked. Progress goes to the transaction.
    pub fn fetch(&self, txn: &Transaction, repo: &ostree::Repo, picks: &[Pick], dir: &Path, cache_only: bool) -> Result<Vec<Fetched>> {
        let mut out: Vec<Option<Fetched>> = Vec::new();
        let mut todo: Vec<(usize, &Pick)> = Vec::new();
        for (i, p) in picks.iter().enumerate() {
            let sha = p.checksum.as_ref().filter(|(k, _)| k == "sha256").map(|(_, h)| h.clone());
            let cached = match &sha {
                Some(sha) => pkgcache::find(repo, &pkgcache::ref_for(&p.name, &p.evr, &p.arch), sha)?,
                None => None,
            };
            match cached {
                Some(c) => out.push(Some(Fetched::Cached(c.origin_entry()))),
                None => {
                    out.push(None);
                    todo.push((i, p));
                }
            }
        }
        if todo.is_empty() {
            return Ok(out.into_iter().flatten().collect());
        }
        if cache_only {
            let names: Vec<String> = todo.iter().map(|(_, p)| p.nevra()).collect();
            return Err(Error::InvalidState(format!(
                "--cache-only: not downloaded yet: {} (run the same request with --download-only first)",
                names.join(", ")
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::Failed(format!("creating {}: {e}", dir.display())))?;
        let total_bytes: u64 = todo.iter().map(|(_, p)| p.download_size).sum();
        let total_pkgs = todo.len() as u64;
        txn.message(format!("Downloading {total_pkgs} package{} ({})", if total_pkgs == 1 { "" } else { "s" }, human(total_bytes)));
        let bytes = AtomicU64::new(0);
        let done = AtomicU64::new(0);
        let results: Mutex<Vec<(usize, Result<LocalInput>)>> = Mutex::new(Vec::new());
        let queue = Mutex::new(todo.clone());
        let mirrored: Vec<Repo> = self.repos.iter().map(|r| repomd::with_mirrors(r, &self.cache_root)).collect();
        // signing keys: fetched and parsed once per repository, before any download
        let mut verifiers = std::collections::HashMap::new();
        for r in mirrored.iter().filter(|r| r.gpgcheck && todo.iter().any(|(_, p)| p.repo == r.id)) {
            verifiers.insert(r.id.clone(), crate::gpg::verifier(r, dir)?);
        }
        let repos = &mirrored;
        let verifiers = &verifiers;
        let report = || {
            txn.progress(Progress {
                text: "Downloading packages".into(),
                bytes_done: bytes.load(Ordering::Relaxed),
                bytes_total: total_bytes,
                items_done: done.load(Ordering::Relaxed),
                items_total: total_pkgs,
            })
        };
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(todo.len()) {
                s.spawn(|| loop {
                    let next = queue.lock().map(|mut q| q.pop()).ok().flatten();
                    let Some((i, p)) = next else { break };
                    let r = download_one(repos, verifiers, txn, p, dir, &|n| {
                        bytes.fetch_add(n, Ordering::Relaxed);
                    });
                    if r.is_err() {
                        // stop the others early: the transaction fails anyway
                        if let Ok(mut q) = queue.lock() {
                            q.clear();
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                    report();
                    if let Ok(mut v) = results.lock() {
                        v.push((i, r));
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(i, _)| *i);
        for (i, r) in results {
            out[i] = Some(Fetched::Downloaded(r?));
        }
        if out.iter().any(Option::is_none) {
            return Err(Error::Failed("some downloads did not run".into()));
        }
        Ok(out.into_iter().flatten().collect())
    }

}

/// Download one package, check it, read it.
fn download_one(
    repos: &[Repo],
    verifiers: &std::collections::HashMap<String, rpm::signature::pgp::Verifier>,
    txn: &Transaction,
    p: &Pick,
    dir: &Path,
    on_bytes: &dyn Fn(u64),
) -> Result<LocalInput> {
        let repo = repos.iter().find(|r| r.id == p.repo).ok_or_else(|| Error::Failed(format!("solution names unknown repository {}", p.repo)))?;
        let fetcher = Fetcher::new(repo)?;
        let checksum = p.checksum.as_ref().map(|(k, h)| Checksum::new(k, h));
        if checksum.is_none() {
            return Err(Error::Failed(format!("repository [{}] gives no checksum for {}", repo.id, p.nevra())));
        }
        let file_name = repomd::file_name(&p.location).to_string();
        let dest = dir.join(&file_name);
        fetcher.download(&p.location, &dest, MAX_RPM, checksum.as_ref(), &|| txn.is_cancelled(), on_bytes)?;
        let f = std::fs::File::open(&dest).map_err(|e| Error::Failed(format!("reading {}: {e}", dest.display())))?;
        let rpm = rpmfile::read(&format!("{} (from [{}])", p.nevra(), repo.id), f, std::env::consts::ARCH)?;
        if rpm.nevra() != p.nevra() {
            return Err(Error::InvalidArgument(format!(
                "repository [{}]: {} is really {} (metadata and package disagree)",
                repo.id,
                p.location,
                rpm.nevra()
            )));
        }
        if repo.gpgcheck {
            let v = verifiers.get(&repo.id).ok_or_else(|| Error::Failed(format!("no keys loaded for repository [{}]", repo.id)))?;
            crate::gpg::verify(repo, v, &rpm)?;
        }
        let _ = std::fs::remove_file(&dest);
        Ok(LocalInput { label: p.nevra(), rpm: Arc::new(rpm) })
}

/// Whether `etc_dir/yum.repos.d` enables any repository (a broken .repo file counts: using
/// it then reports the error).
pub fn any_enabled(etc_dir: &Path, os_release: &str) -> bool {
    !matches!(load_enabled(etc_dir, os_release), Err(Error::InvalidState(_)))
}

/// The repositories defined in `etc_dir/yum.repos.d` (variables from `os_release` and
/// `etc_dir/dnf/vars`); an error when none is enabled.
fn load_enabled(etc_dir: &Path, os_release: &str) -> Result<Vec<Repo>> {
    let releasever = repos::releasever(os_release).unwrap_or_default();
    let vars = repos::vars(std::env::consts::ARCH, &releasever, etc_dir);
    let repos = repos::load(etc_dir, &vars)?;
    if enabled(&repos).is_empty() {
        return Err(Error::InvalidState(
            "no enabled repositories in /etc/yum.repos.d; add a .repo file or install local RPM files".into(),
        ));
    }
    Ok(repos)
}

/// The solver cache file of a repository's metadata.
fn solv_cache(solv: &Path, s: &Synced) -> PathBuf {
    solv.join(format!("{}-{}.solv", s.id, s.key))
}

/// Check against the base alone (no repository is read) that the local packages `local` have
/// what they require and that removing the base packages `erase` leaves every other
/// package's requirements met. The inner error says what is wrong, for the caller to decide
/// whether the repositories may help ([`SolveError::Missing`], [`SolveError::Problems`]) or not.
pub fn check_base(
    rpmdb_root: &Path,
    base_commit: &str,
    settings: &Settings,
    erase: &[String],
    local: &[std::path::PathBuf],
) -> Result<std::result::Result<(), SolveError>> {
    let mut pool = Pool::new(std::env::consts::ARCH)?;
    // the same .solv cache of the base rpmdb the resolver keeps: loading it is cheap
    let solv = settings.cache_dir.join("solv");
    let _ = std::fs::create_dir_all(&solv);
    pool.set_installed_rpmdb(rpmdb_root, Some(&solv.join(format!("@System-{base_commit}.solv"))))?;
    Ok(pool.solve(&[], SolveOptions { weak_deps: false, erase: erase.to_vec(), local: local.to_vec() })?.map(|_| ()))
}

pub(crate) fn solve_error(e: SolveError) -> Error {
    match e {
        e @ SolveError::Missing(_) => Error::InvalidArgument(e.to_string()),
        e @ SolveError::NeededBy(_) => Error::InvalidArgument(format!(
            "cannot remove base packages others need: {e}; remove those too in the same request (or install replacements with --install), or undo the removal with `layerctl override reset`"
        )),
        e => Error::InvalidState(e.to_string()),
    }
}

/// Sync the metadata of every enabled repository defined in `etc_dir`; returns how many.
pub fn refresh(txn: &Transaction, etc_dir: &Path, os_release: &str, cache_dir: &Path, freshness: Freshness) -> Result<usize> {
    let repos = load_enabled(etc_dir, os_release)?;
    let mut n = 0;
    for r in enabled(&repos) {
        txn.check_cancelled()?;
        txn.task(&format!("Updating metadata of [{}]", r.id), || {
            repomd::sync(r, &cache_dir.join("repomd"), freshness, false, &|| txn.is_cancelled())
        })?;
        n += 1;
    }
    Ok(n)
}

/// Bytes for humans.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
