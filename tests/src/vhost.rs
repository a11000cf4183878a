//! A "booted" virtual host: a deployment running as `/` in a bubblewrap namespace.
//!
//! Layout inside the namespace (what layerd sees, as on a real node):
//! - `/` is the deployment directory, `/sysroot` the sysroot, `/boot` its `boot`, `/var` the
//!   stateroot's var, `/run` a fresh directory per boot holding `ostree-booted`, `/proc` a new
//!   procfs with `/proc/cmdline` replaced by the boot entry's options (`ostree=...`).
//! - `/usr` is a read-only overlay of the deployment's `/usr` over the host's, so the host's
//!   tools and libraries (ostree, layerd's shared libraries) run while every file the
//!   deployment has wins. `/run/host/bin` holds the layerd binaries under test, and
//!   `/run/host/fixture-repo` the fixture OS repo (the sysroot's `fixture` remote).
//! - `/run/dbus/system_bus_socket` is the private bus (the daemon runs outside).
//!
//! The namespace's pid 1 is bubblewrap's reaper; its child is a busybox shell that mounts the
//! `/usr` overlay and then waits on a pipe held by the harness, so the namespace (and every
//! process in it) ends when the harness drops it or dies. Processes are started inside with
//! `nsenter`.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::io::FromRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::bus::Bus;
use crate::cmd::{check, describe};
use crate::fixture::{FixtureRepo, OsSpec};
use crate::sysroot::{remove_tree, Sysroot, FIXTURE_REPO_IN_HOST};

/// Where the layerd binaries appear inside the host.
pub const BIN_IN_HOST: &str = "/run/host/bin";
const PATH_IN_HOST: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin";

static COUNTER: AtomicU32 = AtomicU32::new(0);

struct Boot {
    bwrap: Child,
    /// Host pid of the namespace's pid 1.
    init_pid: i32,
    /// Dropping this ends the namespace.
    init_stdin: Option<ChildStdin>,
    rundir: PathBuf,
}

/// A running layerd: inside the host (the child is `nsenter`, layerd its child) or offline
/// (the child is layerd itself).
struct Layerd {
    child: Child,
}

pub struct VirtualHost {
    pub dir: PathBuf,
    pub fixture: FixtureRepo,
    pub sysroot: Sysroot,
    pub bus: Bus,
    boot: Option<Boot>,
    layerd: Option<Layerd>,
    boots: u32,
    /// Extra arguments passed to every layerd started.
    pub layerd_args: Vec<String>,
}

impl VirtualHost {
    /// Create a virtual host under `base` (a fresh directory named after `name`): fixture repo
    /// with OS version "1.0", a sysroot with it deployed, and a private bus. Not booted yet.
    pub fn new(base: &Path, name: &str) -> Result<Self> {
        Self::with_os(base, name, &OsSpec::new("1.0"))
    }

