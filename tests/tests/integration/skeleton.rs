//! Issue 2: status, rollback, cleanup, offline sysroots, clear errors.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use layerd_interfaces::proxy::{Layerd1Proxy, TransactionProxy};
use layerd_interfaces::Error as ApiError;
use layerd_tests::fixture::{OsSpec, OSNAME, REF, REMOTE};
use serde_json::Value;
use zbus::zvariant::Value as ZValue;

use crate::common::*;

const REFSPEC: &str = "fixture:fixture/x86_64/coreos/stable";

#[test]
fn status_shows_the_booted_deployment() {
    let h = booted_host("status");
    let out = h.layerctl_ok(&["status"]).unwrap();
    assert!(
        out.starts_with(&format!("State: idle\nDeployments:\n● {REFSPEC}\n")),
        "unexpected layout:\n{out}"
    );
    assert!(out.contains("Version: 1.0 ("), "{out}");

    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["1.0"]);
    assert_eq!(booted_index(&s), Some(0));
    let d = &s["deployments"][0];
    let rev = h.exec_ok(&["ostree", "rev-parse", &format!("{REMOTE}:{REF}")]).unwrap();
    assert_eq!(d["checksum"], rev.trim(), "checksum must be the deployed commit");
    assert_eq!(d["id"], format!("{OSNAME}-{}.0", rev.trim()));
    assert_eq!(d["origin"], REFSPEC);
    assert_eq!(d["osname"], OSNAME);
    assert_eq!(d["staged"], false);
    assert_eq!(d["pinned"], false);
    assert_eq!(d["unlocked"], "none");
    assert_eq!(d["base-commit-meta"]["version"], "1.0", "commit metadata is exposed");
    let kargs: Vec<&str> = d["kernel-arguments"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(kargs.contains(&"console=ttyS0"), "{kargs:?}");
    assert!(s["transaction"].is_null());

    // -v adds detail
    let v = h.layerctl_ok(&["status", "-v"]).unwrap();
    assert!(v.contains("StateRoot: fixture"), "{v}");
    assert!(v.contains("KernelArguments: root=LABEL=root rw console=ttyS0"), "{v}");
}

#[test]
fn json_has_every_key_tools_parse() {
    let h = booted_host("json");
    deploy_version(&h, "2.0", false);
    let s = h.status_json().unwrap();
    for k in ["deployments", "transaction", "cached-update", "update-driver"] {
        assert!(s.get(k).is_some(), "top-level key {k} missing");
    }
    let deployments = s["deployments"].as_array().unwrap();
    assert_eq!(deployments.len(), 2);
    for d in deployments {
        for k in [
            "id", "osname", "serial", "checksum", "version", "timestamp", "booted", "staged", "pinned",
            "unlocked", "finalization-locked", "origin", "base-commit-meta", "regenerate-initramfs",
        ] {
            assert!(d.get(k).is_some(), "deployment key {k} missing in {d}");
        }
        for k in [
            "packages",
            "requested-packages",
            "requested-local-packages",
            "requested-local-fileoverride-packages",
            "base-removals",
            "requested-base-removals",
            "base-local-replacements",
            "requested-base-local-replacements",
            "initramfs-args",
        ] {
            assert!(d[k].is_array(), "{k} must always be an array, got {}", d[k]);
        }
        assert!(d["timestamp"].as_u64().unwrap() > 1_600_000_000);
    }
    // --booted prints exactly one deployment: the booted one
    let b: Value = serde_json::from_str(&h.layerctl_ok(&["status", "--json", "--booted"]).unwrap()).unwrap();
    let bd = b["deployments"].as_array().unwrap();
    assert_eq!(bd.len(), 1);
    assert_eq!(bd[0]["booted"], true);
    assert_eq!(bd[0]["version"], "1.0");
    let text = h.layerctl_ok(&["status", "--booted"]).unwrap();
    assert_eq!(text.matches("Version:").count(), 1, "{text}");
}

