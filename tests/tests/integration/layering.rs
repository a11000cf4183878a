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
    let body = format!("#!/bin/sh\necho htop {version}\n");
    RpmSpec::new("htop", version)
        .release("1.el8")
        .entry(Entry::file("/usr/bin/htop", body.clone(), 0o755))
        .entry(Entry::file("/usr/bin/htop-hardlink", body, 0o755))
        .hardlink("/usr/bin/htop", "htop")
        .hardlink("/usr/bin/htop-hardlink", "htop")
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
    // the origin file in rpm-ostree's layout, and the commit metadata
    let csum = d["checksum"].as_str().unwrap();
    let origin = h.exec_ok(&["sh", "-c", &format!("cat /ostree/deploy/fixture/deploy/{csum}.*.origin")]).unwrap();
    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(&file).unwrap()))
    };
    assert!(origin.contains("baserefspec=fixture:fixture/x86_64/coreos/stable"), "{origin}");
    assert!(origin.contains(&format!("requested-local={sha}:htop-3.2.1-1.el8.x86_64;")), "{origin}");
    assert!(!origin.contains("\nrefspec="), "{origin}");
    let meta = |k: &str| h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "show", &format!("--print-metadata-key={k}"), csum]).unwrap();
    assert_eq!(meta("layerd.base-commit").trim().trim_matches('\''), d["base-checksum"].as_str().unwrap());
    assert!(meta("layerd.packages").contains("htop-3.2.1-1.el8.x86_64"));
    assert!(meta("layerd.inputs").trim().trim_matches('\'').len() == 64);
    assert!(meta("layerd.version").contains('.'));

    // the same request again: nothing built
    let again = h.layerctl(&["install", "--idempotent", "--unchanged-exit-77", &file]).unwrap();
    assert_eq!(again.status.code(), Some(77), "{}{}", stdout(&again), stderr(&again));
    assert!(stdout(&again).contains("No change."), "{}", stdout(&again));
    let dup = h.layerctl(&["install", &file]).unwrap();
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("htop-3.2.1-1.el8.x86_64 is already requested"), "{}", stderr(&dup));

    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["/usr/bin/htop"]).unwrap(), "htop 3.2.1\n");
    // a hardlink set of the payload (content carried by one member only) arrives whole
    assert_eq!(h.exec_ok(&["/usr/bin/htop-hardlink"]).unwrap(), "htop 3.2.1\n");
    let inode = |p: &str| h.exec_ok(&["stat", "-c", "%i", p]).unwrap();
    assert_eq!(inode("/usr/bin/htop"), inode("/usr/bin/htop-hardlink"));
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
    let same = h.layerctl(&["uninstall", "--idempotent", "--unchanged-exit-77", "htop"]).unwrap();
    assert_eq!(same.status.code(), Some(77), "{}", stderr(&same));
}

