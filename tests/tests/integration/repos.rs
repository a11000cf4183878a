//! Issue 5: repository packages — .repo files, metadata, libsolv, downloads.

use layerd_tests::httpd::Httpd;
use layerd_tests::rpmbuild::{Entry, RpmSpec, Script};
use layerd_tests::yumrepo::{repo_file, YumRepo};
use layerd_tests::VirtualHost;
use serde_json::Value;

use crate::common::*;

/// The field's troubleshooting tools with a real-looking dependency chain: tcpdump needs
/// libpcap's soname, libpcap needs the base glibc's; plus a package that would need a newer
/// glibc than the base has, and the newer glibc itself.
fn tools() -> Vec<RpmSpec> {
    let bin = |name: &str| Entry::file(&format!("/usr/bin/{name}"), format!("#!/bin/sh\necho {name}\n"), 0o755);
    vec![
        RpmSpec::new("libpcap", "1.10.0")
            .entry(Entry::file("/usr/lib64/libpcap.so.1", "elf", 0o755))
            .provides("libpcap.so.1()(64bit)")
            .requires("libc.so.6()(64bit)"),
        RpmSpec::new("tcpdump", "4.99.0").entry(bin("tcpdump")).requires("libpcap.so.1()(64bit)"),
        RpmSpec::new("iperf3", "3.9").entry(bin("iperf3")).requires("/bin/sh").recommends("iperf3-docs"),
        RpmSpec::new("iperf3-docs", "3.9").entry(Entry::file("/usr/share/doc/iperf3/README", "docs", 0o644)),
        RpmSpec::new("lshw", "B.02.19").entry(bin("lshw")),
        RpmSpec::new("numactl", "2.0.16")
            .entry(bin("numactl"))
            .script(Script::Post, "echo numactl-post > /usr/share/numactl.post"),
        RpmSpec::new("glibc", "3.0").entry(Entry::dir("/usr/lib64", 0o755)).provides("libc.so.6()(64bit)"),
        RpmSpec::new("needs-new-glibc", "1").entry(bin("needs-new-glibc")).requires("glibc >= 3.0"),
    ]
}

/// A booted host with the tools repository served over http and configured in /etc.
fn host_with_repo(name: &str) -> (VirtualHost, YumRepo, Httpd) {
    let h = booted_host(name);
    let repo = YumRepo::create(&h.dir.join("yumrepo"), &tools()).unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    write_repo(&h, &repo_file("fixture-tools", &httpd.url(), ""));
    (h, repo, httpd)
}

fn write_repo(h: &VirtualHost, text: &str) {
    h.exec_ok(&["sh", "-c", &format!("mkdir -p /etc/yum.repos.d && printf '%s' '{text}' > /etc/yum.repos.d/fixture.repo")])
        .unwrap();
}

fn strs(v: &Value) -> Vec<String> {
    let mut v: Vec<String> = v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default();
    v.sort();
    v
}

fn rpm_q(h: &VirtualHost, names: &[&str]) -> std::process::Output {
    let mut a = vec!["/usr/bin/rpm", "--dbpath", "/usr/share/rpm", "-q"];
    a.extend_from_slice(names);
    h.exec(&a).unwrap()
}

