//! `layerctl`: the command-line client of layerd.
//!
//! Speaks D-Bus only (no libostree): every command is a property read or a transaction on
//! `org.layerd.Layerd1`. Exit codes: 0 done, 1 failed, 77 nothing changed (with
//! `--unchanged-exit-77`) or a pending deployment exists (with `status --pending-exit-77`).

mod compat;
mod connect;
mod progress;
mod status;
mod timefmt;
mod txn;

use std::collections::HashMap;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use zbus::zvariant::Value;

/// Exit code for "nothing changed" / "pending deployment", as rpm-ostree uses.
pub const EXIT_UNCHANGED: u8 = 77;

#[derive(Parser, Debug)]
#[command(name = "layerctl", version, about = "Change this node's operating system safely (client of layerd)")]
struct Cli {
    /// Name of the calling agent, shown in status and logs (default: $RPMOSTREE_CLIENT_ID).
    #[arg(long, global = true, env = "RPMOSTREE_CLIENT_ID")]
    client_id: Option<String>,
    /// Accepted as rpm-ostree does (`-y`): layerctl never asks before changing anything.
    #[arg(short = 'y', long = "assumeyes", global = true, hide = true)]
    _assumeyes: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Options shared by every command that changes the system.
#[derive(Args, Debug, Clone)]
struct ChangeOpts {
    /// Exit with 77 when nothing changed.
    #[arg(long)]
    unchanged_exit_77: bool,
    /// If another change is running, queue behind it instead of failing.
    #[arg(long)]
    wait: bool,
}

/// Options of upgrade/rebase/deploy.
#[derive(Args, Debug, Clone)]
struct BaseOpts {
    /// Reboot once the new deployment is staged.
    #[arg(short, long)]
    reboot: bool,
    /// Only say whether something newer is available.
    #[arg(long)]
    check: bool,
    /// Like --check, and list the package differences.
    #[arg(long)]
    preview: bool,
    /// Fetch the new base; deploy nothing.
    #[arg(long)]
    download_only: bool,
    /// Stage it locked: a reboot does not apply it until `finalize-deployment`.
    #[arg(long)]
    lock_finalization: bool,
}

impl BaseOpts {
    fn apply<'a>(&self, opts: &mut HashMap<&'a str, Value<'a>>) {
        set_flags(opts, &[
            ("reboot", self.reboot),
            ("check", self.check),
            ("preview", self.preview),
            ("download-only", self.download_only),
            ("lock-finalization", self.lock_finalization),
        ]);
    }
}

/// Options of install/uninstall.
#[derive(Args, Debug, Clone)]
struct LayerOpts {
    /// Show what would change; change nothing.
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Installing what is already requested, or removing what is not layered, is not an error.
    #[arg(long)]
    idempotent: bool,
    /// Allow requesting a package the base already provides (it stays inactive).
    #[arg(long)]
    allow_inactive: bool,
    /// Let layered files replace different files of the base or of other packages.
    #[arg(long)]
    force_replacefiles: bool,
    /// Reboot once the new deployment is staged.
    #[arg(short, long)]
    reboot: bool,
    /// Resolve and download repository packages into the cache; change nothing else.
    #[arg(long)]
    download_only: bool,
    /// Use only cached metadata and packages (no network).
    #[arg(short = 'C', long)]
    cache_only: bool,
    /// Also make the new packages usable on the running system now (no reboot needed).
    #[arg(short = 'A', long)]
    apply_live: bool,
    /// With --apply-live: allow changing or removing files of running packages live.
    #[arg(long)]
    allow_replacement: bool,
}