#[test]
fn scriptlets_users_owners_caps_and_state_paths() {
    let mut h = booted_host("scripts");
    let svc = RpmSpec::new("svc", "1.0")
        .entry(Entry::dir("/usr/lib/svc", 0o750))
        .entry(Entry::file("/usr/lib/svc/data", "svc data\n", 0o640))
        .entry(Entry::file("/usr/bin/pinger", "#!/bin/sh\necho ping\n", 0o755))
        .owner("/usr/lib/svc", "svc", "svc")
        .owner("/usr/lib/svc/data", "svc", "svc")
        .caps("/usr/bin/pinger", "cap_net_raw=ep")
        // a useradd-style %pre: the user must exist before the files are owned by it
        .script(Script::Pre, "grep -q '^svc:' /etc/passwd || { echo 'svc:x:991:991:svc:/:/sbin/nologin' >> /etc/passwd; echo 'svc:x:991:' >> /etc/group; }\necho pre-ran $1")
        .script(Script::Post, "echo post $1 > /usr/lib/svc/post-ran\nmkdir -p /var/lib/svc && echo dropped > /var/lib/svc/x\necho modified-by-post >> /usr/lib/os-release\necho hello from post")
        .script(Script::PostTrans, "echo configured > /etc/svc.conf");
    let vendor = RpmSpec::new("vendor-tool", "2.0")
        .entry(Entry::dir("/opt/vendor", 0o755))
        .entry(Entry::file("/opt/vendor/bin/tool", "#!/bin/sh\necho tool\n", 0o755))
        .entry(Entry::dir("/var/lib/vendor", 0o700))
        .entry(Entry::file("/var/lib/vendor/seed", "seed\n", 0o600));
    let (a, b) = (rpm(&h, &svc), rpm(&h, &vendor));
    let out = h.layerctl_ok(&["install", &a, &b]).unwrap();
    assert!(out.contains("layerd(svc.post): hello from post"), "script output reaches the client: {out}");
    assert!(h.layerd_log_tail(200).contains("layerd(svc.post): hello from post"), "and the log, tagged");
    // the script appended to a base file that is a hardlink of a repository object: the write
    // went to the overlay's copy, so the repository and the running system are untouched
    h.exec_ok(&["ostree", "fsck", "--repo=/sysroot/ostree/repo"]).unwrap();
    assert!(!h.exec_ok(&["cat", "/usr/lib/os-release"]).unwrap().contains("modified-by-post"));
    h.reboot().unwrap();
    assert!(h.exec_ok(&["cat", "/usr/lib/os-release"]).unwrap().contains("modified-by-post"), "the new deployment has the change");

    assert!(h.exec_ok(&["grep", "^svc:x:991:991:", "/etc/passwd"]).is_ok(), "the %pre user is in the new /etc");
    assert_eq!(h.exec_ok(&["stat", "-c", "%u:%g %a", "/usr/lib/svc/data"]).unwrap().trim(), "991:991 640");
    assert_eq!(h.exec_ok(&["stat", "-c", "%u:%g %a", "/usr/lib/svc"]).unwrap().trim(), "991:991 750");
    assert_eq!(h.exec_ok(&["cat", "/usr/lib/svc/post-ran"]).unwrap(), "post 1\n");
    assert_eq!(h.exec_ok(&["cat", "/etc/svc.conf"]).unwrap(), "configured\n");
    assert!(h.exec(&["test", "-e", "/var/lib/svc/x"]).map(|o| !o.status.success()).unwrap(), "script writes to /var are not kept");
    // file capabilities survive as the security.capability xattr of the deployed commit
    let s = h.status_json().unwrap();
    let csum = s["deployments"][0]["checksum"].as_str().unwrap().to_string();
    let ls = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "ls", "-X", &csum, "/usr/bin/pinger"]).unwrap();
    assert!(ls.contains("security.capability"), "{ls}");

    // /opt moved under /usr/lib/opt with a link; /var content as tmpfiles.d entries
    assert_eq!(h.exec_ok(&["cat", "/usr/lib/opt/vendor/bin/tool"]).unwrap(), "#!/bin/sh\necho tool\n");
    let conf = h.exec_ok(&["cat", "/usr/lib/tmpfiles.d/layerd-vendor-tool.conf"]).unwrap();
    assert!(conf.contains("L /var/opt/vendor - - - - /usr/lib/opt/vendor"), "{conf}");
    assert!(conf.contains("d /var/lib/vendor 0700 root root - -"), "{conf}");
    assert!(conf.contains("C /var/lib/vendor/seed - - - - /usr/share/layerd/state/var/lib/vendor/seed"), "{conf}");
    assert_eq!(h.exec_ok(&["cat", "/usr/share/layerd/state/var/lib/vendor/seed"]).unwrap(), "seed\n");
    let q = rpm_q(&h, &["-q", "svc", "vendor-tool"]);
    assert!(q.status.success(), "{}", stdout(&q));
}

