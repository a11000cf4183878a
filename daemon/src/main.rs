//! `layerd`: the daemon. Owns `org.layerd.Layerd1` on the system bus.
//!
//! Start-up is deliberately tiny: check the sysroot path exists and looks like an ostree
//! sysroot, claim the bus name, tell systemd we are ready; the sysroot is loaded right after,
//! off the path to readiness (callers asking for status before that just wait for it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use layerd::engine::{Config, Engine};
use layerd::sysroot::SysrootPath;
use layerd_interfaces::{BUS_NAME, OBJECT_PATH};

#[derive(Parser, Debug)]
#[command(name = "layerd", version, about = "layerd: changes an ostree-based OS safely (D-Bus service)")]
struct Args {
    /// The sysroot to manage. `/` is the booted system; any other path is an offline, unbooted
    /// sysroot whose default deployment stands in for the booted one.
    #[arg(long, default_value = "/")]
    sysroot: PathBuf,
    /// The configuration file (see docs/config.md).
    #[arg(long, default_value = layerd::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Command run when a transaction asks to reboot, split on spaces [config: reboot-command].
    #[arg(long)]
    reboot_command: Option<String>,
    /// Seconds a finished transaction's result stays readable [config: result-ttl-seconds].
    #[arg(long)]
    result_ttl: Option<u64>,
    /// Exit after this many seconds with nothing to do; 0 never [config: idle-exit-seconds].
    #[arg(long)]
    idle_exit: Option<u64>,
    /// Queue changes behind a running one unless the caller says otherwise [config: wait-by-default].
    #[arg(long)]
    wait_by_default: bool,
    /// Directory of the transaction journal [config: state-dir].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory of repository metadata and solver caches [config: cache-dir].
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Serve the gRPC API on this unix socket [config: grpc, grpc-socket].
    #[arg(long)]
    grpc_socket: Option<PathBuf>,
    /// Members of this group may change the system over gRPC [config: grpc-group].
    #[arg(long)]
    grpc_group: Option<String>,
    /// Also serve gRPC on TCP with mutual TLS [config: grpc-tcp-listen, grpc-tls-*].
    #[arg(long)]
    grpc_tcp_listen: Option<String>,
    #[arg(long)]
    grpc_tls_cert: Option<PathBuf>,
    #[arg(long)]
    grpc_tls_key: Option<PathBuf>,
    #[arg(long)]
    grpc_tls_client_ca: Option<PathBuf>,
}