#[test]
fn rollback_swaps_and_swaps_back() {
    let mut h = booted_host("rollback");
    deploy_version(&h, "2.0", false);
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["2.0", "1.0"], "a pending deployment is listed first");
    assert_eq!(booted_index(&s), Some(1));
    let pending = h.layerctl(&["status", "--pending-exit-77"]).unwrap();
    assert_eq!(pending.status.code(), Some(77), "a pending deployment exists");

    let out = h.layerctl_ok(&["rollback"]).unwrap();
    assert!(out.contains("Moving '"), "{out}");
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["1.0", "2.0"], "rollback moves the booted deployment back to the front");
    assert_eq!(booted_index(&s), Some(0));
    // an independent reader agrees on the boot order
    let admin = h.ostree_admin_status().unwrap();
    assert!(admin.trim_start().starts_with("* fixture"), "ostree admin status:\n{admin}");
    assert_eq!(h.layerctl(&["status", "--pending-exit-77"]).unwrap().status.code(), Some(0));

    h.layerctl_ok(&["rollback"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["2.0", "1.0"], "a second rollback swaps back");

    // the order is real: rebooting boots 2.0
    h.reboot().unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["2.0", "1.0"]);
    assert_eq!(booted_index(&s), Some(0));
    let os_release = h.exec_ok(&["cat", "/usr/lib/os-release"]).unwrap();
    assert!(os_release.contains("VERSION=\"2.0\""), "{os_release}");

    // and once more from the new boot: back to 1.0 as default, 2.0 still booted
    h.layerctl_ok(&["rollback"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["1.0", "2.0"]);
    assert_eq!(booted_index(&s), Some(1));
}

#[test]
fn rollback_is_refused_while_a_deployment_is_staged() {
    let mut h = booted_host("staged");
    deploy_version(&h, "2.0", true);
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["2.0", "1.0"]);
    assert_eq!(s["deployments"][0]["staged"], true);
    assert!(h.layerctl_ok(&["status"]).unwrap().contains("Staged: yes"));

    let out = h.layerctl(&["rollback"]).unwrap();
    assert_eq!(out.status.code(), Some(1), "rollback must fail while staged");
    let err = stderr(&out);
    assert!(err.contains("staged") && err.contains("cleanup -p"), "unclear message: {err}");
    assert_eq!(versions(&h.status_json().unwrap()), ["2.0", "1.0"], "nothing changed");

    // cleanup -p drops the staged deployment, and a reboot keeps 1.0
    let out = h.layerctl_ok(&["cleanup", "-p"]).unwrap();
    assert!(out.contains("Removing deployment"), "{out}");
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0"]);
    assert!(!h.rundir().unwrap().join("ostree/staged-deployment").exists(), "staged marker must be gone");
    h.reboot().unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0"]);

    // a staged deployment left alone is finalized at shutdown and boots
    deploy_version(&h, "3.0", true);
    h.reboot().unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["3.0", "1.0"]);
    assert_eq!(booted_index(&s), Some(0));
    assert_eq!(s["deployments"][0]["staged"], false);
}

#[test]
fn cleanup_removes_rollback_but_keeps_pinned() {
    let mut h = booted_host("cleanup");
    deploy_version(&h, "2.0", false);
    deploy_version(&h, "3.0", false);
    h.reboot().unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["3.0", "2.0", "1.0"]);
    assert_eq!(booted_index(&s), Some(0));
    h.exec_ok(&["ostree", "admin", "pin", "2"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][2]["pinned"], true, "status sees the pin made by ostree admin");
    assert!(h.layerctl_ok(&["status"]).unwrap().contains("Pinned: yes"));

    let out = h.layerctl_ok(&["cleanup", "-r"]).unwrap();
    assert!(out.contains("Keeping pinned deployment"), "{out}");
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["3.0", "1.0"], "unpinned rollback removed, pinned kept");
    assert_eq!(h.sysroot.deployment_dirs().len(), 2, "the removed deployment's directory is gone");

    // nothing left to remove: "No change.", and exit 77 when asked
    let out = h.layerctl(&["cleanup", "-r", "--unchanged-exit-77"]).unwrap();
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(stdout(&out).contains("No change."));
    // -b prunes and reports a change
    h.layerctl_ok(&["cleanup", "-b"]).unwrap();
    let fsck = h.exec_ok(&["ostree", "fsck", "--repo=/sysroot/ostree/repo"]).unwrap();
    assert!(!fsck.contains("corrupt"), "{fsck}");
}

#[test]
fn rollback_reboot_runs_the_reboot_command() {
    let mut h = new_host("reboot");
    h.layerd_args = vec!["--reboot-command".into(), "/usr/bin/busybox touch /run/reboot-requested".into()];
    h.boot().unwrap();
    h.start_layerd().unwrap();
    let flag = h.rundir().unwrap().join("reboot-requested");
    // a failing rollback (nothing to roll back to) must not reboot
    assert_eq!(h.layerctl(&["rollback", "--reboot"]).unwrap().status.code(), Some(1));
    assert!(!flag.exists(), "no reboot after a failed rollback");
    deploy_version(&h, "2.0", false);
    h.layerctl_ok(&["rollback", "--reboot"]).unwrap();
    assert!(flag.exists(), "the reboot command ran after the rollback");
}