#[test]
fn bad_packages_are_refused_and_change_nothing() {
    let h = booted_host("refuse");
    let before = sysroot_state(&h);

    // truncated: refused when the call is made, naming the file
    let good = rpm(&h, &htop("1"));
    let bytes = std::fs::read(&good).unwrap();
    let truncated = h.dir.join("rpms/truncated.rpm");
    std::fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = h.layerctl(&["install", truncated.to_str().unwrap()]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("truncated.rpm: "), "{}", stderr(&e));
    let bogus = h.dir.join("rpms/bogus.rpm");
    std::fs::write(&bogus, "#!/bin/sh\necho not an rpm\n").unwrap();
    let e = h.layerctl(&["install", bogus.to_str().unwrap()]).unwrap();
    assert!(stderr(&e).contains("bogus.rpm: not a valid RPM"), "{}", stderr(&e));
    let foreign = rpm(&h, &htop("1").arch("aarch64"));
    let e = h.layerctl(&["install", &foreign]).unwrap();
    assert!(stderr(&e).contains("is built for aarch64"), "{}", stderr(&e));

    // payload escaping the tree: a '..' path, and a file written through a symlink
    let dotdot = RpmSpec::new("evil-dotdot", "1").entry(Entry::file("/usr/../../etc/shadow", "pwned\n", 0o644));
    let e = h.layerctl(&["install", &rpm(&h, &dotdot)]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("evil-dotdot") && stderr(&e).contains(".."), "{}", stderr(&e));
    let through = RpmSpec::new("evil-link", "1")
        .entry(Entry::symlink("/usr/lib/evil", "../../../../../../etc"))
        .entry(Entry::file("/usr/lib/evil/shadow", "pwned\n", 0o644));
    let e = h.layerctl(&["install", &rpm(&h, &through)]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("evil-link") && stderr(&e).contains("/usr/lib/evil/shadow"), "{}", stderr(&e));
    let local = RpmSpec::new("local-stuff", "1").entry(Entry::file("/usr/local/bin/x", "x", 0o755));
    let e = h.layerctl(&["install", &rpm(&h, &local)]).unwrap();
    assert!(stderr(&e).contains("/usr/local"), "{}", stderr(&e));

    // provided by the base
    let base_pkg = RpmSpec::new("busybox", "9.9").entry(Entry::file("/usr/share/bb-extra", "x", 0o644));
    let e = h.layerctl(&["install", &rpm(&h, &base_pkg)]).unwrap();
    assert!(stderr(&e).contains("package busybox is already provided by the base (busybox-1.35.0-1.x86_64)"), "{}", stderr(&e));

    // what a local package requires must be there: nothing here provides it (no repository)
    let needy = RpmSpec::new("needy", "1").entry(Entry::file("/usr/bin/needy", "x", 0o755)).requires("libabsent.so.1()(64bit)");
    let e = h.layerctl(&["install", &rpm(&h, &needy)]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("libabsent.so.1()(64bit)") && stderr(&e).contains("needy-1-1.x86_64"), "{}", stderr(&e));

    // a clash with the base, listed; identical files between packages are fine
    let clash = RpmSpec::new("clash", "1").entry(Entry::file("/usr/lib/os-release", "NAME=pwned\n", 0o644));
    let e = h.layerctl(&["install", &rpm(&h, &clash)]).unwrap();
    assert!(stderr(&e).contains("/usr/lib/os-release: clash-1-1.x86_64 and the base differ"), "{}", stderr(&e));
    assert!(stderr(&e).contains("--force-replacefiles"), "{}", stderr(&e));
    let c1 = RpmSpec::new("c1", "1").entry(Entry::file("/usr/share/common/LICENSE", "same\n", 0o644)).entry(Entry::file("/usr/share/common/c1", "1\n", 0o644));
    let c2 = RpmSpec::new("c2", "1").entry(Entry::file("/usr/share/common/LICENSE", "other\n", 0o644));
    let e = h.layerctl(&["install", &rpm(&h, &c1), &rpm(&h, &c2)]).unwrap();
    assert!(stderr(&e).contains("/usr/share/common/LICENSE: c2-1-1.x86_64 and the layered package c1-1-1.x86_64 differ"), "{}", stderr(&e));

    // failing %post: the error carries the script's last output
    let failing = RpmSpec::new("failing", "1")
        .entry(Entry::file("/usr/bin/failing", "x", 0o755))
        .script(Script::Post, "echo about to fail >&2\nexit 3");
    let e = h.layerctl(&["install", &rpm(&h, &failing)]).unwrap();
    assert!(stderr(&e).contains("failing-1-1.x86_64: %post scriptlet failed"), "{}", stderr(&e));
    assert!(stderr(&e).contains("about to fail"), "{}", stderr(&e));
    let lua = RpmSpec::new("lua", "1").script_with(Script::Post, "print('hi')", &["<lua>"]);
    let e = h.layerctl(&["install", &rpm(&h, &lua)]).unwrap();
    assert!(stderr(&e).contains("lua-1-1.x86_64: %post is a Lua scriptlet"), "{}", stderr(&e));

    assert_eq!(sysroot_state(&h), before, "failed installs must leave the sysroot exactly as it was");
    let ok = h.layerctl(&["install", "--dry-run", &rpm(&h, &c1)]).unwrap();
    assert!(stdout(&ok).contains("Adding: c1-1-1.x86_64"), "{}", stdout(&ok));
    assert_eq!(sysroot_state(&h), before, "a dry run changes nothing");

    // --force-replacefiles lets the package win
    h.layerctl_ok(&["install", "--force-replacefiles", &rpm(&h, &clash)]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(strs(&s["deployments"][0]["packages"]), ["clash-1-1.x86_64"]);
}

#[test]
fn cancel_kills_an_endless_scriptlet_and_changes_nothing() {
    let h = booted_host("cancel-script");
    let before = sysroot_state(&h);
    let endless = RpmSpec::new("endless", "1")
        .entry(Entry::file("/usr/bin/endless", "x", 0o755))
        .script(Script::Post, "echo started\nexec sleep 4242");
    let file = rpm(&h, &endless);
    let child = h.layerctl_command(&["install", &file]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let sleeping = || {
        std::process::Command::new("pgrep").args(["-f", "sleep 4242"]).output().map(|o| o.status.success()).unwrap_or(false)
    };
    wait_until("the scriptlet runs", sleeping);
    h.layerctl_ok(&["cancel"]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    wait_until("the scriptlet is gone", || !sleeping());
    assert_eq!(sysroot_state(&h), before);
    // and the next install works
    h.layerctl_ok(&["install", &rpm(&h, &htop("1"))]).unwrap();
}

#[test]
fn replace_set_carry_over_and_rebuilt_rpms() {
    let mut h = booted_host("carry");
    let a = rpm(&h, &htop("1"));
    let tool = rpm(&h, &RpmSpec::new("tool", "1").entry(Entry::file("/usr/bin/tool", "tool 1\n", 0o755)));
    h.layerctl_ok(&["install", &a]).unwrap();
    // a second install before rebooting builds on the pending deployment: both are there
    h.layerctl_ok(&["install", &tool]).unwrap();
    let s = h.status_json().unwrap();
    let mut got = strs(&s["deployments"][0]["requested-local-packages"]);
    got.sort();
    assert_eq!(got, ["htop-1-1.el8.x86_64", "tool-1-1.x86_64"]);
    // the original files are not needed any more (package cache)
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(&tool).unwrap();
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["cat", "/usr/bin/tool"]).unwrap(), "tool 1\n");

    // uninstall --all --install replaces the whole set; uninstalling one keeps the other
    let other = rpm(&h, &RpmSpec::new("other", "1").entry(Entry::file("/usr/bin/other", "o\n", 0o755)));
    h.layerctl_ok(&["uninstall", "tool"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(strs(&s["deployments"][0]["requested-local-packages"]), ["htop-1-1.el8.x86_64"]);
    h.layerctl_ok(&["uninstall", "--all", "--install", &other]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(strs(&s["deployments"][0]["requested-local-packages"]), ["other-1-1.x86_64"]);
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["cat", "/usr/bin/other"]).unwrap(), "o\n");
    assert!(h.exec(&["test", "-e", "/usr/bin/htop"]).map(|o| !o.status.success()).unwrap());

    // a rebuilt RPM with the same NEVRA is a different package: re-imported, new content
    let rebuilt = rpm(&h, &RpmSpec::new("other", "1").entry(Entry::file("/usr/bin/other", "rebuilt\n", 0o755)));
    let out = h.layerctl_ok(&["install", &rebuilt]).unwrap();
    assert!(out.contains("Replacing other-1-1.x86_64 with other-1-1.x86_64"), "{out}");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["cat", "/usr/bin/other"]).unwrap(), "rebuilt\n");
    // the cache keeps only what deployments use
    h.layerctl_ok(&["cleanup", "-b"]).unwrap();
    let refs = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs", "--list", "layerd/pkg"]).unwrap();
    assert!(!refs.contains("htop"), "unused packages are pruned from the cache: {refs}");
    assert!(refs.contains("layerd/pkg/other/1-1.x86__64"), "{refs}");
}

