//! `layerd-controller-example`: the shape of a node agent (an MCO-like controller) on layerd's
//! gRPC API. `rebase IMAGE` moves the node to a bootable container image: it starts the rebase
//! (queueing behind any running change), prints each progress event, then watches the status
//! stream until the staged deployment of that image shows up, and prints a one-line JSON
//! report (`{"image", "checksum", "digest", "version", "transaction"}`) a fleet tool can collect.
//! `status` prints the node's deployments as JSON; `health` asks the standard health service.
//!
//! Connects to the unix socket (`--socket`, default /run/layerd/layerd.sock) or, with
//! `--endpoint https://HOST:PORT`, over TCP with mutual TLS (`--ca`, `--cert`, `--key`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use layerd_interfaces::grpc as pb;
use layerd_interfaces::grpc::layerd_client::LayerdClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

#[derive(Parser)]
#[command(name = "layerd-controller-example", about = "Example node controller on layerd's gRPC API")]
struct Cli {
    /// layerd's gRPC unix socket.
    #[arg(long, default_value = "/run/layerd/layerd.sock")]
    socket: PathBuf,
    /// TCP endpoint (`https://HOST:PORT`) instead of the socket; needs --ca, --cert, --key.
    #[arg(long)]
    endpoint: Option<String>,
    #[arg(long)]
    ca: Option<PathBuf>,
    #[arg(long)]
    cert: Option<PathBuf>,
    #[arg(long)]
    key: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rebase the node to IMAGE and wait until its deployment is staged.
    Rebase { image: String },
    /// Print the node's status as JSON.
    Status,
    /// Check the upgrade available for the current base (no change).
    CheckUpgrade,
    /// Ask the gRPC health service.
    Health,
    /// Layer local RPM files, sent as bytes (a hotfix pushed by the controller).
    Install { rpms: Vec<PathBuf> },
}

async fn channel(cli: &Cli) -> Result<Channel> {
    match &cli.endpoint {
        None => {
            let uri = format!("unix://{}", cli.socket.display());
            Ok(Endpoint::try_from(uri)?.connect().await.with_context(|| format!("connecting to {}", cli.socket.display()))?)
        }
        Some(ep) => {
            let read = |p: &Option<PathBuf>, what: &str| -> Result<Vec<u8>> {
                let p = p.as_ref().with_context(|| format!("--endpoint needs --{what}"))?;
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))
            };
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&cli.ca, "ca")?));
            if cli.cert.is_some() || cli.key.is_some() {
                tls = tls.identity(Identity::from_pem(read(&cli.cert, "cert")?, read(&cli.key, "key")?));
            }
            Ok(Endpoint::try_from(ep.clone())?.tls_config(tls)?.connect().await.with_context(|| format!("connecting to {ep}"))?)
        }
    }
}

fn deployment_json(d: &pb::Deployment) -> serde_json::Value {
    serde_json::json!({
        "id": d.id, "checksum": d.checksum, "version": d.version, "booted": d.booted, "staged": d.staged,
        "origin": d.origin, "container-image-reference": d.container_image_reference,
        "container-image-reference-digest": d.container_image_reference_digest,
        "requested-packages": d.requested_packages, "kernel-arguments": d.kernel_arguments,
    })
}

/// Print a transaction's events; its result.
async fn follow(mut events: tonic::Streaming<pb::TransactionEvent>) -> Result<(String, pb::TransactionResult)> {
    use pb::transaction_event::Event;
    let mut id = String::new();
    while let Some(ev) = events.message().await? {
        id = ev.transaction_id.clone();
        match ev.event {
            Some(Event::Started(t)) => eprintln!("transaction {} ({}) by {}", t.id, t.title, t.client),
            Some(Event::Message(m)) => eprintln!("  {m}"),
            Some(Event::TaskBegin(t)) => eprintln!("  {t}…"),
            Some(Event::TaskEnd(_)) | None => {}
            Some(Event::Percent(p)) => eprintln!("  {}: {}%", p.text, p.percent),
            Some(Event::Progress(p)) => eprintln!("  {}: {}/{} bytes, {}/{} items", p.text, p.bytes_done, p.bytes_total, p.items_done, p.items_total),
            Some(Event::Finished(r)) => return Ok((id, r)),
        }
    }
    bail!("the event stream of transaction {id} ended without a result")
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let ch = channel(&cli).await?;
    let mut api = LayerdClient::new(ch.clone());
    match &cli.cmd {
        Cmd::Health => {
            let mut h = tonic_health::pb::health_client::HealthClient::new(ch);
            let r = h.check(tonic_health::pb::HealthCheckRequest { service: "layerd.v1.Layerd".into() }).await?;
            println!("{:?}", r.into_inner().status());
        }
        Cmd::Status => {
            let s = api.get_status(pb::GetStatusRequest {}).await?.into_inner();
            let list: Vec<_> = s.deployments.iter().map(deployment_json).collect();
            println!("{}", serde_json::json!({ "deployments": list }));
        }
        Cmd::CheckUpgrade => {
            let req = pb::UpgradeRequest { check_only: true, options: Some(pb::ChangeOptions { wait: Some(true), client_id: "controller-example".into(), ..Default::default() }), ..Default::default() };
            let (_, r) = follow(api.upgrade(req).await?.into_inner()).await?;
            println!("{}", serde_json::json!({ "update-available": r.success && !r.unchanged, "error": r.error_message }));
        }
        Cmd::Install { rpms } => {
            let mut local_packages = Vec::new();
            for p in rpms {
                let content = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                local_packages.push(pb::LocalPackage { source: Some(pb::local_package::Source::Content(content)), label: p.display().to_string() });
            }
            let req = pb::InstallRequest {
                local_packages,
                options: Some(pb::ChangeOptions { wait: Some(true), client_id: "controller-example".into(), ..Default::default() }),
                ..Default::default()
            };
            let (txn, r) = follow(api.install(req).await?.into_inner()).await?;
            if !r.success {
                bail!("install failed ({}): {}", r.error_name, r.error_message);
            }
            println!("{}", serde_json::json!({ "transaction": txn, "unchanged": r.unchanged }));
        }
        Cmd::Rebase { image } => {
            // watch first, so the staged deployment cannot slip by between the calls
            let mut watch = api.watch_status(pb::WatchStatusRequest {}).await?.into_inner();
            let req = pb::RebaseRequest {
                target: image.clone(),
                options: Some(pb::ChangeOptions { wait: Some(true), client_id: "controller-example".into(), ..Default::default() }),
                ..Default::default()
            };
            let (txn, result) = follow(api.rebase(req).await?.into_inner()).await?;
            if !result.success {
                bail!("rebase to {image} failed ({}): {}", result.error_name, result.error_message);
            }
            // the staged (or, offline, pending) deployment of the image
            loop {
                let s = watch.message().await?.context("the status stream ended")?;
                let found = s.deployments.iter().take_while(|d| !d.booted).find(|d| d.container_image_reference == *image);
                if let Some(d) = found {
                    println!(
                        "{}",
                        serde_json::json!({
                            "image": image, "checksum": d.checksum, "digest": d.container_image_reference_digest,
                            "version": d.version, "staged": d.staged, "transaction": txn, "unchanged": result.unchanged,
                        })
                    );
                    break;
                }
                if result.unchanged && s.deployments.iter().any(|d| d.booted && d.container_image_reference == *image) {
                    println!("{}", serde_json::json!({ "image": image, "unchanged": true, "transaction": txn }));
                    break;
                }
            }
        }
    }
    Ok(())
}
