//! Issue 7: the gRPC API — status and its stream, changes as event streams, busy/queue, cancel
//! and attach from another client, peer-credential checks on the unix socket, mutual TLS on
//! TCP, the health service, and the example controller rebasing a node to an image.

use std::path::{Path, PathBuf};
use std::process::Command;

use layerd_interfaces::grpc as pb;
use layerd_interfaces::grpc::layerd_client::LayerdClient;
use layerd_tests::fixture::OsSpec;
use layerd_tests::rpmbuild::{Entry, RpmSpec, Script};
use layerd_tests::VirtualHost;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::common::*;

const SOCKET: &str = "/run/layerd/layerd.sock";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A booted host serving gRPC on the unix socket (and on TCP when `tcp` is given).
fn grpc_host(name: &str, extra: &[String]) -> VirtualHost {
    let mut h = new_host(name);
    h.layerd_args = vec!["--grpc-socket".into(), SOCKET.into()];
    h.layerd_args.extend_from_slice(extra);
    h.boot().unwrap();
    h.start_layerd().unwrap();
    h
}

/// The socket as the test process (outside the host) reaches it.
fn socket(h: &VirtualHost) -> PathBuf {
    h.rundir().unwrap().join("layerd/layerd.sock")
}

async fn client(h: &VirtualHost) -> LayerdClient<Channel> {
    let ch = Endpoint::try_from(format!("unix://{}", socket(h).display())).unwrap().connect().await.unwrap();
    LayerdClient::new(ch)
}

fn opts(wait: bool) -> Option<pb::ChangeOptions> {
    Some(pb::ChangeOptions { wait: Some(wait), client_id: "grpc-test".into(), ..Default::default() })
}

/// Events of a stream until it ends.
async fn collect(mut s: tonic::Streaming<pb::TransactionEvent>) -> Vec<pb::TransactionEvent> {
    let mut v = Vec::new();
    while let Some(e) = s.message().await.unwrap() {
        v.push(e);
    }
    v
}

fn result_of(events: &[pb::TransactionEvent]) -> pb::TransactionResult {
    match events.last().and_then(|e| e.event.clone()) {
        Some(pb::transaction_event::Event::Finished(r)) => r,
        other => panic!("the stream must end with finished, not {other:?}"),
    }
}

