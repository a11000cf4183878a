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
    /// Command run when a transaction asks to reboot, split on spaces.
    #[arg(long, default_value = "systemctl reboot")]
    reboot_command: String,
    /// Seconds a finished transaction's result stays readable.
    #[arg(long, default_value_t = 300)]
    result_ttl: u64,
}

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    // Refuse a sysroot we cannot manage before owning the name, with a message naming it.
    let sysroot = match SysrootPath::check(&args.sysroot) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{e}");
            eprintln!("layerd: {e}");
            return ExitCode::from(1);
        }
    };
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
    match rt.block_on(run(args, sysroot)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            eprintln!("layerd: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(args: Args, sysroot: SysrootPath) -> anyhow::Result<()> {
    let config = Config {
        reboot_command: args.reboot_command.split_whitespace().map(str::to_string).collect(),
        result_ttl: Duration::from_secs(args.result_ttl),
        ..Config::default()
    };
    let engine = Engine::new(sysroot.clone(), config);
    let conn = zbus::connection::Builder::system()
        .context("connecting to the system bus")?
        .serve_at(OBJECT_PATH, layerd::dbus::Layerd1::new(engine.clone()))?
        .name(BUS_NAME)?
        .build()
        .await
        .with_context(|| format!("owning {BUS_NAME} on the system bus (is another layerd running?)"))?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    log::info!("layerd {} ready as {BUS_NAME}, managing {}", layerd::VERSION, sysroot.path().display());

    layerd::dbus::spawn_mirrors(conn.clone(), engine.clone());
    engine.refresh().await;
    let booted = engine.snapshot().await.map(|s| s.is_booted).unwrap_or(false);
    layerd::watch::spawn(engine.clone(), booted);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: stopping"),
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    engine.shutdown(Duration::from_secs(30)).await;
    drop(conn);
    Ok(())
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
