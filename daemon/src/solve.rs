//! Dependency solving with libsolv — the solver dnf and rpm-ostree use — through FFI.
//!
//! The pool holds the base's rpmdb as the installed system and each enabled repository's
//! rpm-md metadata. Both are cached as libsolv's own `.solv` files (the base's keyed by its
//! commit, a repository's by its metadata checksum), so a warm solve does not parse XML or
//! read an rpmdb. A request is a name, a NEVRA, a provide (`'libpcap.so.1()(64bit)'`) or a file
//! path. The result must not touch the base: any base package the solution would upgrade,
//! downgrade, replace or remove is reported by name, as are all unknown requests at once.
//!
//! libsolv objects are not thread-safe; a `Pool` lives on one (blocking) thread.

use std::ffi::{CStr, CString};
use std::path::Path;

use libsolv_sys::ffi;

use crate::error::{Error, Result};

extern "C" {
    /// libsolvext: open a possibly compressed file (gz, xz, bz2, zstd by extension).
    fn solv_xfopen(fname: *const libc::c_char, mode: *const libc::c_char) -> *mut libc::FILE;
}

/// A package the solution adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pick {
    pub name: String,
    pub evr: String,
    pub arch: String,
    /// Id of the repository it comes from.
    pub repo: String,
    /// `location href` relative to the repository's base URL.
    pub location: String,
    /// `(type, hex)` of the package file, e.g. `("sha256", "ab…")`.
    pub checksum: Option<(String, String)>,
    pub download_size: u64,
}

impl Pick {
    /// `name-[epoch:]version-release.arch`.
    pub fn nevra(&self) -> String {
        format!("{}-{}.{}", self.name, self.evr, self.arch)
    }
}

/// Options of a solve.
#[derive(Clone, Debug, Default)]
pub struct SolveOptions {
    /// Install weak dependencies (Recommends), as dnf does by default.
    pub weak_deps: bool,
    /// Names of installed (base) packages to remove (`override remove`): the solve fails when
    /// a remaining package needs one of them.
    pub erase: Vec<String>,
    /// Header-only RPM files of local packages the new tree has (layered ones and
    /// `override replace` ones): installed in the solve so their requirements are checked
    /// against what stays, and a replacement may take the place of the base package of its
    /// name. Loaded for this solve only.
    pub local: Vec<std::path::PathBuf>,
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
pub enum SolveError {
    #[error("no package provides: {}", .0.join(", "))]
    Missing(Vec<String>),
    #[error("layering would change base packages ({}); base packages are only changed by overrides", .0.join("; "))]
    ChangesBase(Vec<String>),
    #[error("dependencies cannot be satisfied:\n  {}", .0.join("\n  "))]
    Problems(Vec<String>),
    /// Removing base packages would break others: (removed package, packages needing it).
    #[error("{}", .0.iter().map(|(r, by)| format!("{r} is needed by {}", by.join(", "))).collect::<Vec<_>>().join("; "))]
    NeededBy(Vec<(String, Vec<String>)>),
}

pub struct Pool {
    raw: *mut ffi::Pool,
    /// File provides added and the whatprovides index built for the current repositories.
    prepared: bool,
}

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidArgument(format!("{s:?} contains a NUL byte")))
}

fn path_cstr(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Error::InvalidArgument(format!("{} contains a NUL byte", p.display())))
}

/// Owned `FILE*`, closed on drop.
struct File(*mut libc::FILE);

impl File {
    fn open(path: &Path, mode: &str, compressed: bool) -> Result<File> {
        let p = path_cstr(path)?;
        let m = cstr(mode)?;
        // SAFETY: valid NUL-terminated strings; a null return is checked.
        let f = unsafe { if compressed { solv_xfopen(p.as_ptr(), m.as_ptr()) } else { libc::fopen(p.as_ptr(), m.as_ptr()) } };
        if f.is_null() {
            return Err(Error::Failed(format!("opening {}: {}", path.display(), std::io::Error::last_os_error())));
        }
        Ok(File(f))
    }
    fn ptr(&self) -> *mut ffi::FILE {
        self.0.cast()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        // SAFETY: we own the stream.
        unsafe { libc::fclose(self.0) };
    }
}

/// A libsolv queue, freed on drop.
struct Queue(ffi::Queue);