    /// [`VirtualHost::new`] with the first OS version described by `spec`.
    pub fn with_os(base: &Path, name: &str, spec: &OsSpec) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the virtual host needs root (bubblewrap with all capabilities, overlay and bind mounts): run `make test` / `make demo` as root");
        }
        sweep_stale(base);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{name}-{}-{n}", std::process::id()));
        if dir.exists() {
            remove_tree(&dir)?;
        }
        fs::create_dir_all(&dir)?;
        let dir = fs::canonicalize(&dir)?;
        let fixture = FixtureRepo::create(&dir.join("fixture"))?;
        fixture.commit(spec)?;
        let sysroot = Sysroot::create(&dir.join("sysroot"), &fixture)?;
        let bus = Bus::start(&dir)?;
        Ok(VirtualHost { dir, fixture, sysroot, bus, boot: None, layerd: None, boots: 0, layerd_args: vec![] })
    }

    /// Replace the private bus (before booting) with one configured like a distribution's
    /// system bus plus layerd's shipped policy, its `layerd` group set to `group`.
    pub fn use_system_like_bus(&mut self, group: &str) -> Result<()> {
        if self.boot.is_some() {
            bail!("the bus must be chosen before booting");
        }
        self.bus = Bus::start_system_like(&self.dir, "bus-system", group)?;
        Ok(())
    }

    /// Boot the default deployment (the one the highest-versioned boot entry names).
    pub fn boot(&mut self) -> Result<()> {
        if self.boot.is_some() {
            bail!("already booted");
        }
        self.boots += 1;
        let bootdir = self.dir.join(format!("boot-{}", self.boots));
        let rundir = bootdir.join("run");
        fs::create_dir_all(&rundir)?;
        fs::write(rundir.join("ostree-booted"), "")?;
        let options = self.sysroot.default_boot_options()?;
        let deployment = self.sysroot.deployment_for_options(&options)?;
        let cmdline = bootdir.join("cmdline");
        fs::write(&cmdline, format!("BOOT_IMAGE=/vmlinuz {options}\n"))?;
        let sysroot = &self.sysroot.path;

        let (info_r, info_w) = pipe()?;
        let mut c = Command::new("bwrap");
        c.args(["--unshare-pid", "--cap-add", "ALL", "--die-with-parent"])
            .arg("--bind").arg(&deployment).arg("/")
            .arg("--bind").arg(sysroot).arg("/sysroot")
            .arg("--bind").arg(sysroot.join("boot")).arg("/boot")
            .args(["--proc", "/proc", "--dev", "/dev"])
            .arg("--bind").arg(&rundir).arg("/run")
            .arg("--ro-bind").arg(&cmdline).arg("/proc/cmdline")
            .arg("--bind").arg(self.sysroot.stateroot_var()).arg("/var")
            .args(["--tmpfs", "/tmp"])
            .args(["--ro-bind", "/usr", "/run/host/usr"])
            .arg("--ro-bind").arg(crate::bin_dir()).arg(BIN_IN_HOST)
            .arg("--ro-bind").arg(&self.fixture.path).arg(FIXTURE_REPO_IN_HOST)
            .arg("--bind").arg(&self.bus.socket_dir).arg("/run/dbus")
            .args(["--info-fd", &info_w.to_string()])
            .args(["--setenv", "PATH", PATH_IN_HOST])
            .args([
                "/usr/bin/busybox",
                "sh",
                "-c",
                "busybox mount -t overlay overlay -o ro,lowerdir=/usr:/run/host/usr /usr || exit 1; echo ready; exec busybox cat >/dev/null",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(bootdir.join("bwrap.log"))?);
        // SAFETY: only async-signal-safe fcntl between fork and exec, to let bwrap inherit the
        // write end of the info pipe.
        unsafe {
            c.pre_exec(move || {
                if libc::fcntl(info_w, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = c.spawn();
        // SAFETY: info_w is our own fd from pipe(); closing our copy after the spawn.
        unsafe { libc::close(info_w) };
        let mut bwrap = spawned.context("starting bwrap (is bubblewrap installed?)")?;
        // SAFETY: info_r is our own fd from pipe(), owned by the File from here on.
        let mut info = unsafe { fs::File::from_raw_fd(info_r) };
        let mut stdout = BufReader::new(bwrap.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            let _ = bwrap.kill();
            let _ = bwrap.wait();
            bail!(
                "booting {} failed: {}",
                deployment.display(),
                fs::read_to_string(bootdir.join("bwrap.log")).unwrap_or_default()
            );
        }
        let mut info_text = String::new();
        let mut buf = [0u8; 256];
        while !info_text.contains('}') {
            let n = info.read(&mut buf)?;
            if n == 0 {
                break;
            }
            info_text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let v: serde_json::Value = serde_json::from_str(info_text.trim())
            .with_context(|| format!("bwrap info {info_text:?}"))?;
        let init_pid = v["child-pid"].as_i64().ok_or_else(|| anyhow!("no child-pid in {info_text}"))? as i32;
        let init_stdin = bwrap.stdin.take();
        self.boot = Some(Boot { bwrap, init_pid, init_stdin, rundir });
        Ok(())
    }

    /// The host-side path of the booted host's `/run`.
    pub fn rundir(&self) -> Option<&Path> {
        self.boot.as_ref().map(|b| b.rundir.as_path())
    }

    fn booted(&self) -> Result<&Boot> {
        self.boot.as_ref().ok_or_else(|| anyhow!("the virtual host is not booted"))
    }

    /// A command that runs inside the booted host (as root, with a clean environment).
    pub fn command_in_host(&self, program: &str) -> Result<Command> {
        let b = self.booted()?;
        let mut c = Command::new("nsenter");
        c.arg(format!("--target={}", b.init_pid))
            .args(["--mount", "--pid", "--root", "--wd", "--"])
            .arg(program)
            .env_clear()
            .env("PATH", PATH_IN_HOST)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8");
        Ok(c)
    }

    /// Run a command inside the booted host and return its output, whatever its status.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let (prog, rest) = args.split_first().ok_or_else(|| anyhow!("empty command"))?;
        let mut c = self.command_in_host(prog)?;
        c.args(rest).stdin(Stdio::null());
        c.output().with_context(|| format!("running {}", describe(&c)))
    }

    /// Run a command inside the booted host; fail unless it succeeds. Returns stdout.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let (prog, rest) = args.split_first().ok_or_else(|| anyhow!("empty command"))?;
        let mut c = self.command_in_host(prog)?;
        c.args(rest).stdin(Stdio::null());
        let out = c.output().with_context(|| format!("running {}", describe(&c)))?;
        check(&c, &out)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start layerd inside the booted host and wait until it reports `READY=1` through
    /// sd-notify (it does so once its bus name is owned).
    pub fn start_layerd(&mut self) -> Result<()> {
        let rundir = self.booted()?.rundir.clone();
        let mut c = self.command_in_host(&format!("{BIN_IN_HOST}/layerd"))?;
        c.args(&self.layerd_args).env("NOTIFY_SOCKET", "/run/layerd-notify.sock");
        self.spawn_layerd(c, &rundir.join("layerd-notify.sock"))
    }

    /// Start layerd outside any booted host on the sysroot directory (`--sysroot DIR`): the
    /// offline mode, where the default deployment stands in for the booted one.
    pub fn start_layerd_offline(&mut self) -> Result<()> {
        let notify = self.dir.join("layerd-notify.sock");
        let mut c = Command::new(crate::bin_dir().join("layerd"));
        c.arg("--sysroot")
            .arg(&self.sysroot.path)
            .arg("--state-dir")
            .arg(self.dir.join("offline-state"))
            .arg("--config")
            .arg(self.dir.join("offline-config.toml"))
            .args(&self.layerd_args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .env("NOTIFY_SOCKET", &notify);
        self.spawn_layerd(c, &notify)
    }

    fn spawn_layerd(&mut self, mut c: Command, notify_path: &Path) -> Result<()> {
        if self.layerd.is_some() {
            bail!("layerd is already running");
        }
        let _ = fs::remove_file(notify_path);
        let notify = UnixDatagram::bind(notify_path).context("binding the notify socket")?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let log = fs::OpenOptions::new().create(true).append(true).open(self.layerd_log())?;
        c.env("RUST_BACKTRACE", "1")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = c.spawn().context("starting layerd")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 512];
        loop {
            match notify.recv(&mut buf) {
                Ok(n) if String::from_utf8_lossy(&buf[..n]).lines().any(|l| l == "READY=1") => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(st) = child.try_wait()? {
                bail!("layerd exited before it was ready ({st}):\n{}", self.layerd_log_tail(40));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("layerd did not become ready in 30 s:\n{}", self.layerd_log_tail(40));
            }
        }
        self.layerd = Some(Layerd { child });
        Ok(())
    }

    /// Let the private bus start layerd inside the booted host on demand (D-Bus activation),
    /// as systemd does on a node. Its output goes to the bus's log.
    pub fn enable_activation(&self) -> Result<()> {
        let pid = self.booted()?.init_pid;
        // dbus-daemon passes its own (host-side) address in DBUS_SYSTEM_BUS_ADDRESS; inside, the
        // socket is at the standard path
        let mut exec = format!(
            "/usr/bin/nsenter --target={pid} --mount --pid --root --wd -- /usr/bin/env \
             DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket {BIN_IN_HOST}/layerd"
        );
        for a in &self.layerd_args {
            exec.push(' ');
            exec.push_str(a);
        }
        fs::write(
            self.dir.join("dbus-services/org.layerd.Layerd1.service"),
            format!("[D-BUS Service]\nName=org.layerd.Layerd1\nExec={exec}\nUser=root\n"),
        )?;
        Ok(())
    }

    /// Host pid of the running layerd (for a booted host, the child nsenter forked inside the
    /// namespace).
    pub fn layerd_pid(&self) -> Option<i32> {
        let l = self.layerd.as_ref()?;
        let pid = l.child.id();
        let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
        if exe.file_name().is_some_and(|n| n == "layerd") {
            return Some(pid as i32);
        }
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Stop layerd with `signal` and wait for it to exit (SIGKILL after 10 s).
    pub fn stop_layerd_with(&mut self, signal: i32) -> Result<Option<i32>> {
        let pid = self.layerd_pid();
        let Some(mut l) = self.layerd.take() else { return Ok(None) };
        if let Some(pid) = pid {
            // SAFETY: sending a signal to a pid we started.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = l.child.try_wait()? {
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                if let Some(pid) = pid {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = l.child.kill();
                let st = l.child.wait()?;
                return Ok(st.code());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop layerd the way systemd does (SIGTERM).
    pub fn stop_layerd(&mut self) -> Result<()> {
        self.stop_layerd_with(libc::SIGTERM).map(|_| ())
    }

    /// Whether the layerd we started is still running.
    pub fn layerd_running(&mut self) -> bool {
        match self.layerd.as_mut() {
            Some(l) => matches!(l.child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub fn layerd_log(&self) -> PathBuf {
        self.dir.join("layerd.log")
    }

    pub fn layerd_log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.layerd_log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Power off: stop layerd, then end the namespace (no finalization).
    pub fn shutdown(&mut self) -> Result<()> {
        self.stop_layerd()?;
        if let Some(mut b) = self.boot.take() {
            drop(b.init_stdin.take());
            let deadline = Instant::now() + Duration::from_secs(10);
            while b.bwrap.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = b.bwrap.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = b.bwrap.wait();
        }
        Ok(())
    }

    /// Reboot the way a node does: stop layerd, run `ostree admin finalize-staged` (what
    /// ostree-finalize-staged.service does at shutdown) when something is staged, end the
    /// namespace, boot the new default deployment and start layerd again.
    pub fn reboot(&mut self) -> Result<()> {
        self.stop_layerd()?;
        let staged = self.booted()?.rundir.join("ostree/staged-deployment");
        if staged.exists() {
            self.exec_ok(&["ostree", "admin", "finalize-staged"])
                .context("finalizing the staged deployment at shutdown")?;
        }
        self.shutdown()?;
        self.boot()?;
        self.start_layerd()
    }

    /// Commit a new fixture OS version to the fixture repo (the "update server").
    pub fn publish(&self, spec: &OsSpec) -> Result<String> {
        self.fixture.commit(spec)
    }

    /// Commit a fixture OS version to another branch of the fixture repo.
    pub fn publish_to(&self, spec: &OsSpec, branch: &str) -> Result<String> {
        self.fixture.commit_to(spec, branch)
    }

    /// Run the real `layerctl` (outside the host, on the host's private system bus).
    pub fn layerctl(&self, args: &[&str]) -> Result<Output> {
        let mut c = self.layerctl_command(args);
        c.output().with_context(|| format!("running {}", describe(&c)))
    }

    /// `layerctl` as a command, for callers that need to control its stdio or signal it.
    pub fn layerctl_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bin_dir().join("layerctl"));
        c.args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", self.bus.address())
            .env_remove("RPMOSTREE_CLIENT_ID")
            .stdin(Stdio::null());
        c
    }

    /// Run `layerctl`; fail unless it exits 0. Returns stdout.
    pub fn layerctl_ok(&self, args: &[&str]) -> Result<String> {
        let mut c = self.layerctl_command(args);
        let out = c.output()?;
        check(&c, &out).map_err(|e| anyhow!("{e}\nlayerd log:\n{}", self.layerd_log_tail(20)))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A D-Bus connection to the host's private system bus (as a client outside the host).
    pub async fn bus_connection(&self) -> Result<zbus::Connection> {
        Ok(zbus::connection::Builder::address(self.bus.address().as_str())?.build().await?)
    }

    /// `layerctl status --json`, parsed.
    pub fn status_json(&self) -> Result<serde_json::Value> {
        let out = self.layerctl_ok(&["status", "--json"])?;
        serde_json::from_str(&out).with_context(|| format!("parsing status JSON {out:?}"))
    }

    /// `ostree admin status` run inside the host (an independent view of the sysroot).
    pub fn ostree_admin_status(&self) -> Result<String> {
        self.exec_ok(&["ostree", "admin", "status"])
    }
}

impl Drop for VirtualHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = writeln!(
                std::io::stderr(),
                "--- layerd log of {} ---\n{}\n---",
                self.dir.display(),
                self.layerd_log_tail(60)
            );
        }
        let _ = self.shutdown();
        if std::env::var_os("LAYERD_KEEP_VHOST").is_none() {
            if let Err(e) = remove_tree(&self.dir) {
                let _ = writeln!(std::io::stderr(), "cleaning up {}: {e:#}", self.dir.display());
            }
        }
    }
}

/// Remove virtual hosts left behind by killed processes (named `<name>-<pid>-<n>`; their
/// destructors never ran), unless they are kept on purpose.
fn sweep_stale(base: &Path) {
    if std::env::var_os("LAYERD_KEEP_VHOST").is_some() {
        return;
    }
    let Ok(rd) = fs::read_dir(base) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let mut parts = name.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(_), Ok(pid)) = (n.parse::<u32>(), pid.parse::<u32>()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() && e.path().join("sysroot").exists() {
            let _ = remove_tree(&e.path());
        }
    }
}

/// A pipe whose read end is close-on-exec and whose write end will be inherited.
fn pipe() -> Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok((fds[0], fds[1]))
}

/// libostree's sysroot lock (an OFD lock on `ostree/lock`) held the way another ostree tool
/// (`ostree admin`, rpm-ostree, bootc) holds it; released on drop.
pub struct SysrootLock(#[allow(dead_code)] fs::File);

impl SysrootLock {
    pub fn take(h: &VirtualHost) -> Result<Self> {
        use std::os::unix::io::AsRawFd;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(h.sysroot.path.join("ostree/lock"))?;
        // SAFETY: a zeroed flock is a valid argument; fcntl reads it through a valid pointer.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) } != 0 {
            bail!("taking the sysroot lock: {}", std::io::Error::last_os_error());
        }
        Ok(SysrootLock(f))
    }
}
