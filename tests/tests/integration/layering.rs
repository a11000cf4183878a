//! Issue 4: layering local RPMs — install, uninstall, carry-over, safety, scriptlets.

use std::path::PathBuf;

use layerd_tests::rpmbuild::{Entry, RpmSpec, Script};
use layerd_tests::VirtualHost;
use serde_json::Value;

use crate::common::*;

/// Build `spec` into the host's scratch directory (outside the virtual host: the client
/// passes the file as a descriptor).
fn rpm(h: &VirtualHost, spec: &RpmSpec) -> String {
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    spec.write(&dir).unwrap().display().to_string()
}

fn htop(version: &str) -> RpmSpec {
    RpmSpec::new("htop", version)
        .release("1.el8")
        .entry(Entry::file("/usr/bin/htop", format!("#!/bin/sh\necho htop {version}\n"), 0o755))
        .entry(Entry::file("/usr/share/doc/htop/README", "htop readme\n", 0o644))
}

/// `rpm -q` inside the host, against the deployment's own rpmdb.
fn rpm_q(h: &VirtualHost, args: &[&str]) -> std::process::Output {
    let mut a = vec!["/usr/bin/rpm", "--dbpath", "/usr/share/rpm"];
    a.extend_from_slice(args);
    h.exec(&a).unwrap()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// Every observable piece of the sysroot that a failed or cancelled transaction must leave
/// untouched: deployments, refs, the boot entries and the repository's object set.
fn sysroot_state(h: &VirtualHost) -> String {
    let deployments = h.ostree_admin_status().unwrap();
    let refs = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap();
    let mut objects: Vec<String> = walk(&h.sysroot.path.join("ostree/repo/objects"));
    objects.sort();
    let mut loader: Vec<String> = walk(&h.sysroot.path.join("boot/loader/entries"));
    loader.sort();
    let tmp: Vec<String> = walk(&h.sysroot.path.join("ostree/repo/tmp"))
        .into_iter()
        .filter(|p| p.contains("layerd-"))
        .collect();
    format!("{deployments}\n--refs\n{refs}\n--objects {}\n{}\n--entries\n{}\n--tmp\n{}", objects.len(), objects.join("\n"), loader.join("\n"), tmp.join("\n"))
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p: PathBuf = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn install_reboot_uninstall() {
    let mut h = booted_host("install");
    let file = rpm(&h, &htop("3.2.1"));
    let out = h.layerctl_ok(&["install", &file]).unwrap();
    assert!(out.contains("Adding: htop-3.2.1-1.el8.x86_64"), "{out}");

    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["staged"], true, "{d}");
    assert_eq!(strs(&d["requested-local-packages"]), ["htop-3.2.1-1.el8.x86_64"]);
    assert_eq!(strs(&d["packages"]), ["htop-3.2.1-1.el8.x86_64"]);
    assert_eq!(d["version"], "1.0", "the layered commit keeps the base version");
    assert!(d["base-checksum"].is_string(), "{d}");
    let human = h.layerctl_ok(&["status"]).unwrap();
    assert!(human.contains("LocalPackages: htop-3.2.1-1.el8.x86_64"), "{human}");

    // the same request again: nothing built
    let again = h.layerctl(&["install", "--idempotent", "--unchanged-exit-77", &file]).unwrap();
    assert_eq!(again.status.code(), Some(77), "{}{}", stdout(&again), stderr(&again));
    assert!(stdout(&again).contains("No change."), "{}", stdout(&again));
    let dup = h.layerctl(&["install", &file]).unwrap();
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("htop-3.2.1-1.el8.x86_64 is already requested"), "{}", stderr(&dup));

    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["/usr/bin/htop"]).unwrap(), "htop 3.2.1\n");
    let q = rpm_q(&h, &["-q", "htop"]);
    assert_eq!(stdout(&q).trim(), "htop-3.2.1-1.el8.x86_64", "{}", stderr(&q));
    let all = rpm_q(&h, &["-qa"]);
    assert!(stdout(&all).contains("busybox-1.35.0-1.x86_64"), "base packages are still listed: {}", stdout(&all));
    let origin_status = h.ostree_admin_status().unwrap();
    assert!(origin_status.contains("fixture"), "{origin_status}");
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["booted"], true);
    assert_eq!(strs(&s["deployments"][0]["requested-local-packages"]), ["htop-3.2.1-1.el8.x86_64"]);

    // uninstall by name: the file and the rpmdb entry are gone after the reboot
    let out = h.layerctl_ok(&["uninstall", "htop"]).unwrap();
    assert!(out.contains("Removing: htop-3.2.1-1.el8.x86_64"), "{out}");
    let s = h.status_json().unwrap();
    assert!(strs(&s["deployments"][0]["requested-local-packages"]).is_empty());
    assert_eq!(s["deployments"][0]["origin"], "fixture:fixture/x86_64/coreos/stable");
    h.reboot().unwrap();
    assert!(h.exec(&["/usr/bin/htop"]).map(|o| !o.status.success()).unwrap_or(true));
    assert!(!rpm_q(&h, &["-q", "htop"]).status.success());
    let e = h.layerctl(&["uninstall", "htop"]).unwrap();
    assert!(stderr(&e).contains("htop is not a layered package"), "{}", stderr(&e));
    h.layerctl_ok(&["uninstall", "--idempotent", "htop", "--unchanged-exit-77"]).map(|_| ()).unwrap_or(());
}