impl Queue {
    fn new() -> Self {
        let mut q = std::mem::MaybeUninit::<ffi::Queue>::uninit();
        // SAFETY: queue_init initialises every field.
        unsafe {
            ffi::queue_init(q.as_mut_ptr());
            Queue(q.assume_init())
        }
    }
    fn push2(&mut self, a: ffi::Id, b: ffi::Id) {
        // SAFETY: a valid queue; queue_insert2 at the end is queue_push2.
        unsafe { ffi::queue_insert2(&mut self.0, self.0.count, a, b) };
    }
    fn items(&self) -> &[ffi::Id] {
        if self.0.count == 0 || self.0.elements.is_null() {
            return &[];
        }
        // SAFETY: elements holds count ids.
        unsafe { std::slice::from_raw_parts(self.0.elements, self.0.count as usize) }
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: initialised by queue_init.
        unsafe { ffi::queue_free(&mut self.0) };
    }
}

fn to_string(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libsolv returns NUL-terminated strings it owns.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl Pool {
    /// An empty pool with RPM semantics for a machine of `arch`.
    pub fn new(arch: &str) -> Result<Self> {
        let a = cstr(arch)?;
        // SAFETY: plain constructor calls; the pool is freed in Drop.
        unsafe {
            let raw = ffi::pool_create();
            // Debian's libsolv defaults to Debian semantics: without this RPMs "do not exist"
            ffi::pool_setdisttype(raw, ffi::DISTTYPE_RPM as i32);
            ffi::pool_setarch(raw, a.as_ptr());
            Ok(Pool { raw, prepared: false })
        }
    }

    fn error(&self, what: &str) -> Error {
        // SAFETY: pool_errstr returns the pool's last error string.
        Error::Failed(format!("{what}: {}", to_string(unsafe { ffi::pool_errstr(self.raw) })))
    }

    fn new_repo(&mut self, name: &str) -> Result<*mut ffi::Repo> {
        let n = cstr(name)?;
        self.prepared = false;
        // SAFETY: the pool copies the name.
        Ok(unsafe { ffi::repo_create(self.raw, n.as_ptr()) })
    }

    /// Load a `.solv` file into `repo`; false when it is missing or unreadable (rebuild it).
    fn load_solv(repo: *mut ffi::Repo, cache: &Path) -> bool {
        let Ok(f) = File::open(cache, "r", false) else { return false };
        // SAFETY: a valid repo and stream.
        unsafe { ffi::repo_add_solv(repo, f.ptr(), 0) == 0 }
    }

    /// Write `repo` as a `.solv` cache (atomically; failures only cost speed next time).
    fn write_solv(repo: *mut ffi::Repo, cache: &Path) {
        let tmp = cache.with_extension("solv.tmp");
        if let Some(d) = cache.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let ok = match File::open(&tmp, "w", false) {
            // SAFETY: a valid repo and stream.
            Ok(f) => unsafe { ffi::repo_write(repo, f.ptr()) == 0 },
            Err(_) => false,
        };
        if !ok || std::fs::rename(&tmp, cache).is_err() {
            let _ = std::fs::remove_file(&tmp);
            log::debug!("could not write the solv cache {}", cache.display());
        }
    }

    /// The installed system: the rpmdb under `root` (its location detected as rpm does:
    /// `usr/share/rpm`, `usr/lib/sysimage/rpm`, `var/lib/rpm`), through `cache` when given.
    pub fn set_installed_rpmdb(&mut self, root: &Path, cache: Option<&Path>) -> Result<()> {
        let repo = self.new_repo("@System")?;
        let loaded = cache.is_some_and(|c| Self::load_solv(repo, c));
        if !loaded {
            // librpm keeps global state (macros, configuration): one rpmdb read at a time
            static RPMDB: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = RPMDB.lock().unwrap_or_else(|p| p.into_inner());
            let r = path_cstr(root)?;
            // SAFETY: valid pool and repo; rootdir is copied.
            let rc = unsafe {
                ffi::pool_set_rootdir(self.raw, r.as_ptr());
                let rc = ffi::repo_add_rpmdb(repo, std::ptr::null_mut(), ffi::REPO_USE_ROOTDIR as i32);
                ffi::pool_set_rootdir(self.raw, std::ptr::null());
                rc
            };
            if rc != 0 {
                return Err(self.error("reading the base rpmdb"));
            }
            if let Some(c) = cache {
                Self::write_solv(repo, c);
            }
        }
        // SAFETY: the repo belongs to the pool.
        unsafe { ffi::pool_set_installed(self.raw, repo) };
        Ok(())
    }

    /// A repository from its rpm-md `primary` (and `filelists`, for file requests), through
    /// `cache` when given. Lower `priority` wins, as in dnf.
    pub fn add_rpmmd(&mut self, id: &str, primary: &Path, filelists: Option<&Path>, cache: Option<&Path>, priority: i32) -> Result<()> {
        self.add_rpmmd_with_cost(id, primary, filelists, cache, priority, 1000)
    }

    /// [`Pool::add_rpmmd`] with dnf's `cost`: among equal priorities, the cheaper repository
    /// wins (libsolv's subpriority, as libdnf sets it).
    pub fn add_rpmmd_with_cost(
        &mut self,
        id: &str,
        primary: &Path,
        filelists: Option<&Path>,
        cache: Option<&Path>,
        priority: i32,
        cost: i32,
    ) -> Result<()> {
        let repo = self.new_repo(id)?;
        let loaded = cache.is_some_and(|c| Self::load_solv(repo, c));
        if !loaded {
            let f = File::open(primary, "r", true)?;
            // SAFETY: valid repo and stream.
            if unsafe { ffi::repo_add_rpmmd(repo, f.ptr(), std::ptr::null(), 0) } != 0 {
                return Err(self.error(&format!("repository {id}: reading {}", primary.display())));
            }
            if let Some(fl) = filelists {
                let f = File::open(fl, "r", true)?;
                // SAFETY: as above; extends the solvables just added.
                if unsafe { ffi::repo_add_rpmmd(repo, f.ptr(), std::ptr::null(), ffi::REPO_EXTEND_SOLVABLES as i32) } != 0 {
                    return Err(self.error(&format!("repository {id}: reading {}", fl.display())));
                }
            }
            // SAFETY: valid repo.
            unsafe { ffi::repo_internalize(repo) };
            if let Some(c) = cache {
                Self::write_solv(repo, c);
            }
        }
        // libsolv: higher priority wins; dnf: lower wins (and lower cost)
        // SAFETY: repo is valid; plain field writes.
        unsafe {
            (*repo).priority = -priority;
            (*repo).subpriority = -cost;
        }
        Ok(())
    }

    /// Apply a repository's `exclude=` (or, with `include_only`, `includepkgs=`) globs: the
    /// packages left out can never be installed from it.
    pub fn filter_repo(&mut self, repo_id: &str, patterns: &[String], include_only: bool) -> Result<()> {
        if patterns.is_empty() {
            return Ok(());
        }
        self.prepare();
        let mut matched = std::collections::HashSet::new();
        for pat in patterns {
            let c = cstr(pat)?;
            let mut sel = Queue::new();
            let mut found = Queue::new();
            let flags = ffi::SELECTION_NAME | ffi::SELECTION_GLOB | ffi::SELECTION_DOTARCH | ffi::SELECTION_CANON;
            // SAFETY: valid pool and queues.
            unsafe {
                ffi::selection_make(self.raw, &mut sel.0, c.as_ptr(), flags as i32);
                ffi::selection_solvables(self.raw, &mut sel.0, &mut found.0);
            }
            matched.extend(found.items().iter().copied());
        }
        // SAFETY: solvable ids 2..nsolvables are valid; repo names are pool-owned strings.
        let n = unsafe { (*self.raw).nsolvables };
        for p in 2..n {
            let s = self.solvable(p);
            let repo = unsafe { (*s).repo };
            if repo.is_null() || to_string(unsafe { (*repo).name }) != repo_id {
                continue;
            }
            if matched.contains(&p) != include_only {
                self.hide(p);
            }
        }
        // SAFETY: whatprovides must be rebuilt after the considered map changed.
        unsafe { ffi::pool_createwhatprovides(self.raw) };
        Ok(())
    }

    /// Make a solvable invisible to requests and dependencies (as dnf's excludes do), through
    /// the pool's `considered` map, created on first use with every solvable in it (freed in
    /// `Drop`).
    fn hide(&mut self, p: ffi::Id) {
        // SAFETY: the map is allocated with libsolv's allocator (pool_free releases it with
        // solv_free) and sized for every solvable; p < nsolvables.
        unsafe {
            let pool = &mut *self.raw;
            if pool.considered.is_null() {
                let m = ffi::solv_calloc(1, std::mem::size_of::<ffi::Map>()) as *mut ffi::Map;
                ffi::map_init(m, pool.nsolvables);
                std::ptr::write_bytes((*m).map, 0xff, (*m).size as usize);
                pool.considered = m;
            }
            let m = &mut *pool.considered;
            let byte = (p >> 3) as usize;
            if byte < m.size as usize {
                *m.map.add(byte) &= !(1u8 << (p & 7));
            }
        }
    }

    fn solvable(&self, p: ffi::Id) -> *mut ffi::Solvable {
        // SAFETY: p is a valid solvable id of this pool (pool_id2solvable).
        unsafe { (*self.raw).solvables.add(p as usize) }
    }

    fn id2str(&self, id: ffi::Id) -> String {
        // SAFETY: id comes from the pool.
        to_string(unsafe { ffi::pool_id2str(self.raw, id) })
    }

    fn pick(&self, p: ffi::Id) -> Pick {
        let s = self.solvable(p);
        // SAFETY: s is a valid solvable; lookups return pool-owned strings or null.
        unsafe {
            let mut medianr: libc::c_uint = 0;
            let location = to_string(ffi::solvable_get_location(s, &mut medianr));
            let mut ctype: ffi::Id = 0;
            let sum = ffi::solvable_lookup_checksum(s, ffi::solv_knownid_SOLVABLE_CHECKSUM as ffi::Id, &mut ctype);
            let checksum = (!sum.is_null()).then(|| (to_string(ffi::solv_chksum_type2str(ctype)), to_string(sum)));
            let size = ffi::solvable_lookup_num(s, ffi::solv_knownid_SOLVABLE_DOWNLOADSIZE as ffi::Id, 0);
            Pick {
                name: self.id2str((*s).name),
                evr: self.id2str((*s).evr),
                arch: self.id2str((*s).arch),
                repo: to_string((*(*s).repo).name),
                location,
                checksum,
                download_size: size,
            }
        }
    }

    fn describe(&self, p: ffi::Id) -> String {
        // SAFETY: valid solvable.
        to_string(unsafe { ffi::pool_solvable2str(self.raw, self.solvable(p)) })
    }

    /// Add file provides and build the whatprovides index, once per set of repositories (the
    /// expensive part of a warm solve).
    fn prepare(&mut self) {
        if !self.prepared {
            // SAFETY: pool calls on a valid pool.
            unsafe {
                ffi::pool_addfileprovides(self.raw);
                ffi::pool_createwhatprovides(self.raw);
            }
            self.prepared = true;
        }
    }

    /// The installed package that satisfies `request` (name, provide or path), if any.
    pub fn installed_match(&mut self, request: &str) -> Result<Option<String>> {
        self.prepare();
        let mut sel = Queue::new();
        let mut flags = ffi::SELECTION_NAME | ffi::SELECTION_PROVIDES | ffi::SELECTION_CANON | ffi::SELECTION_DOTARCH | ffi::SELECTION_REL | ffi::SELECTION_INSTALLED_ONLY;
        if request.starts_with('/') {
            flags |= ffi::SELECTION_FILELIST;
        }
        let c = cstr(request)?;
        let mut found = Queue::new();
        // SAFETY: valid pool and queues.
        unsafe {
            ffi::selection_make(self.raw, &mut sel.0, c.as_ptr(), flags as i32);
            ffi::selection_solvables(self.raw, &mut sel.0, &mut found.0);
        }
        Ok(found.items().first().map(|&p| self.describe(p)))
    }

    /// The solvables providing `dep` (libsolv's inline `pool_whatprovides`, which bindgen
    /// cannot bind: a dependency id indexes `whatprovides`, a relation id `whatprovides_rel`,
    /// both offsets into the zero-terminated `whatprovidesdata`).
    fn providers(&self, dep: ffi::Id) -> Vec<ffi::Id> {
        const RELDEP: u32 = 0x8000_0000;
        // SAFETY: the pool is prepared (whatprovides built) before this is called; offsets
        // returned by libsolv index its own data array, which ends each list with 0.
        unsafe {
            let pool = &*self.raw;
            let off = if (dep as u32) & RELDEP == 0 {
                *pool.whatprovides.add(dep as usize)
            } else {
                *pool.whatprovides_rel.add(((dep as u32) ^ RELDEP) as usize)
            };
            let off = if off != 0 { off } else { ffi::pool_addrelproviders(self.raw, dep) as ffi::Offset };
            let mut out = Vec::new();
            let mut p = self.raw.as_ref().map(|pl| pl.whatprovidesdata.add(off as usize)).unwrap_or(std::ptr::null_mut());
            while !p.is_null() && *p != 0 {
                out.push(*p);
                p = p.add(1);
            }
            out
        }
    }

    /// For each package in `erase`, the installed packages outside `erase` with a requirement
    /// only it (among installed packages) satisfies.
    fn needed_by(&self, erase: &[ffi::Id]) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        // SAFETY: valid pool; solvable ids come from it; queues are owned here.
        unsafe {
            let installed = (*self.raw).installed;
            if installed.is_null() {
                return out;
            }
            let mut by: Vec<(ffi::Id, Vec<String>)> = erase.iter().map(|&e| (e, Vec::new())).collect();
            let (start, end) = ((*installed).start, (*installed).end);
            for p in start..end {
                let s = self.solvable(p);
                if (*s).repo != installed || erase.contains(&p) {
                    continue;
                }
                let mut reqs = Queue::new();
                // marker 0: plain and pre/post requires alike
                ffi::solvable_lookup_deparray(s, ffi::solv_knownid_SOLVABLE_REQUIRES as ffi::Id, &mut reqs.0, 0);
                for &dep in reqs.items() {
                    let inst: Vec<ffi::Id> =
                        self.providers(dep).into_iter().filter(|&q| (*self.solvable(q)).repo == installed).collect();
                    if inst.is_empty() || inst.iter().any(|q| !erase.contains(q)) {
                        continue;
                    }
                    for (e, list) in by.iter_mut() {
                        if inst.contains(e) {
                            let d = self.describe(p);
                            if !list.contains(&d) {
                                list.push(d);
                            }
                        }
                    }
                }
            }
            for (e, list) in by {
                if !list.is_empty() {
                    out.push((self.describe(e), list));
                }
            }
        }
        out
    }

    /// Solve installing `requests` on top of the installed system.
    pub fn solve(&mut self, requests: &[String], opts: SolveOptions) -> Result<std::result::Result<Vec<Pick>, SolveError>> {
        self.prepare();
        let mut jobs = Queue::new();
        let mut missing = Vec::new();
        for r in requests {
            let mut sel = Queue::new();
            let mut flags = ffi::SELECTION_NAME | ffi::SELECTION_PROVIDES | ffi::SELECTION_CANON | ffi::SELECTION_DOTARCH | ffi::SELECTION_REL;
            if r.starts_with('/') {
                flags |= ffi::SELECTION_FILELIST;
            }
            let c = cstr(r)?;
            // SAFETY: valid pool, queue and string.
            unsafe { ffi::selection_make(self.raw, &mut sel.0, c.as_ptr(), flags as i32) };
            if sel.items().is_empty() {
                missing.push(r.clone());
                continue;
            }
            for pair in sel.items().chunks(2) {
                if let [how, what] = pair {
                    jobs.push2(*how | ffi::SOLVER_INSTALL as ffi::Id, *what);
                }
            }
        }
        let mut erase_ids = Vec::new();
        for name in &opts.erase {
            let mut sel = Queue::new();
            let c = cstr(name)?;
            let flags = ffi::SELECTION_NAME | ffi::SELECTION_INSTALLED_ONLY;
            // SAFETY: valid pool, queues and string.
            unsafe {
                ffi::selection_make(self.raw, &mut sel.0, c.as_ptr(), flags as i32);
                let mut found = Queue::new();
                ffi::selection_solvables(self.raw, &mut sel.0, &mut found.0);
                erase_ids.extend_from_slice(found.items());
            }
            if sel.items().is_empty() {
                missing.push(format!("{name} (not installed)"));
                continue;
            }
            for pair in sel.items().chunks(2) {
                if let [how, what] = pair {
                    jobs.push2(*how | ffi::SOLVER_ERASE as ffi::Id, *what);
                }
            }
        }
        if !missing.is_empty() {
            return Ok(Err(SolveError::Missing(missing)));
        }
        // local packages: a throwaway repository, freed after this solve (the pool is cached)
        let mut local_repo: *mut ffi::Repo = std::ptr::null_mut();
        let mut local_ids = Vec::new();
        let mut replaced_names = Vec::new();
        if !opts.local.is_empty() {
            local_repo = self.new_repo("@local")?;
            for f in &opts.local {
                let c = path_cstr(f)?;
                // SAFETY: valid repo and path; libsolv reads the file's headers.
                let id = unsafe { ffi::repo_add_rpm(local_repo, c.as_ptr(), 0) };
                if id == 0 {
                    // SAFETY: the repo was created above and nothing refers to it yet.
                    unsafe { ffi::repo_free(local_repo, 1) };
                    self.prepared = false;
                    return Err(self.error(&format!("reading the header of {}", f.display())));
                }
                local_ids.push(id);
                replaced_names.push(self.id2str(unsafe { (*self.solvable(id)).name }));
                jobs.push2((ffi::SOLVER_INSTALL | ffi::SOLVER_SOLVABLE) as ffi::Id, id);
            }
            // SAFETY: valid repo.
            unsafe { ffi::repo_internalize(local_repo) };
            self.prepared = false;
            self.prepare();
        }
        let result = self.run_solver(&mut jobs, &opts, &erase_ids, &replaced_names, local_repo);
        if !local_repo.is_null() {
            // SAFETY: created above; freeing it (and reusing its ids) leaves the pool as it was.
            unsafe { ffi::repo_free(local_repo, 1) };
            self.prepared = false;
        }
        result
    }

    fn run_solver(
        &mut self,
        jobs: &mut Queue,
        opts: &SolveOptions,
        erase_ids: &[ffi::Id],
        replaced_names: &[String],
        local_repo: *mut ffi::Repo,
    ) -> Result<std::result::Result<Vec<Pick>, SolveError>> {

        // SAFETY: the solver is created, used and freed here.
        unsafe {
            let solver = ffi::solver_create(self.raw);
            ffi::solver_set_flag(solver, ffi::SOLVER_FLAG_IGNORE_RECOMMENDED as i32, (!opts.weak_deps) as i32);
            let nproblems = ffi::solver_solve(solver, &mut jobs.0);
            if nproblems > 0 && !erase_ids.is_empty() {
                // a removal breaks installed packages: name them per removed package
                ffi::solver_free(solver);
                let needed = self.needed_by(erase_ids);
                if !needed.is_empty() {
                    return Ok(Err(SolveError::NeededBy(needed)));
                }
                let solver = ffi::solver_create(self.raw);
                let n = ffi::solver_solve(solver, &mut jobs.0);
                let mut problems = Vec::new();
                for i in 1..=n {
                    problems.push(to_string(ffi::solver_problem2str(solver, i)));
                }
                ffi::solver_free(solver);
                return Ok(Err(SolveError::Problems(problems)));
            }
            if nproblems > 0 {
                let mut problems = Vec::new();
                for i in 1..=nproblems {
                    problems.push(to_string(ffi::solver_problem2str(solver, i)));
                }
                ffi::solver_free(solver);
                return Ok(Err(SolveError::Problems(problems)));
            }
            let trans = ffi::solver_create_transaction(solver);
            ffi::transaction_order(trans, 0);
            let installed = (*self.raw).installed;
            let steps = &(*trans).steps;
            let ids: Vec<ffi::Id> = if steps.count > 0 && !steps.elements.is_null() {
                std::slice::from_raw_parts(steps.elements, steps.count as usize).to_vec()
            } else {
                Vec::new()
            };
            let mut picks = Vec::new();
            let mut base_changes = Vec::new();
            for p in ids {
                let s = self.solvable(p);
                if !installed.is_null() && (*s).repo == installed && erase_ids.contains(&p) {
                    continue;
                }
                // a local package, or the base package a local replacement takes over
                if !local_repo.is_null() && (*s).repo == local_repo {
                    continue;
                }
                if !installed.is_null() && (*s).repo == installed && replaced_names.contains(&self.id2str((*s).name)) {
                    continue;
                }
                if !installed.is_null() && (*s).repo == installed {
                    let t = ffi::transaction_type(trans, p, 0) as u32;
                    let what = match t {
                        ffi::SOLVER_TRANSACTION_ERASE => "removed",
                        ffi::SOLVER_TRANSACTION_UPGRADED => "upgraded",
                        ffi::SOLVER_TRANSACTION_DOWNGRADED => "downgraded",
                        ffi::SOLVER_TRANSACTION_OBSOLETED => "replaced",
                        _ => "changed",
                    };
                    base_changes.push(format!("{} would be {what}", self.describe(p)));
                } else {
                    picks.push(self.pick(p));
                }
            }
            ffi::transaction_free(trans);
            ffi::solver_free(solver);
            if !erase_ids.is_empty() && !base_changes.is_empty() {
                let needed = self.needed_by(erase_ids);
                if !needed.is_empty() {
                    return Ok(Err(SolveError::NeededBy(needed)));
                }
            }
            if !base_changes.is_empty() {
                return Ok(Err(SolveError::ChangesBase(base_changes)));
            }
            Ok(Ok(picks))
        }
    }
}

