//! Issue 3: queueing, joining, late subscribers, callers leaving, cancel, crash recovery, idle exit.

use std::process::{Child, Output, Stdio};

use layerd_tests::VirtualHost;

use crate::common::*;

fn spawn(h: &VirtualHost, args: &[&str]) -> Child {
    h.layerctl_command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn finish(c: Child) -> Output {
    c.wait_with_output().unwrap()
}

fn running_title(h: &VirtualHost) -> Option<String> {
    let s = h.status_json().ok()?;
    s["transaction"].as_array().map(|t| t[0].as_str().unwrap_or("").to_string())
}

#[test]
fn wait_queues_in_order_and_runs_after() {
    let h = booted_host("queue");
    deploy_version(&h, "2.0", false);
    let lock = SysrootLock::take(&h).unwrap();
    let first = spawn(&h, &["--client-id", "first", "rollback"]);
    wait_until("the rollback runs", || running_title(&h).as_deref() == Some("rollback"));
    let second = spawn(&h, &["--client-id", "second", "cleanup", "-r", "--wait"]);
    wait_until("the cleanup is queued", || h.layerctl_ok(&["status"]).unwrap().contains("Queued: cleanup -r (started by second"));
    drop(lock);
    let a = finish(first);
    let b = finish(second);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(stdout(&b).contains("Waiting for rollback (started by first"), "{}", stdout(&b));
    // in order: the rollback made 1.0 the default, then cleanup -r removed 2.0 behind it
    let s = h.status_json().unwrap();
    assert_eq!(versions(&s), ["1.0"]);
    assert!(s["transaction"].is_null());
}

#[test]
fn identical_request_joins_and_a_late_subscriber_sees_every_event() {
    let h = booted_host("join");
    deploy_version(&h, "2.0", false);
    let lock = SysrootLock::take(&h).unwrap();
    let first = spawn(&h, &["rollback"]);
    wait_until("the rollback runs", || running_title(&h).as_deref() == Some("rollback"));
    // emitted before the second client existed
    wait_until("the first client saw the lock wait", || {
        h.layerctl_ok(&["status"]).map(|s| s.contains("State: busy")).unwrap_or(false)
    });
    let second = spawn(&h, &["rollback"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(lock);
    let a = finish(first);
    let b = finish(second);
    assert!(a.status.success() && b.status.success(), "{} / {}", stderr(&a), stderr(&b));
    for out in [&a, &b] {
        let text = stdout(out);
        assert!(text.contains("Waiting for the sysroot lock"), "replayed history missing:\n{text}");
        assert_eq!(text.matches("Moving '").count(), 1, "each event exactly once:\n{text}");
    }
    // one rollback happened, not two (two would have swapped back)
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0", "2.0"]);
}

#[test]
fn queued_request_of_a_vanished_client_is_cancelled_and_cancel_stops_the_running_one() {
    let h = booted_host("vanish");
    deploy_version(&h, "2.0", false);
    let before = h.status_json().unwrap();
    let admin_before = h.ostree_admin_status().unwrap();
    let refs_before = h.exec_ok(&["ostree", "refs", "--repo=/sysroot/ostree/repo"]).unwrap();
    let mut dirs_before = h.sysroot.deployment_dirs();
    dirs_before.sort();
    let lock = SysrootLock::take(&h).unwrap();
    let first = spawn(&h, &["rollback"]);
    wait_until("the rollback runs", || running_title(&h).as_deref() == Some("rollback"));
    let mut second = spawn(&h, &["cleanup", "-r", "--wait"]);
    wait_until("the cleanup is queued", || h.layerctl_ok(&["status"]).unwrap().contains("Queued: cleanup -r"));
    second.kill().unwrap();
    let _ = second.wait();
    wait_until("the vanished client's request is dropped", || !h.layerctl_ok(&["status"]).unwrap().contains("Queued:"));

    // `layerctl cancel` cancels the running transaction
    let out = h.layerctl_ok(&["cancel"]).unwrap();
    assert!(out.contains("Cancelled rollback"), "{out}");
    let a = finish(first);
    assert_eq!(a.status.code(), Some(1));
    assert!(stderr(&a).contains("cancelled"), "{}", stderr(&a));
    drop(lock);
    let after = h.status_json().unwrap();
    assert_eq!(after["deployments"], before["deployments"], "nothing changed");
    assert!(after["transaction"].is_null());
    assert_eq!(h.ostree_admin_status().unwrap(), admin_before);
    assert_eq!(h.exec_ok(&["ostree", "refs", "--repo=/sysroot/ostree/repo"]).unwrap(), refs_before);
    let mut dirs_after = h.sysroot.deployment_dirs();
    dirs_after.sort();
    assert_eq!(dirs_after, dirs_before);
    let text = h.layerctl_ok(&["status"]).unwrap();
    assert!(text.contains("LastTransaction: rollback cancelled"), "{text}");
    let none = h.layerctl(&["cancel"]).unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no transaction is running"));
}

#[test]
fn sigkill_mid_transaction_then_restart_recovers_and_records_the_failure() {
    let mut h = booted_host("crash");
    deploy_version(&h, "2.0", false);
    let before = h.status_json().unwrap();
    let refs_before = h.exec_ok(&["ostree", "refs", "--repo=/sysroot/ostree/repo"]).unwrap();
    let lock = SysrootLock::take(&h).unwrap();
    let client = spawn(&h, &["rollback"]);
    wait_until("the rollback runs", || running_title(&h).as_deref() == Some("rollback"));
    // the journal entry is written (and fsynced) as the transaction starts; kill after it, so
    // there is something to recover (a kill before it interrupts nothing that ran)
    let journal = h.sysroot.stateroot_var().join("lib/layerd/running.json");
    wait_until("the transaction is journaled", || journal.exists());
    h.stop_layerd_with(libc::SIGKILL).unwrap();
    let out = finish(client);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("layerd stopped before the transaction finished"), "{}", stderr(&out));
    drop(lock);

    h.start_layerd().unwrap();
    wait_until("recovery finished", || {
        h.layerctl_ok(&["status"]).map(|s| s.contains("State: idle") && s.contains("LastTransaction")).unwrap_or(false)
    });
    let text = h.layerctl_ok(&["status"]).unwrap();
    assert!(text.contains("LastTransaction: rollback failed"), "{text}");
    assert!(text.contains("interrupted"), "{text}");
    let after = h.status_json().unwrap();
    assert_eq!(after["deployments"], before["deployments"], "the sysroot is as before");
    assert_eq!(h.exec_ok(&["ostree", "refs", "--repo=/sysroot/ostree/repo"]).unwrap(), refs_before);
    h.exec_ok(&["ostree", "fsck", "--repo=/sysroot/ostree/repo"]).unwrap();
    assert!(h.ostree_admin_status().unwrap().contains("fixture"));
    // a retry succeeds
    h.layerctl_ok(&["rollback"]).unwrap();
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0", "2.0"]);
    assert!(!h.layerctl_ok(&["status"]).unwrap().contains("LastTransaction"), "a success clears the failure line");
}

#[test]
fn idle_daemon_exits_and_dbus_activation_brings_it_back() {
    let mut h = new_host("idle");
    h.layerd_args = vec!["--idle-exit".into(), "1".into()];
    h.boot().unwrap();
    h.start_layerd().unwrap();
    h.enable_activation().unwrap();
    // a watcher keeps it alive
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = rt.block_on(async {
        let conn = h.bus_connection().await.unwrap();
        let p = layerd_interfaces::proxy::Layerd1Proxy::new(&conn).await.unwrap();
        p.register_client(Default::default()).await.unwrap();
        conn
    });
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(h.layerd_running(), "a registered watcher keeps layerd up");
    drop(conn);
    drop(rt);
    wait_until("layerd exits when idle", || !h.layerd_running());
    let s = h.status_json().expect("status through D-Bus activation");
    assert_eq!(versions(&s), ["1.0"]);
}

#[test]
fn wait_by_default_queues_without_the_flag() {
    let mut h = new_host("waitdefault");
    h.layerd_args = vec!["--wait-by-default".into()];
    h.boot().unwrap();
    h.start_layerd().unwrap();
    deploy_version(&h, "2.0", false);
    let lock = SysrootLock::take(&h).unwrap();
    let first = spawn(&h, &["rollback"]);
    wait_until("the rollback runs", || running_title(&h).as_deref() == Some("rollback"));
    let second = spawn(&h, &["cleanup", "-r"]);
    wait_until("the cleanup is queued", || h.layerctl_ok(&["status"]).unwrap().contains("Queued: cleanup -r"));
    drop(lock);
    let (a, b) = (finish(first), finish(second));
    assert!(a.status.success() && b.status.success(), "{} / {}", stderr(&a), stderr(&b));
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0"]);
}

#[test]
fn progress_output_on_a_terminal() {
    let h = booted_host("tty");
    deploy_version(&h, "2.0", false);
    // util-linux `script` gives layerctl a pseudo-terminal, so the progress-bar path runs
    let cmd = format!(
        "DBUS_SYSTEM_BUS_ADDRESS='{}' {} rollback",
        h.bus.address(),
        layerd_tests::bin_dir().join("layerctl").display()
    );
    let out = std::process::Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(text.contains("Moving '"), "{text}");
    assert_eq!(versions(&h.status_json().unwrap()), ["1.0", "2.0"]);
}