#[test]
fn base_file_triggers_fire_for_layered_files() {
    let mut h = booted_host("triggers");
    let lib = RpmSpec::new("libfoo", "1")
        .entry(Entry::file("/usr/lib64/libfoo.so.1", "elf", 0o755))
        .entry(Entry::file("/usr/share/fixture-hooks/foo.hook", "hook", 0o644));
    let other = RpmSpec::new("barhook", "1").entry(Entry::file("/usr/share/fixture-hooks/bar.hook", "hook", 0o644));
    let unrelated = RpmSpec::new("plain", "1").entry(Entry::file("/usr/bin/plain", "x", 0o755));
    let out = h.layerctl_ok(&["install", &rpm(&h, &lib), &rpm(&h, &other), &rpm(&h, &unrelated)]).unwrap();
    assert!(out.contains("Running %transfiletriggerin of the base package glibc"), "{out}");
    h.reboot().unwrap();
    // the transaction-wide trigger ran once with every matching path on stdin
    assert_eq!(h.exec_ok(&["cat", "/etc/ld.so.cache"]).unwrap(), "# fixture ld.so.cache\n/usr/lib64/libfoo.so.1\n");
    // the per-package trigger ran once per package bringing matching files
    let log = h.exec_ok(&["cat", "/usr/lib/fixture-hooks.log"]).unwrap();
    assert_eq!(log.matches("run 1").count(), 2, "{log}");
    assert!(log.contains("/usr/share/fixture-hooks/foo.hook\n") && log.contains("/usr/share/fixture-hooks/bar.hook\n"), "{log}");
}