// SAFETY: libsolv keeps no thread-local state; a pool may move between threads as long as one
// thread uses it at a time, which `&mut self` methods and the cache's mutex ensure.
unsafe impl Send for Pool {}

impl Drop for Pool {
    fn drop(&mut self) {
        // SAFETY: we own the pool; the considered map (if any) was allocated by us with
        // libsolv's allocator and is released here, before the pool, so it is freed once.
        unsafe {
            let m = (*self.raw).considered;
            if !m.is_null() {
                (*self.raw).considered = std::ptr::null_mut();
                ffi::map_free(m);
                ffi::solv_free(m.cast());
            }
            ffi::pool_free(self.raw)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn pkg(dir: &Path, name: &str, version: &str, provides: &[&str], requires: &[(&str, Option<&str>)]) {
        let mut b = rpm::PackageBuilder::new(name, version, "MIT", "x86_64", "test");
        b.release("1");
        b.with_file_contents(format!("{name}\n").into_bytes(), rpm::FileOptions::new(format!("/usr/bin/{name}")).permissions(0o755))
            .unwrap();
        for p in provides {
            b.provides(rpm::Dependency::any(*p));
        }
        for (r, min) in requires {
            b.requires(match min {
                Some(v) => rpm::Dependency::greater_eq(*r, *v),
                None => rpm::Dependency::any(*r),
            });
        }
        b.build().unwrap().write_file(dir.join(format!("{name}-{version}-1.x86_64.rpm"))).unwrap();
    }

    fn run(c: &mut Command) {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn find(dir: &Path, suffix: &str) -> std::path::PathBuf {
        std::fs::read_dir(dir.join("repodata")).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(suffix)).unwrap()
    }

    /// A base rpmdb with `libc-1.0` and a repository with newer libc, libpcap, tcpdump.
    fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("base-rpms");
        let repo = d.path().join("repo");
        let root = d.path().join("root");
        for p in [&base, &repo, &root] {
            std::fs::create_dir_all(p).unwrap();
        }
        pkg(&base, "libc", "1.0", &["libc.so.6()(64bit)"], &[]);
        pkg(&repo, "libc", "2.0", &["libc.so.6()(64bit)"], &[]);
        pkg(&repo, "libpcap", "1.10", &["libpcap.so.1()(64bit)"], &[("libc.so.6()(64bit)", None)]);
        pkg(&repo, "tcpdump", "4.99", &[], &[("libpcap.so.1()(64bit)", None)]);
        pkg(&repo, "needsnewlibc", "1", &[], &[("libc", Some("2.0"))]);
        run(Command::new("createrepo_c").arg("-q").arg(&repo));
        let r = root.display().to_string();
        run(Command::new("rpm").args(["--root", &r, "--dbpath", "/usr/share/rpm", "--initdb"]));
        run(Command::new("rpm")
            .args(["--root", &r, "--dbpath", "/usr/share/rpm", "-i", "--justdb", "--nodeps", "--ignorearch", "--ignoreos"])
            .arg(base.join("libc-1.0-1.x86_64.rpm")));
        let primary = find(&repo, "primary.xml.gz");
        let filelists = find(&repo, "filelists.xml.gz");
        (d, root, primary, filelists)
    }

    fn pool(root: &Path, primary: &Path, filelists: &Path, cache: Option<&Path>) -> Pool {
        let mut p = Pool::new("x86_64").unwrap();
        p.set_installed_rpmdb(root, cache.map(|c| c.join("system.solv")).as_deref()).unwrap();
        p.add_rpmmd("fixture", primary, Some(filelists), cache.map(|c| c.join("fixture.solv")).as_deref(), 99).unwrap();
        p
    }

    fn names(r: &[Pick]) -> Vec<String> {
        let mut v: Vec<String> = r.iter().map(Pick::nevra).collect();
        v.sort();
        v
    }

    #[test]
    fn solves_names_provides_and_files_against_the_base() {
        let (d, root, primary, filelists) = setup();
        for cache in [None, Some(d.path().join("cache")), Some(d.path().join("cache"))] {
            let mut p = pool(&root, &primary, &filelists, cache.as_deref());
            let got = p.solve(&["tcpdump".into()], SolveOptions::default()).unwrap().unwrap();
            assert_eq!(names(&got), ["libpcap-1.10-1.x86_64", "tcpdump-4.99-1.x86_64"], "base libc satisfies libpcap; it is not upgraded");
            let t = got.iter().find(|x| x.name == "tcpdump").unwrap();
            assert_eq!(t.location, "tcpdump-4.99-1.x86_64.rpm");
            assert_eq!(t.checksum.as_ref().map(|c| c.0.as_str()), Some("sha256"));
            assert_eq!(t.repo, "fixture");
        }
        let mut p = pool(&root, &primary, &filelists, None);
        let got = p.solve(&["libpcap.so.1()(64bit)".into()], SolveOptions::default()).unwrap().unwrap();
        assert_eq!(names(&got), ["libpcap-1.10-1.x86_64"]);
        let mut p = pool(&root, &primary, &filelists, None);
        let got = p.solve(&["/usr/bin/tcpdump".into()], SolveOptions::default()).unwrap().unwrap();
        assert_eq!(names(&got), ["libpcap-1.10-1.x86_64", "tcpdump-4.99-1.x86_64"]);
    }

    #[test]
    fn excludes_and_includepkgs() {
        let (_d, root, primary, filelists) = setup();
        let mut p = pool(&root, &primary, &filelists, None);
        p.filter_repo("fixture", &["libp*".into()], false).unwrap();
        let e = p.solve(&["tcpdump".into()], SolveOptions::default()).unwrap().unwrap_err().to_string();
        assert!(e.contains("nothing provides libpcap.so.1()(64bit) needed by tcpdump"), "the excluded dependency is invisible: {e}");
        let mut p = pool(&root, &primary, &filelists, None);
        p.filter_repo("fixture", &["tcpdump".into(), "libpcap".into()], true).unwrap();
        assert_eq!(names(&p.solve(&["tcpdump".into()], SolveOptions::default()).unwrap().unwrap()).len(), 2);
        let e = p.solve(&["needsnewlibc".into()], SolveOptions::default()).unwrap().unwrap_err().to_string();
        assert_eq!(e, "no package provides: needsnewlibc", "outside includepkgs is invisible");
    }

    #[test]
    fn unknown_names_together_and_base_changes_by_name() {
        let (_d, root, primary, filelists) = setup();
        let mut p = pool(&root, &primary, &filelists, None);
        let e = p.solve(&["nope".into(), "tcpdump".into(), "alsonope".into()], SolveOptions::default()).unwrap().unwrap_err();
        assert_eq!(e.to_string(), "no package provides: nope, alsonope");
        let mut p = pool(&root, &primary, &filelists, None);
        let e = p.solve(&["needsnewlibc".into()], SolveOptions::default()).unwrap().unwrap_err().to_string();
        assert!(e.contains("libc-1.0-1.x86_64 would be upgraded"), "{e}");
    }

    #[test]
    fn removing_base_packages_names_what_needs_them() {
        let (d, root, primary, filelists) = setup();
        // the base also has an application needing libc
        let more = d.path().join("more");
        std::fs::create_dir_all(&more).unwrap();
        pkg(&more, "app", "1", &[], &[("libc.so.6()(64bit)", None)]);
        let r = root.display().to_string();
        run(Command::new("rpm")
            .args(["--root", &r, "--dbpath", "/usr/share/rpm", "-i", "--justdb", "--nodeps", "--ignorearch", "--ignoreos"])
            .arg(more.join("app-1-1.x86_64.rpm")));
        let erase = |names: &[&str]| SolveOptions { erase: names.iter().map(|n| n.to_string()).collect(), ..Default::default() };
        let mut p = pool(&root, &primary, &filelists, None);
        let e = p.solve(&[], erase(&["libc"])).unwrap().unwrap_err().to_string();
        assert_eq!(e, "libc-1.0-1.x86_64 is needed by app-1-1.x86_64");
        let mut p = pool(&root, &primary, &filelists, None);
        assert!(p.solve(&[], erase(&["libc", "app"])).unwrap().unwrap().is_empty());
        // removed and replaced from a repository in one request
        let mut p = pool(&root, &primary, &filelists, None);
        let got = p.solve(&["libc".into()], erase(&["libc"])).unwrap().unwrap();
        assert_eq!(names(&got), ["libc-2.0-1.x86_64"]);
        let mut p = pool(&root, &primary, &filelists, None);
        let e = p.solve(&[], erase(&["nothere"])).unwrap().unwrap_err().to_string();
        assert!(e.contains("nothere (not installed)"), "{e}");
    }
}