#[derive(Subcommand, Debug)]
enum OverrideCmd {
    /// Remove base packages from the new deployment (refused while other packages need them).
    Remove {
        /// Base package names.
        #[arg(required = true)]
        packages: Vec<String>,
        /// Install these (repository names or RPM files) in the same transaction, e.g.
        /// `override remove kernel kernel-core … --install kernel-rt-core …`.
        #[arg(long = "install", value_name = "PKG")]
        install: Vec<String>,
        #[command(flatten)]
        layer: LayerOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Replace base packages with local RPMs of the same name (e.g. a hotfixed kernel).
    Replace {
        /// RPM files.
        #[arg(required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        layer: LayerOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Undo overrides: the base's own package comes back.
    Reset {
        /// Names (or NEVRAs) of overridden packages.
        packages: Vec<String>,
        /// Undo every override.
        #[arg(long)]
        all: bool,
        /// Uninstall these layered packages in the same transaction (e.g. kernel-rt back to
        /// the base kernel).
        #[arg(long = "uninstall", value_name = "PKG")]
        uninstall: Vec<String>,
        #[command(flatten)]
        layer: LayerOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
}

/// Override parts of an UpdateDeployment call.
#[derive(Default)]
struct OverrideArgs<'a> {
    remove: &'a [String],
    replace: &'a [String],
    reset: &'a [String],
    reset_all: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Show deployments and the running transaction.
    Status {
        /// Print JSON with the keys of `rpm-ostree status --json`.
        #[arg(long)]
        json: bool,
        /// Only the booted deployment.
        #[arg(short, long)]
        booted: bool,
        /// More detail per deployment.
        #[arg(short, long)]
        verbose: bool,
        /// Exit with 77 when a deployment is pending (will boot next instead of the booted one).
        #[arg(long)]
        pending_exit_77: bool,
    },
    /// Make the previous deployment the default for the next boot.
    Rollback {
        /// Reboot once the rollback is done.
        #[arg(short, long)]
        reboot: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Remove pending or rollback deployments, temporary data, cached metadata.
    Cleanup {
        /// Remove the staged or pending deployment.
        #[arg(short, long)]
        pending: bool,
        /// Remove rollback deployments (pinned ones are kept).
        #[arg(short, long)]
        rollback: bool,
        /// Remove temporary data and prune unreferenced objects.
        #[arg(short, long)]
        base: bool,
        /// Remove cached repository metadata.
        #[arg(short = 'm', long)]
        repomd: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Layer packages onto a new deployment: repository packages (names, NEVRAs, provides,
    /// file paths; dependencies solved) and local RPM files (anything ending in `.rpm`).
    Install {
        /// `htop`, `'libpcap.so.1()(64bit)'`, `/usr/bin/iperf3`, `./x.rpm`.
        #[arg(required = true)]
        packages: Vec<String>,
        /// Uninstall these layered packages in the same transaction.
        #[arg(long = "uninstall", value_name = "PKG")]
        uninstall: Vec<String>,
        #[command(flatten)]
        layer: LayerOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Remove layered packages (by name or NEVRA).
    Uninstall {
        /// Names or NEVRAs of layered packages.
        packages: Vec<String>,
        /// Remove every layered package.
        #[arg(long)]
        all: bool,
        /// Install these RPM files in the same transaction (with --all: replace the whole set).
        #[arg(long = "install", value_name = "RPM")]
        install: Vec<String>,
        #[command(flatten)]
        layer: LayerOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Move to the newest version of the base (layered packages are carried over).
    #[command(visible_alias = "update")]
    Upgrade {
        /// Accept a newest commit that is older than the current base.
        #[arg(long)]
        allow_downgrade: bool,
        #[command(flatten)]
        base: BaseOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Move to another ostree ref (`remote:ref`, `:ref`), layered packages carried over.
    Rebase {
        refspec: String,
        /// Accepted as rpm-ostree's `rebase --experimental` (image references need no flag here).
        #[arg(long, hide = true)]
        _experimental: bool,
        /// A commit checksum or version of the new ref (pinned).
        revision: Option<String>,
        #[command(flatten)]
        base: BaseOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Deploy a given revision (commit checksum or version) of the current ref.
    Deploy {
        revision: String,
        #[command(flatten)]
        base: BaseOpts,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Show or edit kernel arguments (edits stage a new deployment of the same tree).
    Kargs {
        /// Add KEY[=VALUE] (repeatable).
        #[arg(long, value_name = "KEY[=VALUE]")]
        append: Vec<String>,
        /// Add unless exactly present.
        #[arg(long, value_name = "KEY[=VALUE]")]
        append_if_missing: Vec<String>,
        /// Remove KEY (one value) or KEY=VALUE.
        #[arg(long, value_name = "KEY[=VALUE]")]
        delete: Vec<String>,
        /// Remove if present.
        #[arg(long, value_name = "KEY[=VALUE]")]
        delete_if_present: Vec<String>,
        /// KEY=NEW (one value) or KEY=OLD=NEW.
        #[arg(long, value_name = "KEY=[OLD=]NEW")]
        replace: Vec<String>,
        /// Start from the running kernel's /proc/cmdline.
        #[arg(long)]
        import_proc_cmdline: bool,
        /// Reboot once the new deployment is staged.
        #[arg(short, long)]
        reboot: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Change base packages: remove them, replace them with local RPMs, or undo that.
    Override {
        #[command(subcommand)]
        cmd: OverrideCmd,
    },
    /// Apply the staged deployment to the running system now (additions only, unless
    /// --allow-replacement); --reset goes back to the booted tree.
    ApplyLive {
        /// Remove the live changes: /usr is the booted tree again.
        #[arg(long, conflicts_with = "allow_replacement")]
        reset: bool,
        /// Also apply changes and removals of running packages' files.
        #[arg(long)]
        allow_replacement: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Pin the deployment at INDEX (boot order, as status lists them) so cleanup keeps it.
    Pin {
        index: u32,
        /// Unpin it instead.
        #[arg(long)]
        unpin: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Unlock the staged deployment CHECKSUM (staged with --lock-finalization) and reboot.
    FinalizeDeployment {
        checksum: String,
        /// Reboot into it even if it was not staged locked.
        #[arg(long)]
        allow_unlocked: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Download repository metadata now (even if the cache is fresh with -f).
    RefreshMd {
        /// Fetch even when the cached metadata has not expired.
        #[arg(short, long)]
        force: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Cancel the running transaction (or the one with the given id).
    Cancel {
        /// Transaction id, as `layerctl status -v` shows it.
        id: Option<String>,
    },
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if compat::invoked_as_rpm_ostree(args.first()) && args.get(1).is_some_and(|a| a == "--version") {
        print!("{}", compat::version_yaml());
        return ExitCode::SUCCESS;
    }
    let cli = Cli::parse_from(args);
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let conn = connect::system_bus().await?;
    let mut opts: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(id) = cli.client_id.as_deref() {
        opts.insert("client-id", Value::from(id));
    }
    match cli.cmd {
        Cmd::Status { json, booted, verbose, pending_exit_77 } => {
            status::run(&conn, status::Mode { json, booted, verbose, pending_exit_77 }).await
        }
        Cmd::Rollback { reboot, change } => {
            if reboot {
                opts.insert("reboot", Value::from(true));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.rollback(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Cleanup { pending, rollback, base, repomd, change } => {
            if !(pending || rollback || base || repomd) {
                anyhow::bail!("cleanup needs at least one of -p/--pending, -r/--rollback, -b/--base, -m/--repomd");
            }
            set_flags(&mut opts, &[("pending", pending), ("rollback", rollback), ("base", base), ("repomd", repomd)]);
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.cleanup(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Install { packages, uninstall, layer, change } => {
            update(&conn, opts, &packages, &uninstall, false, OverrideArgs::default(), &layer, &change).await
        }
        Cmd::Override { cmd } => match cmd {
            OverrideCmd::Remove { packages, install, layer, change } => {
                let o = OverrideArgs { remove: &packages, ..Default::default() };
                update(&conn, opts, &install, &[], false, o, &layer, &change).await
            }
            OverrideCmd::Replace { packages, layer, change } => {
                if let Some(p) = packages.iter().find(|p| !p.ends_with(".rpm")) {
                    anyhow::bail!("{p}: override replace takes RPM files (ending in .rpm)");
                }
                let o = OverrideArgs { replace: &packages, ..Default::default() };
                update(&conn, opts, &[], &[], false, o, &layer, &change).await
            }
            OverrideCmd::Reset { packages, all, uninstall, layer, change } => {
                if packages.is_empty() && !all {
                    anyhow::bail!("name the packages whose override to reset, or pass --all");
                }
                let o = OverrideArgs { reset: &packages, reset_all: all, ..Default::default() };
                update(&conn, opts, &[], &uninstall, false, o, &layer, &change).await
            }
        },
        Cmd::Uninstall { packages, all, install, layer, change } => {
            if packages.is_empty() && !all {
                anyhow::bail!("name the packages to uninstall, or pass --all");
            }
            update(&conn, opts, &install, &packages, all, OverrideArgs::default(), &layer, &change).await
        }
        Cmd::Upgrade { allow_downgrade, base, change } => {
            base.apply(&mut opts);
            if allow_downgrade {
                opts.insert("allow-downgrade", Value::from(true));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.upgrade(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Rebase { refspec, revision, base, change, .. } => {
            base.apply(&mut opts);
            if let Some(r) = &revision {
                opts.insert("revision", Value::from(r.as_str()));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.rebase(&refspec, opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Deploy { revision, base, change } => {
            base.apply(&mut opts);
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.deploy(&revision, opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::ApplyLive { reset, allow_replacement, change } => {
            set_flags(&mut opts, &[("reset", reset), ("allow-replacement", allow_replacement)]);
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.apply_live(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::RefreshMd { force, change } => {
            if force {
                opts.insert("force", Value::from(true));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.refresh_md(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Kargs { append, append_if_missing, delete, delete_if_present, replace, import_proc_cmdline, reboot, change } => {
            let edits = [
                ("append", append),
                ("append-if-missing", append_if_missing),
                ("delete", delete),
                ("delete-if-present", delete_if_present),
                ("replace", replace),
            ];
            if edits.iter().all(|(_, v)| v.is_empty()) && !import_proc_cmdline {
                // no edit: print the arguments of the deployment that boots next
                let daemon = connect::daemon(&conn).await?;
                let deployments = daemon.deployments().await.map_err(connect::zbus_error)?;
                let first = deployments.first().ok_or_else(|| anyhow::anyhow!("no deployments"))?;
                println!("{}", first.kernel_arguments.join(" "));
                return Ok(0);
            }
            for (k, v) in edits {
                if !v.is_empty() {
                    opts.insert(k, Value::from(v));
                }
            }
            set_flags(&mut opts, &[("import-proc-cmdline", import_proc_cmdline), ("reboot", reboot)]);
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.kernel_args(opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Pin { index, unpin, change } => {
            if unpin {
                opts.insert("unpin", Value::from(true));
            }
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.pin(index, opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::FinalizeDeployment { checksum, allow_unlocked, change } => {
            set_flags(&mut opts, &[("allow-unlocked", allow_unlocked)]);
            let daemon = connect::daemon(&conn).await?;
            let path = daemon.finalize_deployment(&checksum, opts).await.map_err(connect::api_error)?;
            txn::run(&conn, path, change.wait, change.unchanged_exit_77).await
        }
        Cmd::Cancel { id } => cancel(&conn, id).await,
    }
}

/// Install (local RPM files) and uninstall in one transaction.
async fn update(
    conn: &zbus::Connection,
    mut opts: HashMap<&str, Value<'_>>,
    install: &[String],
    uninstall: &[String],
    all: bool,
    overrides: OverrideArgs<'_>,
    layer: &LayerOpts,
    change: &ChangeOpts,
) -> anyhow::Result<u8> {
    // Files are opened here and passed as descriptors: the daemon needs no access to the
    // client's working directory (works from `oc debug` + `chroot /host`).
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut names = Vec::new();
    for p in install {
        let path = std::path::Path::new(p);
        // like rpm-ostree: a file ending in .rpm is a local package, anything else a request
        // the repositories resolve (name, NEVRA, provide or file path)
        if !p.ends_with(".rpm") {
            names.push(p.clone());
            continue;
        }
        let f = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
        if f.metadata().map(|m| !m.is_file()).unwrap_or(true) {
            anyhow::bail!("{p}: not a regular file");
        }
        files.push(std::os::fd::OwnedFd::from(f));
        labels.push(p.clone());
    }
    // replacements travel with the local packages; their indexes mark them
    let mut replace_idx: Vec<u32> = Vec::new();
    for p in overrides.replace {
        let f = std::fs::File::open(p).map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
        if f.metadata().map(|m| !m.is_file()).unwrap_or(true) {
            anyhow::bail!("{p}: not a regular file");
        }
        replace_idx.push(files.len() as u32);
        files.push(std::os::fd::OwnedFd::from(f));
        labels.push(p.clone());
    }
    let mut modifiers: HashMap<&str, Value<'_>> = HashMap::new();
    if !replace_idx.is_empty() {
        modifiers.insert("override-replace-local", Value::from(replace_idx));
    }
    if !overrides.remove.is_empty() {
        modifiers.insert("override-remove", Value::from(overrides.remove.to_vec()));
    }
    if !overrides.reset.is_empty() {
        modifiers.insert("override-reset", Value::from(overrides.reset.to_vec()));
    }
    if overrides.reset_all {
        modifiers.insert("override-reset-all", Value::from(true));
    }
    if !labels.is_empty() {
        modifiers.insert("install-local-labels", Value::from(labels));
    }
    if !names.is_empty() {
        modifiers.insert("install-packages", Value::from(names));
    }
    if !uninstall.is_empty() {
        modifiers.insert("uninstall-packages", Value::from(uninstall.to_vec()));
    }
    if all {
        modifiers.insert("uninstall-all", Value::from(true));
    }
    set_flags(&mut opts, &[
        ("dry-run", layer.dry_run),
        ("idempotent", layer.idempotent),
        ("allow-inactive", layer.allow_inactive),
        ("force-replacefiles", layer.force_replacefiles),
        ("reboot", layer.reboot),
        ("download-only", layer.download_only),
        ("cache-only", layer.cache_only),
        ("apply-live", layer.apply_live),
        ("allow-replacement", layer.allow_replacement),
    ]);
    let fds: Vec<zbus::zvariant::Fd<'_>> = files.iter().map(zbus::zvariant::Fd::from).collect();
    let daemon = connect::daemon(conn).await?;
    let path = daemon.update_deployment(modifiers, fds, opts).await.map_err(connect::api_error)?;
    txn::run(conn, path, change.wait, change.unchanged_exit_77).await
}

/// `layerctl cancel [ID]`: cancel the running transaction, or a given one.
async fn cancel(conn: &zbus::Connection, id: Option<String>) -> anyhow::Result<u8> {
    let daemon = connect::daemon(conn).await?;
    let txns = daemon.transactions().await.map_err(connect::zbus_error)?;
    let target = match &id {
        Some(id) => txns.iter().find(|t| &t.id == id),
        None => txns.iter().find(|t| t.state == "running").or_else(|| txns.first()),
    };
    let Some(t) = target else {
        match id {
            Some(id) => anyhow::bail!("no transaction {id} is queued or running"),
            None => anyhow::bail!("no transaction is running"),
        }
    };
    let proxy = layerd_interfaces::proxy::TransactionProxy::builder(conn)
        .path(t.path.clone())?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    proxy.cancel().await.map_err(connect::api_error)?;
    println!("Cancelled {} ({}, started by {})", t.title, t.id, t.client);
    Ok(0)
}

/// Put the flags that are on into a D-Bus options dictionary as `true`.
fn set_flags<'a>(opts: &mut HashMap<&'a str, Value<'a>>, flags: &[(&'a str, bool)]) {
    for &(k, on) in flags {
        if on {
            opts.insert(k, Value::from(true));
        }
    }
}