#[test]
fn upgrade_to_a_new_base_keeps_layered_packages() {
    let mut h = booted_host("upgrade");
    h.layerctl_ok(&["install", &rpm(&h, &htop("3"))]).unwrap();
    h.reboot().unwrap();
    let same = h.layerctl(&["upgrade", "--unchanged-exit-77"]).unwrap();
    assert_eq!(same.status.code(), Some(77), "{}{}", stdout(&same), stderr(&same));
    h.publish(&layerd_tests::fixture::OsSpec::new("2.0")).unwrap();
    let out = h.layerctl_ok(&["upgrade"]).unwrap();
    assert!(out.contains("New base: "), "{out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["version"], "2.0");
    assert_eq!(d["base-version"], "2.0");
    assert_eq!(strs(&d["requested-local-packages"]), ["htop-3-1.el8.x86_64"]);
    h.reboot().unwrap();
    assert!(h.exec_ok(&["grep", "VERSION_ID=2.0", "/usr/lib/os-release"]).is_ok());
    assert_eq!(h.exec_ok(&["/usr/bin/htop"]).unwrap(), "htop 3\n");
    let q = rpm_q(&h, &["-q", "htop", "fixture-release"]);
    assert_eq!(stdout(&q), "htop-3-1.el8.x86_64\nfixture-release-2.0-1.x86_64\n", "{}", stderr(&q));
}

#[test]
fn offline_sysroot_gets_a_deployment_written_directly() {
    let mut h = new_host("offline-install");
    h.start_layerd_offline().unwrap();
    let pkg = htop("5").script(Script::Post, "echo offline > /usr/share/doc/htop/post");
    let out = h.layerctl_ok(&["install", &rpm(&h, &pkg)]).unwrap();
    assert!(out.contains("default for the next boot"), "{out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["staged"], false);
    assert_eq!(strs(&d["requested-local-packages"]), ["htop-5-1.el8.x86_64"]);
    assert_eq!(s["deployments"].as_array().unwrap().len(), 2, "the previous deployment stays as rollback");
    h.stop_layerd().unwrap();
    h.boot().unwrap();
    h.start_layerd().unwrap();
    assert_eq!(h.exec_ok(&["/usr/bin/htop"]).unwrap(), "htop 5\n");
    assert_eq!(h.exec_ok(&["cat", "/usr/share/doc/htop/post"]).unwrap(), "offline\n");
    let kargs = h.exec_ok(&["cat", "/proc/cmdline"]).unwrap();
    assert!(kargs.contains("console=ttyS0"), "kernel arguments are kept: {kargs}");
}

#[test]
fn sigkill_during_install_leaves_nothing_behind() {
    let mut h = booted_host("crash-install");
    let before = sysroot_state(&h);
    let endless = RpmSpec::new("hang", "1").entry(Entry::file("/usr/bin/hang", "x", 0o755)).script(Script::Post, "exec sleep 4343");
    let file = rpm(&h, &endless);
    let client = h.layerctl_command(&["install", &file]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let sleeping = || {
        std::process::Command::new("pgrep").args(["-f", "sleep 4343"]).output().map(|o| o.status.success()).unwrap_or(false)
    };
    wait_until("the scriptlet runs", sleeping);
    h.stop_layerd_with(libc::SIGKILL).unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    wait_until("the sandbox died with layerd", || !sleeping());
    h.start_layerd().unwrap();
    wait_until("recovery finished", || {
        h.layerctl_ok(&["status"]).map(|s| s.contains("State: idle") && s.contains("LastTransaction")).unwrap_or(false)
    });
    assert_eq!(sysroot_state(&h), before, "the interrupted install left nothing behind");
    h.exec_ok(&["ostree", "fsck", "--repo=/sysroot/ostree/repo"]).unwrap();
    h.layerctl_ok(&["install", &rpm(&h, &htop("1"))]).unwrap();
}

#[test]
fn allow_inactive_records_without_layering_and_nevra_uninstall() {
    let h = booted_host("inactive");
    // two packages shipping the same file with identical content: fine
    let c1 = RpmSpec::new("c1", "1").entry(Entry::file("/usr/share/common/LICENSE", "same\n", 0o644));
    let c3 = RpmSpec::new("c3", "1").entry(Entry::file("/usr/share/common/LICENSE", "same\n", 0o644));
    h.layerctl_ok(&["install", &rpm(&h, &c1), &rpm(&h, &c3)]).unwrap();
    h.layerctl_ok(&["uninstall", "--all"]).unwrap();
    let bb = rpm(&h, &RpmSpec::new("busybox", "9.9").entry(Entry::file("/usr/share/bb-extra", "x", 0o644)));
    let tool = rpm(&h, &RpmSpec::new("tool", "1").entry(Entry::file("/usr/bin/tool", "t", 0o755)));
    let out = h.layerctl_ok(&["install", "--allow-inactive", &bb, &tool]).unwrap();
    assert!(out.contains("Inactive (provided by the base): busybox-9.9-1.x86_64"), "{out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    let mut req = strs(&d["requested-local-packages"]);
    req.sort();
    assert_eq!(req, ["busybox-9.9-1.x86_64", "tool-1-1.x86_64"]);
    assert_eq!(strs(&d["packages"]), ["tool-1-1.x86_64"], "the inactive request is not layered");
    h.layerctl_ok(&["uninstall", "tool-1-1.x86_64", "busybox-9.9-1.x86_64"]).unwrap();
    let s = h.status_json().unwrap();
    assert!(strs(&s["deployments"][0]["requested-local-packages"]).is_empty());
}

#[test]
fn adding_one_package_to_many_does_not_rebuild_the_others() {
    let mut h = booted_host("incremental");
    let pkg = |n: &str| {
        RpmSpec::new(n, "1")
            .entry(Entry::file(&format!("/usr/bin/{n}"), n, 0o755))
            .script(Script::Post, &format!("echo {n} >> /usr/lib/runs.log"))
    };
    let first: Vec<String> = ["a1", "a2", "a3"].iter().map(|n| rpm(&h, &pkg(n))).collect();
    let mut args = vec!["install"];
    args.extend(first.iter().map(String::as_str));
    h.layerctl_ok(&args).unwrap();
    let out = h.layerctl_ok(&["install", &rpm(&h, &pkg("b1"))]).unwrap();
    assert!(out.contains("Running %post of b1-1-1.x86_64"), "{out}");
    assert!(!out.contains("Running %post of a1"), "scriptlets of unchanged packages do not run again: {out}");
    assert!(!out.contains("Imported a1"), "{out}");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["cat", "/usr/lib/runs.log"]).unwrap(), "a1\na2\na3\nb1\n");
    let q = rpm_q(&h, &["-q", "a1", "a2", "a3", "b1"]);
    assert!(q.status.success(), "{}", stdout(&q));
    let s = h.status_json().unwrap();
    let mut p = strs(&s["deployments"][0]["packages"]);
    p.sort();
    assert_eq!(p, ["a1-1-1.x86_64", "a2-1-1.x86_64", "a3-1-1.x86_64", "b1-1-1.x86_64"]);
    // removing one rebuilds from the base: the others' scriptlets run again on a fresh tree
    let out = h.layerctl_ok(&["uninstall", "a2"]).unwrap();
    assert!(out.contains("Running %post of a1-1-1.x86_64"), "{out}");
    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["cat", "/usr/lib/runs.log"]).unwrap(), "a1\na3\nb1\n");
}

#[test]
fn scriptlet_output_goes_to_the_journal_tagged() {
    let h = booted_host("journal");
    // a stand-in for journald's native socket, inside the host's /run
    let dir = h.rundir().unwrap().join("systemd/journal");
    std::fs::create_dir_all(&dir).unwrap();
    let journal = std::os::unix::net::UnixDatagram::bind(dir.join("socket")).unwrap();
    journal.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let pkg = RpmSpec::new("chatty", "1").entry(Entry::file("/usr/bin/chatty", "x", 0o755)).script(Script::Post, "echo one\necho two >&2");
    h.layerctl_ok(&["install", &rpm(&h, &pkg)]).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 2 {
        let n = journal.recv(&mut buf).expect("a journal message");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    for (m, text) in got.iter().zip(["one", "two"]) {
        assert!(m.contains(&format!("MESSAGE={text}\n")), "{m}");
        assert!(m.contains("SYSLOG_IDENTIFIER=layerd(chatty.post)\n"), "{m}");
    }
}