fn messages(events: &[pb::TransactionEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            Some(pb::transaction_event::Event::Message(m)) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn slow_rpm(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    RpmSpec::new("slow", "1")
        .entry(Entry::file("/usr/bin/slow", "#!/bin/sh\necho slow\n", 0o755))
        .script(Script::Post, "sleep 3")
        .write(dir)
        .unwrap()
}

#[test]
fn status_changes_busy_attach_cancel_and_errors() {
    let h = grpc_host("grpc-api", &[]);
    let rt = rt();
    rt.block_on(async {
        let mut c = client(&h).await;
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.deployments.len(), 1);
        assert!(s.deployments[0].booted && s.deployments[0].version == "1.0", "{s:?}");

        // a controller watches instead of polling: the change shows up on the stream
        let mut watch = c.watch_status(pb::WatchStatusRequest {}).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        assert_eq!(first.deployments.len(), 1);
        let ev = collect(
            c.kernel_args(pb::KernelArgsRequest { options: opts(false), append: vec!["grpc=1".into()], ..Default::default() })
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert!(matches!(ev[0].event, Some(pb::transaction_event::Event::Started(_))), "{ev:?}");
        assert!(result_of(&ev).success && !result_of(&ev).unchanged, "{ev:?}");
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if s.deployments.len() == 2 {
                assert!(s.deployments[0].staged && s.deployments[0].kernel_arguments.contains(&"grpc=1".to_string()), "{s:?}");
                break;
            }
        }
        // the staged deployment has the booted tree: nothing to apply live
        let ev = collect(c.apply_live(pb::ApplyLiveRequest { options: opts(false), ..Default::default() }).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && result_of(&ev).unchanged, "{ev:?}");
        assert!(messages(&ev).iter().any(|m| m.contains("Nothing to apply live")), "{ev:?}");
        // the same change again: unchanged
        let ev = collect(
            c.kernel_args(pb::KernelArgsRequest { options: opts(false), append_if_missing: vec!["grpc=1".into()], ..Default::default() })
                .await
                .unwrap()
                .into_inner(),
        )
        .await;
        assert!(result_of(&ev).unchanged);

        // invalid requests name the field
        let bad = pb::InstallRequest {
            options: opts(false),
            local_packages: vec![pb::LocalPackage { source: Some(pb::local_package::Source::HostPath("/nonexistent.rpm".into())), label: String::new() }],
            ..Default::default()
        };
        let e = c.install(bad).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("local_packages[0].host_path /nonexistent.rpm"), "{e:?}");
        let e = c.deploy(pb::DeployRequest { options: opts(false), ..Default::default() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("revision"), "{e:?}");
        let e = c.kernel_args(pb::KernelArgsRequest { append: vec!["=x".into()], ..Default::default() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("append: kernel argument \"=x\": has an empty key"), "{e:?}");
        // protobuf strings may carry NUL bytes (D-Bus strings cannot): refused, naming the name
        let e = c.install(pb::InstallRequest { options: opts(false), packages: vec!["a\0b".into()], ..Default::default() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("packages[0]: \"a\\0b\" is not a valid package name"), "{e:?}");
        let e = c.install(pb::InstallRequest { options: opts(false), packages: vec!["htop".into(), String::new()], ..Default::default() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("packages[1]: an empty package name"), "{e:?}");
        let e = c.r#override(pb::OverrideRequest { options: opts(false), remove: vec!["two words".into()], ..Default::default() }).await.err().unwrap();
        assert!(e.message().contains("remove[0]: "), "{e:?}");
        let e = c.get_transaction(pb::GetTransactionRequest { transaction_id: "nope".into() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::NotFound);

        // a slow change (its %post sleeps) as bytes: busy for others, attachable, cancellable
        let rpm = std::fs::read(slow_rpm(&h.dir.join("rpms"))).unwrap();
        let req = pb::InstallRequest {
            options: opts(false),
            local_packages: vec![pb::LocalPackage { source: Some(pb::local_package::Source::Content(rpm)), label: "slow.rpm".into() }],
            ..Default::default()
        };
        let mut slow = c.install(req).await.unwrap().into_inner();
        let started = match slow.message().await.unwrap().unwrap().event {
            Some(pb::transaction_event::Event::Started(t)) => t,
            other => panic!("{other:?}"),
        };
        // wait until the scriptlet runs
        loop {
            let e = slow.message().await.unwrap().unwrap();
            if matches!(&e.event, Some(pb::transaction_event::Event::Message(m)) if m.contains("Running %post")) {
                break;
            }
        }
        let mut other = client(&h).await;
        let e = other.rollback(pb::RollbackRequest { options: opts(false) }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
        assert!(e.message().contains(&started.id) && e.message().contains("grpc-test"), "{e:?}");
        assert_eq!(e.metadata().get("layerd-running-transaction").unwrap().to_str().unwrap(), started.id);
        // D-Bus sees the same transaction
        let st = h.layerctl_ok(&["status"]).unwrap();
        assert!(st.contains("install slow"), "{st}");
        // attach from another client, then cancel from it
        let t = other.get_transaction(pb::GetTransactionRequest { transaction_id: started.id.clone() }).await.unwrap().into_inner();
        assert_eq!(t.state, "running");
        let attached = other.watch_transaction(pb::WatchTransactionRequest { transaction_id: started.id.clone(), since: 0 }).await.unwrap().into_inner();
        let r = other.cancel(pb::CancelRequest { transaction_id: started.id.clone() }).await.unwrap().into_inner();
        assert!(r.cancelled);
        let seen = collect(attached).await;
        assert_eq!(result_of(&seen).error_name, "Cancelled", "{seen:?}");
        assert!(messages(&seen).iter().any(|m| m.contains("Running %post")), "the attached stream replays the history");
        let rest = collect(slow).await;
        assert_eq!(result_of(&rest).error_name, "Cancelled");
        // resuming after the last event of a finished transaction gives its result, and ends
        let resumed = collect(other.watch_transaction(pb::WatchTransactionRequest { transaction_id: started.id.clone(), since: 10_000 }).await.unwrap().into_inner()).await;
        assert_eq!(result_of(&resumed).error_name, "Cancelled", "{resumed:?}");
        let after = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert!(after.deployments[0].requested_local_packages.is_empty(), "a cancelled change leaves nothing: {after:?}");
        assert_eq!(after.last_transaction.unwrap().state, "cancelled");

        // with wait, a change queues behind the running one instead; this time the RPM is a
        // path on the node
        let file = slow_rpm(&h.sysroot.path.join("rpms"));
        let inside = format!("/sysroot/rpms/{}", file.file_name().unwrap().to_string_lossy());
        let req = pb::InstallRequest {
            options: opts(false),
            local_packages: vec![pb::LocalPackage { source: Some(pb::local_package::Source::HostPath(inside)), label: String::new() }],
            ..Default::default()
        };
        let first = c.install(req).await.unwrap().into_inner();
        let queued = other.cleanup(pb::CleanupRequest { options: opts(true), base: true, ..Default::default() }).await.unwrap().into_inner();
        let (a, b) = tokio::join!(collect(first), collect(queued));
        assert!(result_of(&a).success, "{a:?}");
        assert!(messages(&b).iter().any(|m| m.starts_with("Waiting for install")), "{b:?}");
        assert!(result_of(&b).success);
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.deployments[0].requested_local_packages, ["slow-1-1.x86_64"]);
    });
}

fn controller(args: &[&str]) -> Command {
    let mut c = Command::new(layerd_tests::bin_dir().join("layerd-controller-example"));
    c.args(args);
    c
}

/// Run the example controller as another user (uid 65534, gid `gid`).
fn controller_as(gid: u32, args: &[&str]) -> std::process::Output {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", &format!("--regid={gid}"), "--clear-groups", "--"]).arg(layerd_tests::bin_dir().join("layerd-controller-example")).args(args);
    c.output().unwrap()
}

#[test]
fn peer_credentials_decide_who_may_change_things() {
    let h = grpc_host("grpc-peers", &["--grpc-group".into(), "4242".into()]);
    let sock = socket(&h);
    // the harness's directories must let another user reach the socket
    traversable(&sock);
    let s = sock.display().to_string();
    // anyone may read
    let o = controller_as(65534, &["--socket", &s, "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"booted\":true"), "{}", stdout(&o));
    // a stranger may not change anything
    let o = controller_as(65534, &["--socket", &s, "check-upgrade"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not have permission") && stderr(&o).contains("uid 65534 (gid 65534) may read the status but not change the system"), "{}", stderr(&o));
    // a reader's change is refused before its request is read: a 300 MB request does not
    // make layerd hold 300 MB
    let hwm = |h: &layerd_tests::VirtualHost| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", h.layerd_pid().unwrap())).unwrap();
        status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024
    };
    let before = hwm(&h);
    let big = h.dir.join("big.rpm");
    std::fs::write(&big, vec![0u8; 300 << 20]).unwrap();
    traversable(&big);
    let o = controller_as(65534, &["--socket", &s, "install", big.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("Install: uid 65534 (gid 65534) may read the status but not change the system"), "{}", stderr(&o));
    let after = hwm(&h);
    assert!(after < before + (100 << 20), "layerd's peak memory grew from {before} to {after} bytes for a refused request");
    std::fs::remove_file(&big).unwrap();
    // a member of the configured group may
    let o = controller_as(4242, &["--socket", &s, "check-upgrade"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"update-available\":false"), "{}", stdout(&o));
    // the standard health service
    let o = controller(&["--socket", &s, "health"]).output().unwrap();
    assert_eq!(stdout(&o).trim(), "Serving", "{}", stderr(&o));
}

#[test]
fn tcp_needs_a_client_certificate() {
    // the certificates inside the host's sysroot (layerd reads them as /sysroot/certs/…)
    let mut h = new_host("grpc-tls");
    let certs = layerd_tests::tls::Certs::create(&h.sysroot.path.join("certs")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let f = |n: &str| format!("/sysroot/certs/{n}");
    h.layerd_args = vec![
        "--grpc-socket".into(),
        SOCKET.into(),
        "--grpc-tcp-listen".into(),
        format!("127.0.0.1:{port}"),
        "--grpc-tls-cert".into(),
        f("server.pem"),
        "--grpc-tls-key".into(),
        f("server.key"),
        "--grpc-tls-client-ca".into(),
        f("ca.pem"),
    ];
    h.boot().unwrap();
    h.start_layerd().unwrap();
    let rt = rt();
    rt.block_on(async {
        let ca = Certificate::from_pem(std::fs::read(certs.dir.join("ca.pem")).unwrap());
        let ep = format!("https://127.0.0.1:{port}");
        // with a certificate from the client CA: in, and allowed to change things
        let id = Identity::from_pem(std::fs::read(certs.dir.join("client.pem")).unwrap(), std::fs::read(certs.dir.join("client.key")).unwrap());
        let tls = ClientTlsConfig::new().ca_certificate(ca.clone()).identity(id);
        let ch = Endpoint::try_from(ep.clone()).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
        let mut c = LayerdClient::new(ch);
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert!(s.deployments[0].booted);
        let ev = collect(c.upgrade(pb::UpgradeRequest { options: opts(false), check_only: true, ..Default::default() }).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success, "{ev:?}");
        // without one: refused
        let tls = ClientTlsConfig::new().ca_certificate(ca.clone());
        let refused = match Endpoint::try_from(ep.clone()).unwrap().tls_config(tls).unwrap().connect().await {
            Err(_) => true,
            Ok(ch) => LayerdClient::new(ch).get_status(pb::GetStatusRequest {}).await.is_err(),
        };
        assert!(refused, "a client without a certificate must not get in");
        // with a certificate from another CA: refused too
        let foreign = layerd_tests::tls::Certs::create(&h.dir.join("foreign-certs")).unwrap();
        let id = Identity::from_pem(std::fs::read(foreign.dir.join("client.pem")).unwrap(), std::fs::read(foreign.dir.join("client.key")).unwrap());
        let tls = ClientTlsConfig::new().ca_certificate(ca).identity(id);
        let refused = match Endpoint::try_from(ep).unwrap().tls_config(tls).unwrap().connect().await {
            Err(_) => true,
            Ok(ch) => LayerdClient::new(ch).get_status(pb::GetStatusRequest {}).await.is_err(),
        };
        assert!(refused, "a client certificate from a foreign CA must not get in");
    });
    drop(h);
}

#[test]
fn example_controller_rebases_a_node_to_an_image() {
    let h = grpc_host("grpc-controller", &[]);
    let commit = h.publish_to(&OsSpec::new("410.84.custom"), "fixture/images/custom").unwrap();
    let oci = h.sysroot.path.join("images/custom");
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &oci).unwrap();
    let image = "ostree-unverified-image:oci:/sysroot/images/custom";
    let o = controller(&["--socket", &socket(&h).display().to_string(), "rebase", image]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("transaction") && stderr(&o).contains("Fetching"), "progress is followed: {}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report["image"], image);
    assert_eq!(report["version"], "410.84.custom");
    assert_eq!(report["staged"], true);
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"), "{report}");
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["checksum"], report["checksum"]);
    assert_eq!(s["deployments"][0]["container-image-reference"], image);
}

#[test]
fn declarative_apply_is_idempotent() {
    let h = grpc_host("grpc-apply", &[]);
    let repo = layerd_tests::yumrepo::YumRepo::create(
        &h.dir.join("yumrepo"),
        &[RpmSpec::new("htop", "3.2").entry(Entry::file("/usr/bin/htop", "#!/bin/sh\necho htop\n", 0o755))],
    )
    .unwrap();
    let httpd = layerd_tests::httpd::Httpd::serve(&repo.dir).unwrap();
    let text = layerd_tests::yumrepo::repo_file("tools", &httpd.url(), "");
    h.exec_ok(&["sh", "-c", &format!("mkdir -p /etc/yum.repos.d && printf '%s' '{text}' > /etc/yum.repos.d/tools.repo")]).unwrap();
    let rt = rt();
    rt.block_on(async {
        let mut c = client(&h).await;
        let now = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        let mut want_args = now.deployments[0].kernel_arguments.clone();
        want_args.retain(|a| !a.starts_with("ostree="));
        want_args.push("mitigations=off".into());
        let desired = |dry_run: bool, names: &[&str]| pb::ApplyRequest {
            options: opts(false),
            dry_run,
            base: String::new(),
            packages: Some(pb::PackageSet { names: names.iter().map(|n| n.to_string()).collect() }),
            kernel_arguments: Some(pb::ArgumentList { args: want_args.clone() }),
        };
        // what would change, changing nothing
        let ev = collect(c.apply(desired(true, &["htop"])).await.unwrap().into_inner()).await;
        let m = messages(&ev);
        assert!(m.iter().any(|m| m == "Requested: htop") && m.iter().any(|m| m.contains("mitigations=off")), "{m:?}");
        assert_eq!(c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments.len(), 1);
        // applied in one transaction
        let ev = collect(c.apply(desired(false, &["htop"])).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && !result_of(&ev).unchanged, "{ev:?}");
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(s.deployments[0].requested_packages, ["htop"]);
        assert!(s.deployments[0].kernel_arguments.contains(&"mitigations=off".to_string()), "{s:?}");
        // the node already looks like this
        let ev = collect(c.apply(desired(false, &["htop"])).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && result_of(&ev).unchanged, "{ev:?}");
        // nothing layered any more; the kernel arguments stay as stated
        let ev = collect(c.apply(desired(false, &[])).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && !result_of(&ev).unchanged, "{ev:?}");
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert!(s.deployments[0].requested_packages.is_empty(), "{s:?}");
        assert!(s.deployments[0].kernel_arguments.contains(&"mitigations=off".to_string()), "{s:?}");
        let e = c.apply(pb::ApplyRequest { packages: Some(pb::PackageSet { names: vec!["a b".into()] }), ..Default::default() }).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("packages.names"), "{e:?}");

        // another base, the packages and the arguments in one declarative request
        const TESTING: &str = "fixture:fixture/x86_64/coreos/testing";
        h.publish_to(&OsSpec::new("9.0"), "fixture/x86_64/coreos/testing").unwrap();
        let mut moved = desired(true, &["htop"]);
        moved.base = TESTING.into();
        let ev = collect(c.apply(moved.clone()).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success, "{ev:?}");
        assert!(messages(&ev).iter().any(|m| m.contains("9.0")), "the dry run names the new base: {:?}", messages(&ev));
        assert_ne!(c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments[0].origin, TESTING, "a dry run changes nothing");
        moved.dry_run = false;
        let ev = collect(c.apply(moved.clone()).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && !result_of(&ev).unchanged, "{ev:?}");
        let d = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments;
        assert!(d[0].origin == TESTING && d[0].base_version == "9.0" && d[0].requested_packages == ["htop"], "{d:?}");
        assert!(d[0].kernel_arguments.contains(&"mitigations=off".to_string()), "{d:?}");
        let ev = collect(c.apply(moved).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success && result_of(&ev).unchanged, "the node looks like this now: {ev:?}");
    });
}

/// A gRPC deployment in rpm-ostree's JSON shape, for comparing with `layerctl status --json`.
fn rpm_ostree_json(d: &pb::Deployment) -> serde_json::Value {
    let opt = |s: &str| if s.is_empty() { serde_json::Value::Null } else { serde_json::json!(s) };
    let meta: serde_json::Map<String, serde_json::Value> =
        d.base_commit_meta_json.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect();
    serde_json::json!({
        "id": d.id, "osname": d.osname, "serial": d.serial, "checksum": d.checksum, "version": opt(&d.version),
        "timestamp": d.timestamp, "booted": d.booted, "staged": d.staged, "pinned": d.pinned, "unlocked": d.unlocked,
        "finalization-locked": d.finalization_locked, "origin": opt(&d.origin),
        "container-image-reference": opt(&d.container_image_reference),
        "container-image-reference-digest": opt(&d.container_image_reference_digest),
        "custom-origin": if d.custom_origin.is_empty() { serde_json::Value::Null } else { serde_json::json!(d.custom_origin) },
        "base-checksum": opt(&d.base_checksum), "base-version": opt(&d.base_version),
        "base-timestamp": if d.base_checksum.is_empty() { serde_json::Value::Null } else { serde_json::json!(d.base_timestamp) },
        "base-commit-meta": meta, "packages": d.packages, "requested-packages": d.requested_packages,
        "requested-local-packages": d.requested_local_packages,
        "requested-local-fileoverride-packages": d.requested_local_fileoverride_packages,
        "base-removals": d.base_removals, "requested-base-removals": d.requested_base_removals,
        "base-local-replacements": d.base_local_replacements.iter().map(|r| [r.new_nevra.clone(), r.old_nevra.clone()]).collect::<Vec<_>>(),
        "requested-base-local-replacements": d.requested_base_local_replacements,
        "regenerate-initramfs": d.regenerate_initramfs, "initramfs-args": d.initramfs_args, "kernel-arguments": d.kernel_arguments,
        "live-replaced": opt(&d.live_replaced),
        "live-packages-added": if d.live_replaced.is_empty() { serde_json::Value::Null } else { serde_json::json!(d.live_packages_added) },
        "live-packages-replaced": if d.live_replaced.is_empty() { serde_json::Value::Null } else { serde_json::json!(d.live_packages_replaced) },
    })
}

#[test]
fn status_parity_and_transactions_across_the_two_apis() {
    let h = grpc_host("grpc-parity", &[]);
    let rt = rt();
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    // a deployment with something in every part: a layered package applied live, an override,
    // kernel arguments
    let tool = RpmSpec::new("paritytool", "1").entry(Entry::file("/usr/bin/paritytool", "#!/bin/sh\necho p\n", 0o755)).write(&dir).unwrap();
    h.layerctl_ok(&["install", "--apply-live", tool.to_str().unwrap()]).unwrap();
    h.layerctl_ok(&["override", "remove", "dracut"]).unwrap();
    h.layerctl_ok(&["kargs", "--append", "parity=1"]).unwrap();
    rt.block_on(async {
        let mut c = client(&h).await;
        let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        let json = h.status_json().unwrap();
        let dbus = json["deployments"].as_array().unwrap();
        assert_eq!(s.deployments.len(), dbus.len());
        for (g, d) in s.deployments.iter().zip(dbus) {
            let g = rpm_ostree_json(g);
            for (k, v) in g.as_object().unwrap() {
                let want = d.get(k).cloned().unwrap_or(serde_json::Value::Null);
                assert_eq!(v, &want, "deployment {}: {k} differs between gRPC and D-Bus", d["id"]);
            }
            // and nothing D-Bus shows is missing from gRPC
            for k in d.as_object().unwrap().keys() {
                assert!(g.get(k).is_some(), "{k} is not in gRPC's status");
            }
        }
        assert!(s.deployments.iter().any(|d| !d.live_replaced.is_empty() && d.live_packages_added == ["paritytool-1-1.x86_64"]), "{s:?}");

        // a change started over D-Bus: visible, attachable and cancellable over gRPC, and a
        // status stream sees what D-Bus changes
        let mut watch = c.watch_status(pb::WatchStatusRequest {}).await.unwrap().into_inner();
        let first = watch.message().await.unwrap().unwrap();
        let slow = slow_rpm(&dir);
        let dbus_txn = h.layerctl_command(&["install", slow.to_str().unwrap()]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let id = loop {
            let s = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
            if let Some(t) = s.transactions.first() {
                break t.id.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let t = c.get_transaction(pb::GetTransactionRequest { transaction_id: id.clone() }).await.unwrap().into_inner();
        // started by a D-Bus peer (its unique bus name, as no client id was given)
        assert!(t.title == "install slow-1-1.x86_64" && t.client.starts_with(":1."), "{t:?}");
        let mut attached = c.watch_transaction(pb::WatchTransactionRequest { transaction_id: id.clone(), since: 0 }).await.unwrap().into_inner();
        loop {
            let e = attached.message().await.unwrap().unwrap();
            if matches!(&e.event, Some(pb::transaction_event::Event::Message(m)) if m.contains("Running %post")) {
                break;
            }
        }
        let r = c.cancel(pb::CancelRequest { transaction_id: id.clone() }).await.unwrap().into_inner();
        assert!(r.cancelled);
        assert_eq!(result_of(&collect(attached).await).error_name, "Cancelled");
        let out = tokio::task::spawn_blocking(move || dbus_txn.wait_with_output().unwrap()).await.unwrap();
        assert!(!out.status.success() && stderr(&out).contains("cancelled"), "{}", stderr(&out));
        // a gRPC caller queued behind a running change that goes away takes its own change
        // back, as a D-Bus caller leaving the bus does
        let lock = SysrootLock::take(&h).unwrap();
        let mut running = h.layerctl_command(&["kargs", "--append", "held=1"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        wait_until("the held change runs", || h.layerctl_ok(&["status"]).unwrap().contains("State: busy"));
        let mut queued = c.kernel_args(pb::KernelArgsRequest { options: opts(true), append: vec!["queued=1".into()], ..Default::default() }).await.unwrap().into_inner();
        let queued_id = match queued.message().await.unwrap().unwrap().event {
            Some(pb::transaction_event::Event::Started(t)) => t.id,
            other => panic!("{other:?}"),
        };
        assert_eq!(c.get_transaction(pb::GetTransactionRequest { transaction_id: queued_id.clone() }).await.unwrap().into_inner().state, "queued");
        drop(queued);
        let mut state = String::new();
        for _ in 0..500 {
            state = c.get_transaction(pb::GetTransactionRequest { transaction_id: queued_id.clone() }).await.unwrap().into_inner().state;
            if state == "cancelled" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(state, "cancelled", "the queued change of a caller that left");
        h.layerctl_ok(&["cancel"]).unwrap();
        let _ = running.wait();
        drop(lock);
        // the same change, not cancelled: the status stream shows it
        h.layerctl_ok(&["install", slow.to_str().unwrap()]).unwrap();
        loop {
            let s = watch.message().await.unwrap().unwrap();
            if s.deployments[0].requested_local_packages.contains(&"slow-1-1.x86_64".to_string()) {
                assert_ne!(s.deployments[0].checksum, first.deployments[0].checksum);
                break;
            }
        }
        // and what gRPC changes, D-Bus shows
        let ev = collect(c.kernel_args(pb::KernelArgsRequest { options: opts(false), append: vec!["from-grpc=1".into()], ..Default::default() }).await.unwrap().into_inner()).await;
        assert!(result_of(&ev).success);
        let s = h.status_json().unwrap();
        assert!(s["deployments"][0]["kernel-arguments"].as_array().unwrap().iter().any(|a| a == "from-grpc=1"), "{s}");
    });
}

#[test]
fn every_kind_of_change_through_grpc() {
    let mut h = grpc_host("grpc-changes", &["--reboot-command".into(), "/usr/bin/busybox touch /run/reboot-requested".into()]);
    let rt = rt();
    let run = |events: Vec<pb::TransactionEvent>| -> pb::TransactionResult { result_of(&events) };
    std::fs::create_dir_all(h.dir.join("rpms")).unwrap();
    let tool = std::fs::read(
        RpmSpec::new("gtool", "1").entry(Entry::file("/usr/bin/gtool", "#!/bin/sh\necho g\n", 0o755)).write(&h.dir.join("rpms")).unwrap(),
    )
    .unwrap();
    h.publish(&OsSpec::new("2.0")).unwrap();
    rt.block_on(async {
        let mut c = client(&h).await;
        let status = |s: pb::Status| s.deployments;
        // install (bytes), uninstall
        let local = vec![pb::LocalPackage { source: Some(pb::local_package::Source::Content(tool.clone())), label: "gtool.rpm".into() }];
        let r = run(collect(c.install(pb::InstallRequest { options: opts(false), local_packages: local, ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let r = run(collect(c.uninstall(pb::UninstallRequest { options: opts(false), packages: vec!["gtool".into()], ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        assert!(status(c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner())[0].requested_local_packages.is_empty());
        // override remove
        let r = run(collect(c.r#override(pb::OverrideRequest { options: opts(false), remove: vec!["dracut".into()], ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        assert_eq!(status(c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner())[0].requested_base_removals, ["dracut"]);
        // upgrade, held back until finalized; the override is carried
        let base_options = Some(pb::BaseOptions { lock_finalization: true, ..Default::default() });
        let r = run(collect(c.upgrade(pb::UpgradeRequest { options: opts(false), base_options, ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let d = status(c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner());
        assert!(d[0].finalization_locked && d[0].base_version == "2.0" && d[0].requested_base_removals == ["dracut"], "{d:?}");
        let r = run(collect(c.finalize_deployment(pb::FinalizeDeploymentRequest { options: opts(false), checksum: "0".repeat(64), ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(!r.success && r.error_message.contains("refusing to finalize something else"), "{r:?}");
        let r = run(collect(c.finalize_deployment(pb::FinalizeDeploymentRequest { options: opts(false), checksum: d[0].checksum.clone(), ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        assert!(h.rundir().unwrap().join("reboot-requested").exists(), "finalizing reboots");
        // refreshing metadata with no repository: the stream ends with the reason
        let r = run(collect(c.refresh_metadata(pb::RefreshMetadataRequest { options: opts(false), force: true }).await.unwrap().into_inner()).await);
        assert!(!r.success && r.error_message.contains("no enabled repositories"), "{r:?}");
    });
    h.reboot().unwrap();
    rt.block_on(async {
        let mut c = client(&h).await;
        let d = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments;
        assert!(d[0].booted && d[0].base_version == "2.0", "{d:?}");
        // pin the rollback, roll back to it, deploy a version again, clean up what is pending
        let r = result_of(&collect(c.pin(pb::PinRequest { options: opts(false), index: 1, unpin: false }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let r = result_of(&collect(c.rollback(pb::RollbackRequest { options: opts(false) }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let d = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments;
        assert!(d[0].version == "1.0" && d[0].pinned && !d[0].booted, "the pinned 1.0 deployment is the default now: {d:?}");
        let r = result_of(&collect(c.deploy(pb::DeployRequest { options: opts(false), revision: "2.0".into(), ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let d = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments;
        // built from the new default's origin (the plain 1.0 deployment: no override)
        assert!(d[0].staged && d[0].version == "2.0" && d[0].requested_base_removals.is_empty(), "{d:?}");
        let r = result_of(&collect(c.cleanup(pb::CleanupRequest { options: opts(false), pending: true, ..Default::default() }).await.unwrap().into_inner()).await);
        assert!(r.success, "{r:?}");
        let d = c.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().deployments;
        assert!(!d.iter().any(|d| d.staged), "{d:?}");
        assert!(d.iter().any(|d| d.pinned && d.version == "1.0"), "the pinned deployment survives the cleanup: {d:?}");
    });
}