/// The gRPC settings from flags and the file (flags win); errors name the key.
fn grpc_config(args: &Args, file: &layerd::config::FileConfig) -> anyhow::Result<layerd::grpc::GrpcConfig> {
    let socket = match (&args.grpc_socket, file.grpc.unwrap_or(false)) {
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(file.grpc_socket.clone().unwrap_or_else(|| PathBuf::from("/run/layerd/layerd.sock"))),
        (None, false) => None,
    };
    let mode = match &file.grpc_socket_mode {
        Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8).map_err(|_| anyhow::anyhow!("grpc-socket-mode {m:?}: not an octal mode like \"0660\""))?,
        None => 0o666,
    };
    let tcp = match args.grpc_tcp_listen.clone().or(file.grpc_tcp_listen.clone()) {
        None => None,
        Some(listen) => {
            let need = |flag: &Option<PathBuf>, key: &Option<PathBuf>, name: &str| {
                flag.clone().or(key.clone()).ok_or_else(|| anyhow::anyhow!("grpc-tcp-listen needs {name} (TCP is served with mutual TLS only)"))
            };
            Some(layerd::grpc::TcpConfig {
                listen: listen.parse().map_err(|e| anyhow::anyhow!("grpc-tcp-listen {listen:?}: {e}"))?,
                cert: need(&args.grpc_tls_cert, &file.grpc_tls_cert, "grpc-tls-cert")?,
                key: need(&args.grpc_tls_key, &file.grpc_tls_key, "grpc-tls-key")?,
                client_ca: need(&args.grpc_tls_client_ca, &file.grpc_tls_client_ca, "grpc-tls-client-ca")?,
            })
        }
    };
    Ok(layerd::grpc::GrpcConfig { socket, socket_mode: mode, group: args.grpc_group.clone().or(file.grpc_group.clone()), tcp })
}

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    // Everything layerd does (the sysroot lock and writes, mounts, scriptlets as package owners)
    // needs root; without it the first change would fail half-way with an obscure EPERM.
    if !rustix::process::geteuid().is_root() {
        let msg = "layerd must run as root (it writes the ostree sysroot, mounts and runs package scriptlets); \
                   start it as the system service (layerd.service) or with sudo";
        log::error!("{msg}");
        eprintln!("layerd: {msg}");
        return ExitCode::from(1);
    }
    // Refuse a sysroot we cannot manage before owning the name, with a message naming it.
    let sysroot = match SysrootPath::check(&args.sysroot) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            eprintln!("layerd: {e}");
            return ExitCode::from(1);
        }
    };
    // Before any thread exists (a mount namespace is per thread): on a booted system, a private
    // mount namespace in which libostree may remount a read-only /sysroot (and /boot)
    // read-write for its writes, as rpm-ostree and `ostree admin` do; host mounts still
    // propagate in. The live /usr overlay of apply-live is made in PID 1's namespace.
    if sysroot.path() == std::path::Path::new("/") && std::path::Path::new("/run/ostree-booted").exists() {
        if let Err(e) = layerd::sysroot::enter_private_mount_namespace() {
            log::warn!("no private mount namespace ({e}); a read-only /sysroot will not be writable");
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("layerd: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let file = match layerd::config::load(&args.config) {
        Ok(f) => f,
        Err(e) => {
            log::error!("{e}");
            eprintln!("layerd: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(args, file, sysroot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("layerd: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args, file: layerd::config::FileConfig, sysroot: SysrootPath) -> anyhow::Result<()> {
    let grpc = grpc_config(&args, &file)?;
    let defaults = Config::default();
    let config = Config {
        reboot_command: match (&args.reboot_command, file.reboot_command) {
            (Some(c), _) => c.split_whitespace().map(str::to_string).collect(),
            (None, Some(c)) => c,
            (None, None) => defaults.reboot_command,
        },
        result_ttl: Duration::from_secs(args.result_ttl.or(file.result_ttl_seconds).unwrap_or(300)),
        state_dir: args.state_dir.clone().or(file.state_dir).unwrap_or(defaults.state_dir),
        wait_by_default: args.wait_by_default || file.wait_by_default.unwrap_or(false),
        repomd_cache: args.cache_dir.clone().or(file.cache_dir.clone()).unwrap_or(defaults.cache_dir.clone()).join("repomd"),
        cache_dir: args.cache_dir.clone().or(file.cache_dir).unwrap_or(defaults.cache_dir.clone()),
        weak_deps: file.install_weak_deps.unwrap_or(true),
    };
    let mut idle_exit = Duration::from_secs(args.idle_exit.or(file.idle_exit_seconds).unwrap_or(60));
    // gRPC clients cannot start layerd again unless systemd holds the socket (layerd.socket):
    // listeners layerd opens itself keep it running
    let activated = layerd::grpc::activated_socket();
    // (a TCP listener is never socket-activated: it keeps layerd running too)
    if ((activated.is_none() && grpc.socket.is_some()) || grpc.tcp.is_some()) && !idle_exit.is_zero() {
        log::info!("gRPC listeners opened by layerd itself: idle exit disabled");
        idle_exit = Duration::ZERO;
    }
    let engine = Engine::new(sysroot.clone(), config);
    // before any client can reach us, so the recovery is the first transaction to run
    engine.recover_if_interrupted();
    let conn = zbus::connection::Builder::system()
        .context("connecting to the system bus")?
        .serve_at(OBJECT_PATH, layerd::dbus::Layerd1::new(engine.clone()))?
        .build()
        .await
        .context("connecting to the system bus")?;
    own_name(&conn)
        .await
        .with_context(|| format!("owning {BUS_NAME} on the system bus (is another layerd running?)"))?;
    if activated.is_some() || grpc.socket.is_some() || grpc.tcp.is_some() {
        layerd::grpc::serve(engine.clone(), grpc, activated).await.context("starting the gRPC API")?;
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    log::info!("layerd {} ready as {BUS_NAME}, managing {}", layerd::VERSION, sysroot.path().display());

    layerd::dbus::spawn_mirrors(conn.clone(), engine.clone());
    engine.refresh().await;
    let booted = engine.snapshot().await.map(|s| s.is_booted).unwrap_or(false);
    layerd::watch::spawn(engine.clone(), booted);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let tick = (idle_exit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut idle_check = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = term.recv() => { log::info!("SIGTERM: stopping"); break; }
            _ = tokio::signal::ctrl_c() => { log::info!("SIGINT: stopping"); break; }
            _ = idle_check.tick(), if !idle_exit.is_zero() => {
                if engine.idle_for().is_some_and(|d| d >= idle_exit) {
                    // Release the name first: from here on D-Bus activation starts a new layerd
                    // for any new call, and one that raced us is re-checked below.
                    let _ = conn.release_name(BUS_NAME).await;
                    if engine.idle_for().is_some_and(|d| d >= idle_exit) {
                        log::info!("idle for {} s: exiting", idle_exit.as_secs());
                        break;
                    }
                    if let Err(e) = own_name(&conn).await {
                        log::warn!("could not own {BUS_NAME} again ({e}); another layerd took over, stopping");
                        break;
                    }
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    engine.shutdown(Duration::from_secs(30)).await;
    drop(conn);
    Ok(())
}

/// Own the bus name without replacing another owner and without queueing: a second layerd must
/// fail, not silently take over (two writers would share one journal and sysroot).
async fn own_name(conn: &zbus::Connection) -> anyhow::Result<()> {
    use zbus::fdo::{RequestNameFlags, RequestNameReply};
    match conn.request_name_with_flags(BUS_NAME, RequestNameFlags::DoNotQueue.into()).await? {
        RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner => Ok(()),
        other => anyhow::bail!("the name is taken ({other:?})"),
    }
}

/// Journal when started by systemd with the journal as output, stderr otherwise.
fn init_logging() {
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<log::LevelFilter>().ok())
        .unwrap_or(log::LevelFilter::Info);
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(j) = systemd_journal_logger::JournalLog::new() {
            if j.with_syslog_identifier("layerd".into()).install().is_ok() {
                log::set_max_level(level);
                return;
            }
        }
    }
    if log::set_boxed_logger(Box::new(StderrLog)).is_ok() {
        log::set_max_level(level);
    }
}

struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!("layerd[{}]: {}: {}", std::process::id(), record.level(), record.args());
        }
    }
    fn flush(&self) {}
}