#[test]
fn install_tools_from_a_repository_reboot_upgrade_uninstall() {
    let (mut h, _repo, httpd) = host_with_repo("repo-install");
    let out = h.layerctl_ok(&["install", "tcpdump", "iperf3", "lshw", "numactl"]).unwrap();
    assert!(out.contains("Adding: libpcap-1.10.0-1.x86_64 (fixture-tools"), "dependencies are listed with their repository: {out}");
    assert!(out.contains("Downloading 6 packages ("), "{out}");
    assert!(out.contains("Downloading packages: 6 items, "), "byte and package progress reaches the client: {out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["staged"], true);
    assert_eq!(strs(&d["requested-packages"]), ["iperf3", "lshw", "numactl", "tcpdump"]);
    let pkgs = strs(&d["packages"]);
    for p in ["tcpdump-4.99.0-1.x86_64", "libpcap-1.10.0-1.x86_64", "iperf3-3.9-1.x86_64", "iperf3-docs-3.9-1.x86_64", "numactl-2.0.16-1.x86_64"] {
        assert!(pkgs.contains(&p.to_string()), "{p} layered (weak dependencies too): {pkgs:?}");
    }
    assert!(!pkgs.iter().any(|p| p.starts_with("glibc")), "the base glibc satisfies libpcap: {pkgs:?}");
    assert!(httpd.requests().iter().any(|r| r.ends_with("tcpdump-4.99.0-1.x86_64.rpm")), "downloaded over http");
    let human = h.layerctl_ok(&["status"]).unwrap();
    assert!(human.contains("LayeredPackages: tcpdump iperf3 lshw numactl"), "{human}");

    h.reboot().unwrap();
    assert_eq!(h.exec_ok(&["tcpdump"]).unwrap(), "tcpdump\n");
    assert_eq!(h.exec_ok(&["cat", "/usr/share/numactl.post"]).unwrap(), "numactl-post\n");
    let q = rpm_q(&h, &["tcpdump", "libpcap", "iperf3", "lshw", "numactl", "glibc"]);
    assert!(q.status.success(), "{}", stdout(&q));
    assert!(stdout(&q).contains("glibc-2.38-1.x86_64"), "the base glibc is untouched: {}", stdout(&q));

    // a new base: the requests are re-resolved and come back
    h.publish(&layerd_tests::fixture::OsSpec::new("2.0")).unwrap();
    h.layerctl_ok(&["upgrade"]).unwrap();
    h.reboot().unwrap();
    assert!(h.exec_ok(&["grep", "VERSION_ID=2.0", "/usr/lib/os-release"]).is_ok());
    assert_eq!(h.exec_ok(&["tcpdump"]).unwrap(), "tcpdump\n");

    // uninstall: the dependency goes with it
    h.layerctl_ok(&["uninstall", "tcpdump"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(strs(&s["deployments"][0]["requested-packages"]), ["iperf3", "lshw", "numactl"]);
    assert!(!strs(&s["deployments"][0]["packages"]).iter().any(|p| p.starts_with("libpcap")));
    h.reboot().unwrap();
    assert!(!rpm_q(&h, &["libpcap"]).status.success());
    assert!(h.exec(&["test", "-e", "/usr/bin/tcpdump"]).map(|o| !o.status.success()).unwrap());
}

#[test]
fn solver_errors_are_clear_and_change_nothing() {
    let (h, _repo, _httpd) = host_with_repo("repo-errors");
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["install", "nope", "tcpdump", "alsonope"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("no package provides: nope, alsonope"), "{}", stderr(&e));
    let e = h.layerctl(&["install", "needs-new-glibc"]).unwrap();
    assert!(stderr(&e).contains("glibc-2.38-1.x86_64 would be upgraded"), "base packages are named: {}", stderr(&e));
    let e = h.layerctl(&["install", "busybox"]).unwrap();
    assert!(stderr(&e).contains("busybox is already provided by the base (busybox-1.35.0-1.x86_64)"), "{}", stderr(&e));
    let out = h.layerctl_ok(&["install", "--dry-run", "tcpdump"]).unwrap();
    assert!(out.contains("Adding: tcpdump-4.99.0-1.x86_64 (fixture-tools"), "{out}");
    assert!(out.contains("Adding: libpcap-1.10.0-1.x86_64"), "{out}");
    assert_eq!(h.ostree_admin_status().unwrap(), before, "nothing staged");
    // malformed repository files name the file and line
    write_repo(&h, "[broken]\nbaseurl=http://x/\ngpgcheck=perhaps\n");
    let e = h.layerctl(&["install", "tcpdump"]).unwrap();
    assert!(stderr(&e).contains("/etc/yum.repos.d/fixture.repo:3: gpgcheck=perhaps is not a boolean"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    // --allow-inactive records a request the base satisfies without layering anything
    let (h2, _r2, _d2) = host_with_repo("repo-inactive");
    h2.layerctl_ok(&["install", "--allow-inactive", "busybox"]).unwrap();
    let s = h2.status_json().unwrap();
    assert_eq!(strs(&s["deployments"][0]["requested-packages"]), ["busybox"]);
    assert!(strs(&s["deployments"][0]["packages"]).is_empty());
}

#[test]
fn metadata_cache_refresh_download_only_cache_only_and_failures() {
    let (h, repo, httpd) = host_with_repo("repo-cache");
    h.layerctl_ok(&["refresh-md"]).unwrap();
    assert!(httpd.requests().iter().any(|r| r == "/repodata/repomd.xml"));
    httpd.clear_log();
    // fresh cache: no metadata request
    h.layerctl_ok(&["install", "--dry-run", "lshw"]).unwrap();
    assert!(!httpd.requests().iter().any(|r| r.contains("repodata")), "{:?}", httpd.requests());
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
    assert!(httpd.requests().iter().any(|r| r == "/repodata/repomd.xml"), "-f refetches");

    // a repository going away mid-download fails cleanly
    let before = h.ostree_admin_status().unwrap();
    httpd.cut_after(10);
    let e = h.layerctl(&["install", "tcpdump"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("repository [fixture-tools]: downloading") && stderr(&e).contains(".rpm failed"), "{}", stderr(&e));
    httpd.cut_after(0);
    assert_eq!(h.ostree_admin_status().unwrap(), before);

    // prepared online, applied offline
    h.layerctl_ok(&["install", "--download-only", "tcpdump"]).unwrap();
    assert_eq!(h.ostree_admin_status().unwrap(), before, "download-only stages nothing");
    httpd.set_down(true);
    httpd.clear_log();
    let out = h.layerctl_ok(&["install", "--cache-only", "tcpdump"]).unwrap();
    assert!(out.contains("tcpdump"), "{out}");
    assert!(httpd.requests().is_empty(), "no network with --cache-only: {:?}", httpd.requests());
    let s = h.status_json().unwrap();
    assert!(strs(&s["deployments"][0]["packages"]).contains(&"tcpdump-4.99.0-1.x86_64".to_string()));
    // a package not in the cache, with the repository down: a clear error, nothing changed
    let staged = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["install", "lshw"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("repository [fixture-tools]: downloading lshw-B.02.19-1.x86_64.rpm failed"), "{}", stderr(&e));
    assert!(stderr(&e).contains("HTTP 503"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), staged);
    drop(repo);
}

#[test]
fn file_repository_and_identical_request() {
    let h = booted_host("repo-file");
    // the repository inside the sysroot directory, reached as file:///sysroot/...
    let repo = YumRepo::create(&h.sysroot.path.join("yumrepo"), &tools()).unwrap();
    assert!(repo.dir.exists());
    write_repo(&h, &repo_file("local", "file:///sysroot/yumrepo", ""));
    h.layerctl_ok(&["install", "lshw"]).unwrap();
    let again = h.layerctl(&["install", "--idempotent", "--unchanged-exit-77", "lshw"]).unwrap();
    assert_eq!(again.status.code(), Some(77), "{}{}", stdout(&again), stderr(&again));
    let e = h.layerctl(&["install", "lshw"]).unwrap();
    assert!(stderr(&e).contains("lshw is already requested"), "{}", stderr(&e));
}

#[test]
fn gpgcheck_accepts_good_signatures_and_refuses_bad_and_missing_ones() {
    let h = booted_host("repo-gpg");
    let good = layerd_tests::gpgkeys::generate(&h.dir, "Fixture Signing <good@example.com>").unwrap();
    let other = layerd_tests::gpgkeys::generate(&h.dir, "Someone Else <other@example.com>").unwrap();
    let keys = h.sysroot.path.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("fixture.asc"), &good.public).unwrap();
    let bin = |name: &str| Entry::file(&format!("/usr/bin/{name}"), "x", 0o755);
    let repo = YumRepo::create(
        &h.dir.join("signed"),
        &[
            RpmSpec::new("signed-good", "1").entry(bin("signed-good")).signed_with(&good.secret),
            RpmSpec::new("signed-bad", "1").entry(bin("signed-bad")).signed_with(&other.secret),
            RpmSpec::new("unsigned", "1").entry(bin("unsigned")),
        ],
    )
    .unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    write_repo(&h, &repo_file("signed", &httpd.url(), "gpgcheck=1\ngpgkey=file:///sysroot/keys/fixture.asc\n").replace("gpgcheck=0\n", ""));
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["install", "signed-bad"]).unwrap();
    assert!(stderr(&e).contains("signed-bad-1-1.x86_64 from repository [signed] has no valid signature"), "{}", stderr(&e));
    let e = h.layerctl(&["install", "unsigned"]).unwrap();
    assert!(stderr(&e).contains("unsigned-1-1.x86_64 from repository [signed] is not signed"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    h.layerctl_ok(&["install", "signed-good"]).unwrap();
}

#[test]
fn hostile_metadata_is_refused_and_mirrors_fall_back() {
    let h = booted_host("repo-hostile");
    let repo = YumRepo::create(&h.dir.join("hostile"), &tools()).unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    // the first base URL is dead: the second serves
    write_repo(&h, &repo_file("mirrors", &format!("http://127.0.0.1:9/dead/\n  {}", httpd.url()), ""));
    h.layerctl_ok(&["install", "--dry-run", "lshw"]).unwrap();
    let before = h.ostree_admin_status().unwrap();
    // a primary whose bytes do not match repomd.xml's checksum
    let primary = std::fs::read_dir(repo.dir.join("repodata")).unwrap().flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with("primary.xml.gz")).unwrap();
    let mut bytes = std::fs::read(&primary).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff; // same size, different content
    std::fs::write(&primary, &bytes).unwrap();
    h.layerctl_ok(&["cleanup", "-m"]).unwrap(); // the good copy is cached: drop it
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("repository [mirrors]") && stderr(&e).contains("checksum mismatch"), "{}", stderr(&e));
    // entity declarations in repomd.xml
    std::fs::write(repo.dir.join("repodata/repomd.xml"), "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaa\">]><repomd>&a;</repomd>").unwrap();
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(stderr(&e).contains("repomd.xml is not valid rpm-md metadata") && stderr(&e).contains("DOCTYPE"), "{}", stderr(&e));
    // an enormous repomd.xml
    std::fs::write(repo.dir.join("repodata/repomd.xml"), vec![b' '; 17 << 20]).unwrap();
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(stderr(&e).contains("more than the 16777216 bytes allowed"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
}

#[test]
fn mirrorlist_and_metalink_repositories() {
    let h = booted_host("repo-mirrors");
    let repo = YumRepo::create(&h.dir.join("mirrored"), &tools()).unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    let url = httpd.url();
    std::fs::write(repo.dir.join("mirrorlist.txt"), format!("# mirrors\nhttp://127.0.0.1:9/dead/\n{url}/\n")).unwrap();
    let no_baseurl = |line: &str| format!("[mirrored]\nname=Mirrored\n{line}\nenabled=1\ngpgcheck=0\n");
    write_repo(&h, &no_baseurl(&format!("mirrorlist={url}/mirrorlist.txt")));
    h.layerctl_ok(&["install", "lshw"]).unwrap();
    assert!(httpd.requests().iter().any(|r| r == "/mirrorlist.txt"));
    assert!(httpd.requests().iter().any(|r| r.ends_with("lshw-B.02.19-1.x86_64.rpm")));

    let sha = {
        use sha2::Digest;
        format!("{:x}", sha2::Sha256::digest(std::fs::read(repo.dir.join("repodata/repomd.xml")).unwrap()))
    };
    let metalink = |hash: &str| {
        format!(
            "<?xml version=\"1.0\"?><metalink version=\"3.0\" xmlns=\"http://www.metalinker.org/\"><files><file name=\"repomd.xml\"><verification><hash type=\"sha256\">{hash}</hash></verification><resources><url protocol=\"http\" type=\"http\" preference=\"100\">{url}/repodata/repomd.xml</url></resources></file></files></metalink>"
        )
    };
    std::fs::write(repo.dir.join("metalink.xml"), metalink(&sha)).unwrap();
    write_repo(&h, &no_baseurl(&format!("metalink={url}/metalink.xml")));
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
    h.layerctl_ok(&["install", "numactl"]).unwrap();
    std::fs::write(repo.dir.join("metalink.xml"), metalink(&"0".repeat(64))).unwrap();
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(stderr(&e).contains("repomd.xml does not match the checksum the metalink gives"), "{}", stderr(&e));
}

#[test]
fn repo_gpgcheck_verifies_the_metadata_signature() {
    let h = booted_host("repo-mdsig");
    let good = layerd_tests::gpgkeys::generate(&h.dir, "Fixture Metadata <md@example.com>").unwrap();
    let other = layerd_tests::gpgkeys::generate(&h.dir, "Someone Else <else@example.com>").unwrap();
    let keys = h.sysroot.path.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("md.asc"), &good.public).unwrap();
    let repo = YumRepo::create(&h.dir.join("mdsig"), &tools()).unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    write_repo(&h, &repo_file("mdsig", &httpd.url(), "repo_gpgcheck=1\ngpgkey=file:///sysroot/keys/md.asc\n"));
    let repomd = repo.dir.join("repodata/repomd.xml");
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(stderr(&e).contains("repomd.xml is not signed (repo_gpgcheck=1)"), "{}", stderr(&e));
    other.detach_sign(&repomd).unwrap();
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(stderr(&e).contains("repomd.xml has no valid signature by the keys of the repository"), "{}", stderr(&e));
    good.detach_sign(&repomd).unwrap();
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
    h.layerctl_ok(&["install", "lshw"]).unwrap();
}

/// The four field tools, solved by libsolv over the real BaseOS + AppStream metadata against
/// the host's real (CoreOS-like) base rpmdb, as stub RPMs in a repository.
fn centos_tools_repo(h: &VirtualHost) -> (YumRepo, Vec<String>) {
    let data = layerd_tests::centos::data().unwrap();
    let root = h.sysroot.deployment_dirs().into_iter().next().unwrap();
    let mut pool = layerd::solve::Pool::new("x86_64").unwrap();
    pool.set_installed_rpmdb(&root, None).unwrap();
    for repo in ["baseos", "appstream"] {
        pool.add_rpmmd(repo, &layerd_tests::centos::primary_path(repo).unwrap(), None, None, 99).unwrap();
    }
    let want: Vec<String> = ["tcpdump", "iperf3", "lshw", "numactl"].iter().map(|s| s.to_string()).collect();
    let picks = pool.solve(&want, layerd::solve::SolveOptions { weak_deps: true, ..Default::default() }).unwrap().unwrap();
    let specs: Vec<RpmSpec> = picks.iter().map(|p| data.by_nevra[&p.nevra()].stub(&data.file_requires, true)).collect();
    let repo = YumRepo::create(&h.dir.join("centos-tools"), &specs).unwrap();
    (repo, picks.iter().map(|p| p.nevra()).collect())
}

#[test]
fn field_tools_with_real_centos_dependency_data() {
    let mut h = VirtualHost::with_os(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")), "centos", &layerd_tests::OsSpec::centos("1.0")).unwrap();
    h.boot().unwrap();
    h.start_layerd().unwrap();
    let base = rpm_q(&h, &["glibc", "openssl-libs", "systemd"]);
    assert!(stdout(&base).contains("glibc-2.34-"), "the base is CentOS-like: {}", stdout(&base));
    let (repo, mut expected) = centos_tools_repo(&h);
    let httpd = Httpd::serve(&repo.dir).unwrap();
    write_repo(&h, &repo_file("centos-tools", &httpd.url(), ""));
    h.layerctl_ok(&["install", "tcpdump", "iperf3", "lshw", "numactl"]).unwrap();
    let s = h.status_json().unwrap();
    let got = strs(&s["deployments"][0]["packages"]);
    expected.sort();
    assert_eq!(got, expected, "layerd adds exactly what the solution needs");
    assert!(got.iter().any(|p| p.starts_with("libpcap-")), "tcpdump's libpcap comes along: {got:?}");
    assert!(!got.iter().any(|p| p.starts_with("glibc-") || p.starts_with("openssl-libs-")), "base packages stay: {got:?}");
    h.reboot().unwrap();
    assert!(h.exec_ok(&["tcpdump"]).unwrap().contains("tcpdump (CentOS Stream 9 stub)"));
    let names: Vec<String> = got.iter().map(|n| n.rsplitn(3, '-').nth(2).unwrap().to_string()).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let q = rpm_q(&h, &refs);
    assert!(q.status.success(), "the rpmdb lists them with their dependencies: {}", stdout(&q));
}

#[test]
fn requests_by_nevra_provide_and_path_weak_deps_switch_and_expiry() {
    let (mut h, _repo, httpd) = host_with_repo("repo-requests");
    // metadata expires after a second: the next request fetches repomd.xml again
    write_repo(&h, &repo_file("fixture-tools", &httpd.url(), "metadata_expire=1\n"));
    let out = h.layerctl_ok(&["install", "--dry-run", "lshw-B.02.19-1.x86_64", "libpcap.so.1()(64bit)", "/usr/bin/tcpdump"]).unwrap();
    for p in ["lshw-B.02.19-1.x86_64", "libpcap-1.10.0-1.x86_64", "tcpdump-4.99.0-1.x86_64"] {
        assert!(out.contains(&format!("Adding: {p}")), "{p}: {out}");
    }
    std::thread::sleep(std::time::Duration::from_millis(1500));
    httpd.clear_log();
    h.layerctl_ok(&["install", "--dry-run", "lshw"]).unwrap();
    assert!(httpd.requests().iter().any(|r| r == "/repodata/repomd.xml"), "expired metadata is fetched again");
    // weak dependencies follow the config switch
    let out = h.layerctl_ok(&["install", "--dry-run", "iperf3"]).unwrap();
    assert!(out.contains("Adding: iperf3-docs-3.9-1.x86_64"), "Recommends by default: {out}");
    h.exec_ok(&["sh", "-c", "mkdir -p /etc/layerd && echo 'install-weak-deps = false' > /etc/layerd/config.toml"]).unwrap();
    h.stop_layerd().unwrap();
    h.start_layerd().unwrap();
    let out = h.layerctl_ok(&["install", "--dry-run", "iperf3"]).unwrap();
    assert!(out.contains("Adding: iperf3-3.9-1.x86_64") && !out.contains("iperf3-docs"), "{out}");
}

#[test]
fn metadata_compressed_with_xz_bz2_and_zstd() {
    let h = booted_host("repo-compress");
    let mut servers = Vec::new();
    for (i, kind) in ["xz", "bz2", "zstd"].iter().enumerate() {
        let repo = YumRepo::create_compressed(&h.dir.join(format!("c-{kind}")), &tools(), kind).unwrap();
        let primary = std::fs::read_dir(repo.dir.join("repodata")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| n.contains("primary.xml")).unwrap();
        let ext = match *kind { "zstd" => ".zst", "bz2" => ".bz2", _ => ".xz" };
        assert!(primary.ends_with(ext), "{primary}");
        let httpd = Httpd::serve(&repo.dir).unwrap();
        write_repo(&h, &repo_file(&format!("c{i}"), &httpd.url(), ""));
        let out = h.layerctl_ok(&["install", "--dry-run", "/usr/bin/tcpdump"]).unwrap();
        assert!(out.contains("Adding: tcpdump-4.99.0-1.x86_64"), "{kind}: {out}");
        servers.push((repo, httpd));
    }
}

#[test]
fn interrupted_downloads_resume_and_unavailable_repos_can_be_skipped() {
    let (h, repo, httpd) = host_with_repo("repo-resume");
    h.layerctl_ok(&["refresh-md"]).unwrap();
    // every response is cut off after half the package: each retry continues where it stopped
    let size = std::fs::metadata(repo.dir.join("lshw-B.02.19-1.x86_64.rpm")).unwrap().len();
    httpd.cut_after(size / 2 + 1);
    h.layerctl_ok(&["install", "lshw"]).unwrap();
    httpd.cut_after(0);
    let ranges = httpd.ranged_requests();
    assert!(ranges.iter().any(|(p, from)| p.ends_with("lshw-B.02.19-1.x86_64.rpm") && *from == size / 2 + 1), "{ranges:?}");
    // a second, unreachable repository with skip_if_unavailable=1 is skipped with a message
    let two = format!(
        "{}\n[gone]\nname=gone\nbaseurl=http://127.0.0.1:9/\nskip_if_unavailable=1\n",
        repo_file("fixture-tools", &httpd.url(), "")
    );
    write_repo(&h, &two);
    let out = h.layerctl_ok(&["install", "--dry-run", "numactl"]).unwrap();
    assert!(out.contains("Skipping repository [gone]"), "{out}");
    assert!(out.contains("Adding: numactl-2.0.16-1.x86_64"), "{out}");
    write_repo(&h, &two.replace("skip_if_unavailable=1\n", ""));
    let e = h.layerctl(&["install", "--dry-run", "numactl"]).unwrap();
    assert!(stderr(&e).contains("repository [gone]"), "{}", stderr(&e));
}

#[test]
fn https_repositories_with_a_private_ca_and_client_certificates() {
    let h = booted_host("repo-tls");
    // certificates inside the sysroot directory, so the host reads them at /sysroot/tls
    let certs = layerd_tests::tls::Certs::create(&h.sysroot.path.join("tls")).unwrap();
    let repo = YumRepo::create(&h.dir.join("tlsrepo"), &tools()).unwrap();
    let server = layerd_tests::tls::TlsServer::serve(&repo.dir, &certs, false).unwrap();
    write_repo(&h, &repo_file("tls", &server.url(), ""));
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(!e.status.success(), "an unknown CA is refused");
    assert!(stderr(&e).to_lowercase().contains("certificate"), "{}", stderr(&e));
    write_repo(&h, &repo_file("tls", &server.url(), "sslverify=0\n"));
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
    write_repo(&h, &repo_file("tls", &server.url(), "sslcacert=/sysroot/tls/ca.pem\n"));
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
    h.layerctl_ok(&["install", "lshw"]).unwrap();
    drop(server);
    // a server demanding a client certificate
    let server = layerd_tests::tls::TlsServer::serve(&repo.dir, &certs, true).unwrap();
    write_repo(&h, &repo_file("tls", &server.url(), "sslcacert=/sysroot/tls/ca.pem\n"));
    let e = h.layerctl(&["refresh-md", "-f"]).unwrap();
    assert!(!e.status.success(), "no client certificate, no metadata: {}", stdout(&e));
    write_repo(&h, &repo_file("tls", &server.url(), "sslcacert=/sysroot/tls/ca.pem\nsslclientcert=/sysroot/tls/client.pem\nsslclientkey=/sysroot/tls/client.key\n"));
    h.layerctl_ok(&["refresh-md", "-f"]).unwrap();
}

#[test]
fn downloads_go_through_the_configured_proxy() {
    let h = booted_host("repo-proxy");
    let repo = YumRepo::create(&h.dir.join("proxied"), &tools()).unwrap();
    let proxy = Httpd::serve(&repo.dir).unwrap();
    // the repository's host does not resolve: only the proxy can reach it
    write_repo(&h, &repo_file("behind-proxy", "http://repo.invalid/", &format!("proxy={}\n", proxy.url())));
    h.layerctl_ok(&["install", "lshw"]).unwrap();
    let seen = proxy.proxied_requests();
    assert!(seen.iter().any(|u| u == "http://repo.invalid/repodata/repomd.xml"), "{seen:?}");
    assert!(seen.iter().any(|u| u == "http://repo.invalid/lshw-B.02.19-1.x86_64.rpm"), "{seen:?}");
}

#[test]
fn entity_tricks_in_primary_metadata_fail_cleanly() {
    let h = booted_host("repo-entities");
    let repo = YumRepo::create(&h.dir.join("bomb"), &tools()).unwrap();
    // "billion laughs": nested entities that would expand to gigabytes
    let mut bomb = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE metadata [\n<!ENTITY l0 \"lollollollollollollollollollol\">\n");
    for i in 1..10 {
        bomb.push_str(&format!("<!ENTITY l{i} \"{}\">\n", format!("&l{};", i - 1).repeat(10)));
    }
    bomb.push_str("]>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" packages=\"1\"><package type=\"rpm\"><name>&l9;</name></package></metadata>\n");
    repo.replace_primary(bomb.as_bytes()).unwrap();
    let httpd = Httpd::serve(&repo.dir).unwrap();
    write_repo(&h, &repo_file("bomb", &httpd.url(), ""));
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["install", "lshw"]).unwrap();
    assert!(!e.status.success());
    // the XML parser's amplification limit stops it; the error names repository and file
    assert!(stderr(&e).contains("repository bomb: reading") && stderr(&e).contains("amplification"), "{}", stderr(&e));
    assert!(h.layerctl_ok(&["status"]).is_ok(), "the daemon survived");
    assert_eq!(h.ostree_admin_status().unwrap(), before);
}
