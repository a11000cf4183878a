//! Issue 15 (part): layerctl started as `rpm-ostree` with the literal argv the machine-config
//! daemon sends today (its rpm-ostree.go / update.go and rpmostree-client-go), with the nearly
//! empty environment rpmostree-client-go gives its children.

use std::process::{Command, Output, Stdio};

use layerd_tests::fixture::OsSpec;
use layerd_tests::rpmbuild::{Entry, RpmSpec};
use layerd_tests::VirtualHost;
use serde_json::Value;

use crate::common::*;

/// Run `rpm-ostree ARGS` (a link to layerctl), with no environment but the test bus address.
fn rpm_ostree(h: &VirtualHost, args: &[&str]) -> Output {
    let link = h.dir.join("compat-bin/rpm-ostree");
    if !link.exists() {
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(layerd_tests::bin_dir().join("layerctl"), &link).unwrap();
    }
    Command::new(&link)
        .args(args)
        .env_clear()
        .env("DBUS_SYSTEM_BUS_ADDRESS", h.bus.address())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn rpm_ostree_ok(h: &VirtualHost, args: &[&str]) -> String {
    let o = rpm_ostree(h, args);
    assert!(o.status.success(), "rpm-ostree {args:?}: {}{}\n{}", stdout(&o), stderr(&o), h.layerd_log_tail(20));
    stdout(&o)
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[test]
fn machine_config_daemon_argv() {
    let mut h = booted_host("compat-mco");
    // IsNewEnoughForLayering: the YAML must list the container feature
    let v = rpm_ostree_ok(&h, &["--version"]);
    assert!(v.starts_with("rpm-ostree:\n Version: '"), "{v}");
    assert!(v.lines().any(|l| l == "  - container"), "{v}");
    // applyLayeredOSChanges starts with cleanup -p, even with nothing pending
    rpm_ostree_ok(&h, &["cleanup", "-p"]);
    // kargs: every old argument deleted, every new one appended, as --flag=value elements
    rpm_ostree_ok(&h, &["kargs", "--append=mco.a=1", "--append=mco.b"]);
    rpm_ostree_ok(&h, &["kargs", "--delete=mco.a=1", "--delete=mco.b", "--append=mco.a=2"]);
    let s: Value = serde_json::from_str(&rpm_ostree_ok(&h, &["status", "--json"])).unwrap();
    let kargs = strs(&s["deployments"][0]["kernel-arguments"]);
    assert!(kargs.contains(&"mco.a=2".to_string()) && !kargs.iter().any(|k| k == "mco.a=1" || k == "mco.b"), "{kargs:?}");
    assert!(rpm_ostree_ok(&h, &["kargs"]).contains("mco.a=2"));
    // a failed step is followed by cleanup -p: the staged deployment goes
    rpm_ostree_ok(&h, &["cleanup", "-p"]);
    let s: Value = serde_json::from_str(&rpm_ostree_ok(&h, &["status", "--json"])).unwrap();
    assert!(s["deployments"].as_array().unwrap().iter().all(|d| d["staged"] == false), "{s}");
    // the client library's ChangePackages: install A --uninstall B in one transaction
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    let one = RpmSpec::new("one", "1").entry(Entry::file("/usr/bin/one", "#!/bin/sh\necho one\n", 0o755)).write(&dir).unwrap();
    let two = RpmSpec::new("two", "1").entry(Entry::file("/usr/bin/two", "#!/bin/sh\necho two\n", 0o755)).write(&dir).unwrap();
    rpm_ostree_ok(&h, &["install", one.to_str().unwrap(), "-y"]);
    rpm_ostree_ok(&h, &["install", two.to_str().unwrap(), "--uninstall", "one"]);
    let s: Value = serde_json::from_str(&rpm_ostree_ok(&h, &["status", "--json"])).unwrap();
    assert_eq!(strs(&s["deployments"][0]["requested-local-packages"]), ["two-1-1.x86_64"], "{s}");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["two"]).unwrap(), "two\n");
    // RebaseLayered: rebase --experimental to an image, layered packages carried over
    let commit = h.publish_to(&OsSpec::new("7.0"), "fixture/images/seven").unwrap();
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &h.sysroot.path.join("images/seven")).unwrap();
    rpm_ostree_ok(&h, &["rebase", "--experimental", "ostree-unverified-image:oci:/sysroot/images/seven"]);
    let s: Value = serde_json::from_str(&rpm_ostree_ok(&h, &["status", "--json"])).unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["container-image-reference"], "ostree-unverified-image:oci:/sysroot/images/seven");
    assert_eq!(d["version"], "7.0", "the MCO logs the deployment's version: {d}");
    assert_eq!(strs(&d["requested-local-packages"]), ["two-1-1.x86_64"]);
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["two"]).unwrap(), "two\n");
    // `update` is upgrade: the same image again changes nothing
    let o = rpm_ostree(&h, &["update", "--unchanged-exit-77"]);
    assert_eq!(o.status.code(), Some(77), "{}{}", stdout(&o), stderr(&o));
}
