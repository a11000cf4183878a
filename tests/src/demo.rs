//! `make demo`: a guided run of layerd on a virtual host, printing each command and its output.

use std::path::Path;

use anyhow::{bail, Result};

use crate::fixture::{OsSpec, REF, REMOTE};
use crate::httpd::Httpd;
use crate::rpmbuild::{Entry, RpmSpec, Script};
use crate::yumrepo::{repo_file, YumRepo};
use crate::VirtualHost;

fn step(title: &str) {
    println!("\n\x1b[1m== {title}\x1b[0m");
}

fn show(host: &VirtualHost, args: &[&str]) -> Result<()> {
    println!("\x1b[36m$ layerctl {}\x1b[0m", args.join(" "));
    let out = host.layerctl(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("layerctl {} failed ({})", args.join(" "), out.status);
    }
    Ok(())
}

fn inside(host: &VirtualHost, args: &[&str]) -> Result<()> {
    println!("\x1b[36m[node]# {}\x1b[0m", args.join(" "));
    print!("{}", host.exec_ok(args)?);
    Ok(())
}

/// Run the demo in a scratch directory under `base`.
pub fn run(base: &Path) -> Result<()> {
    step("Building a fixture OS (busybox userland, kernel, rpmdb) and an ostree sysroot");
    let mut host = VirtualHost::new(base, "demo")?;
    println!("virtual host in {}", host.dir.display());

    step("Booting the virtual host and starting layerd on its system bus");
    host.boot()?;
    host.start_layerd()?;
    show(&host, &["status"])?;

    step("An update (OS 2.0) is published; the node deploys it (ostree admin deploy)");
    host.publish(&OsSpec::new("2.0"))?;
    inside(&host, &["ostree", "pull", REMOTE, REF])?;
    inside(&host, &["ostree", "admin", "deploy", "--os=fixture", &format!("{REMOTE}:{REF}")])?;
    show(&host, &["status"])?;

    step("Changed our mind: roll back, so the booted 1.0 stays the default");
    show(&host, &["rollback"])?;
    show(&host, &["status"])?;

    step("Roll back again (swap back to 2.0) and reboot into it");
    show(&host, &["rollback"])?;
    println!("\x1b[36m[node]# reboot\x1b[0m   (stop layerd, finalize any staged deployment, boot the new default)");
    host.reboot()?;
    show(&host, &["status"])?;

    step("Drop the old deployment");
    show(&host, &["cleanup", "-r"])?;

    step("A package repository (rpm-md, served over http) is configured in /etc/yum.repos.d");
    let bin = |name: &str| Entry::file(&format!("/usr/bin/{name}"), format!("#!/bin/sh\necho '{name} (demo build)'\n"), 0o755);
    let repo = YumRepo::create(
        &host.dir.join("demo-repo"),
        &[
            RpmSpec::new("libpcap", "1.10.0").release("1.el9").entry(Entry::file("/usr/lib64/libpcap.so.1", "elf", 0o755)).provides("libpcap.so.1()(64bit)").requires("libc.so.6()(64bit)"),
            RpmSpec::new("tcpdump", "4.99.0").release("1.el9").entry(bin("tcpdump")).requires("libpcap.so.1()(64bit)"),
            RpmSpec::new("htop", "3.2.1").release("1.el9").entry(bin("htop")).script(Script::Post, "echo 'htop installed' > /usr/share/htop.installed"),
            RpmSpec::new("iperf3", "3.9").release("1.el9").entry(bin("iperf3")),
        ],
    )?;
    let httpd = Httpd::serve(&repo.dir)?;
    let repo_text = repo_file("demo-tools", &httpd.url(), "");
    inside(&host, &["sh", "-c", &format!("mkdir -p /etc/yum.repos.d && printf '%s' '{repo_text}' > /etc/yum.repos.d/demo.repo && cat /etc/yum.repos.d/demo.repo")])?;

    step("Layer troubleshooting tools: dependencies solved with libsolv, downloads checked");
    show(&host, &["install", "tcpdump", "htop", "iperf3"])?;
    show(&host, &["status"])?;
    println!("\x1b[36m[node]# reboot\x1b[0m");
    host.reboot()?;
    inside(&host, &["tcpdump"])?;
    inside(&host, &["/usr/bin/rpm", "--dbpath", "/usr/share/rpm", "-q", "tcpdump", "libpcap", "htop", "iperf3"])?;
    show(&host, &["status", "--json", "--booted"])?;

    step("Remove one of them again (the others stay layered)");
    show(&host, &["uninstall", "iperf3"])?;
    show(&host, &["status"])?;
    host.shutdown()?;
    println!("\nDemo complete.");
    Ok(())
}