#[test]
fn watchers_see_new_deployments_without_polling() {
    let h = booted_host("watch");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = h.bus_connection().await.unwrap();
        let proxy = Layerd1Proxy::new(&conn).await.unwrap();
        assert_eq!(proxy.deployments().await.unwrap().len(), 1);
        let mut changes = proxy.receive_deployments_changed().await;
        // a change made by another tool, not through layerd
        deploy_version(&h, "2.0", false);
        let changed = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(c) = changes.next().await {
                let v = c.get().await.unwrap();
                if v.len() == 2 {
                    return v;
                }
            }
            panic!("change stream ended");
        })
        .await
        .expect("no PropertiesChanged signal for Deployments");
        assert_eq!(changed[0].version.as_deref(), Some("2.0"));
        assert!(changed[1].booted);
    });
}

#[test]
fn busy_cancel_and_status_while_a_transaction_waits() {
    let h = booted_host("busy");
    deploy_version(&h, "2.0", false);
    let before = h.status_json().unwrap();
    let lock = SysrootLock::take(&h).unwrap();

    // the first rollback waits for the lock another tool holds
    let first = h
        .layerctl_command(&["--client-id", "test-agent", "rollback"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("status shows the running transaction", || {
        h.layerctl_ok(&["status"]).map(|s| s.contains("State: busy")).unwrap_or(false)
    });
    let text = h.layerctl_ok(&["status"]).unwrap();
    assert!(text.contains("Transaction: rollback (started by test-agent"), "{text}");
    let s = h.status_json().unwrap();
    let t = s["transaction"].as_array().expect("transaction is [title, client, path] while running");
    assert_eq!(t[0], "rollback");
    assert!(t[1].as_str().unwrap().starts_with("test-agent"));
    assert!(t[2].as_str().unwrap().starts_with("/org/layerd/Layerd1/Transaction/"));

    // a different change is refused with a busy error naming the running one
    let second = h.layerctl(&["cleanup", "-b"]).unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = stderr(&second);
    assert!(err.contains("busy") && err.contains("rollback") && err.contains("test-agent"), "{err}");
    // ... and over D-Bus the error is machine-readable
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = h.bus_connection().await.unwrap();
        let proxy = Layerd1Proxy::new(&conn).await.unwrap();
        let mut o = HashMap::new();
        o.insert("rollback", ZValue::from(true));
        let path = proxy.cleanup(o).await.unwrap();
        let txn = TransactionProxy::builder(&conn).path(path).unwrap().build().await.unwrap();
        match txn.start(HashMap::new()).await {
            Err(ApiError::Busy(m)) => assert!(m.contains("rollback"), "{m}"),
            other => panic!("expected org.layerd.Layerd1.Error.Busy, got {other:?}"),
        }
    });

    // Ctrl-C in the first client cancels its transaction
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cancelled"), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("Cancelling..."), "stdout: {}", stdout(&out));
    drop(lock);
    let after = h.status_json().unwrap();
    assert_eq!(after["deployments"], before["deployments"], "a cancelled rollback changes nothing");
    assert!(after["transaction"].is_null());
    // with the lock free, a rollback goes through
    h.layerctl_ok(&["rollback"]).unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0", "2.0"]);
}

#[test]
fn bad_requests_and_unreachable_daemon_give_clear_errors() {
    let mut h = booted_host("errors");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = h.bus_connection().await.unwrap();
        let proxy = Layerd1Proxy::new(&conn).await.unwrap();
        let mut o = HashMap::new();
        o.insert("rollback", ZValue::from(true));
        o.insert("bogus", ZValue::from(true));
        match proxy.cleanup(o).await {
            Err(ApiError::InvalidArgument(m)) => assert!(m.contains("'bogus'"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        let mut o = HashMap::new();
        o.insert("reboot", ZValue::from("yes"));
        match proxy.rollback(o).await {
            Err(ApiError::InvalidArgument(m)) => assert!(m.contains("'reboot'") && m.contains("boolean"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        match proxy.cleanup(HashMap::new()).await {
            Err(ApiError::InvalidArgument(m)) => assert!(m.contains("at least one"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    });
    // a single deployment has nothing to roll back to
    let out = h.layerctl(&["rollback"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no rollback deployment"), "{}", stderr(&out));
    let out = h.layerctl(&["cleanup"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("at least one of"), "{}", stderr(&out));

    // a second layerd must not take the name from the running one
    let second = h.exec(&["/run/host/bin/layerd", "--idle-exit", "0"]).unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(stderr(&second).contains("is another layerd running"), "{}", stderr(&second));
    assert!(h.layerd_running(), "the first layerd keeps running");
    h.layerctl_ok(&["status"]).unwrap();

    h.stop_layerd().unwrap();
    let out = h.layerctl(&["status"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("layerd is not running"), "{}", stderr(&out));
}

#[test]
fn daemon_refuses_a_missing_or_non_ostree_sysroot() {
    let layerd = layerd_tests::bin_dir().join("layerd");
    let out = std::process::Command::new(&layerd).args(["--sysroot", "/nonexistent/sysroot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/nonexistent/sysroot"), "{}", stderr(&out));

    let empty = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let out = std::process::Command::new(&layerd).arg("--sysroot").arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not an ostree sysroot"), "{}", stderr(&out));
}

#[test]
fn offline_sysroot_uses_the_default_deployment_as_booted() {
    let mut h = new_host("offline");
    h.publish(&OsSpec::new("2.0")).unwrap();
    h.sysroot.pull_from(&h.fixture).unwrap();
    let sp = format!("--sysroot={}", h.sysroot.path.display());
    layerd_tests::cmd::run(layerd_tests::cmd::command(
        "ostree",
        ["admin", "deploy", sp.as_str(), "--os=fixture", "fixture:fixture/x86_64/coreos/stable"],
    ))
    .unwrap();
    h.start_layerd_offline().unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["2.0", "1.0"]);
    assert_eq!(booted_index(&s), None, "nothing is booted offline");
    h.layerctl_ok(&["rollback"]).unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0", "2.0"], "the second deployment moved to the front");
    h.layerctl_ok(&["cleanup", "-r"]).unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0"]);
}

/// The members of the `org.layerd.*` interfaces in an introspection document, with their
/// argument types and directions, property types and access, one line each.
fn api_members(xml: &str) -> Vec<String> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!("{name}=\"");
        tag.find(&key)
            .map(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_string()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    let mut iface = String::new();
    let mut member: Option<String> = None;
    let mut args: Vec<String> = Vec::new();
    let mut rest = xml;
    // drop comments first: the XML documents itself in them
    let mut clean = String::new();
    while let Some(i) = rest.find("<!--") {
        clean.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    clean.push_str(rest);
    for tag in clean.split('<').map(|t| t.split('>').next().unwrap_or("").trim()) {
        if tag.starts_with("interface ") {
            iface = attr(tag, "name");
        } else if iface.starts_with("org.layerd") {
            if tag.starts_with("method ") || tag.starts_with("signal ") {
                let kind = tag.split_whitespace().next().unwrap();
                member = Some(format!("{iface} {kind} {}", attr(tag, "name")));
                args.clear();
                if tag.ends_with('/') {
                    out.push(format!("{}()", member.take().unwrap()));
                }
            } else if tag.starts_with("arg ") {
                let dir = attr(tag, "direction");
                args.push(format!("{}{}", if dir.is_empty() { "".into() } else { format!("{dir}:") }, attr(tag, "type")));
            } else if tag == "/method" || tag == "/signal" {
                if let Some(m) = member.take() {
                    out.push(format!("{m}({})", args.join(",")));
                }
            } else if tag.starts_with("property ") {
                out.push(format!("{iface} property {} {} {}", attr(tag, "name"), attr(tag, "type"), attr(tag, "access")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn introspection_xml_matches_the_served_api() {
    let h = booted_host("introspect");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt.block_on(async {
        let conn = h.bus_connection().await.unwrap();
        let intro = |path: String| {
            let conn = conn.clone();
            async move {
                zbus::fdo::IntrospectableProxy::builder(&conn)
                    .destination(layerd_interfaces::BUS_NAME)
                    .unwrap()
                    .path(path)
                    .unwrap()
                    .build()
                    .await
                    .unwrap()
                    .introspect()
                    .await
                    .unwrap()
            }
        };
        let main = intro(layerd_interfaces::OBJECT_PATH.to_string()).await;
        let proxy = Layerd1Proxy::new(&conn).await.unwrap();
        let txn_path = proxy.rollback(HashMap::new()).await.unwrap();
        let txn = intro(txn_path.to_string()).await;
        let mut all = api_members(&main);
        all.extend(api_members(&txn));
        all.sort();
        all
    });
    let documented = api_members(layerd_interfaces::INTROSPECTION_XML);
    assert!(documented.len() >= 15, "parsed too little of the XML: {documented:#?}");
    assert_eq!(documented, served, "dbus-interfaces/org.layerd.Layerd1.xml and the daemon disagree");
}
