//! Issue 6 (ostree part): rebase between refs, upgrade --check/--preview/--allow-downgrade,
//! deploy a revision.

use layerd_tests::fixture::{OsSpec, REF};
use layerd_tests::rpmbuild::{Entry, RpmSpec};
use layerd_tests::VirtualHost;
use serde_json::Value;

use crate::common::*;

const TESTING: &str = "fixture/x86_64/coreos/testing";

fn strs(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn layer_tool(h: &VirtualHost) {
    let dir = h.dir.join("rpms");
    std::fs::create_dir_all(&dir).unwrap();
    let f = RpmSpec::new("tool", "1").entry(Entry::file("/usr/bin/tool", "#!/bin/sh\necho tool\n", 0o755)).write(&dir).unwrap();
    h.layerctl_ok(&["install", f.to_str().unwrap()]).unwrap();
}

fn os_version(h: &VirtualHost) -> String {
    h.exec_ok(&["sh", "-c", ". /usr/lib/os-release; echo $VERSION_ID"]).unwrap().trim().to_string()
}

#[test]
fn rebase_to_another_ref_carries_packages_and_rollback_returns() {
    let mut h = booted_host("rebase-ref");
    layer_tool(&h);
    h.reboot().unwrap();
    h.publish_to(&OsSpec::new("5.0"), TESTING).unwrap();
    let out = h.layerctl_ok(&["rebase", &format!(":{TESTING}")]).unwrap();
    assert!(out.contains("New base: 5.0 ("), "{out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["origin"], format!("fixture:{TESTING}"));
    assert_eq!(d["staged"], true);
    assert_eq!(strs(&d["requested-local-packages"]), ["tool-1-1.x86_64"], "layered packages come along");
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "5.0");
    assert_eq!(h.exec_ok(&["tool"]).unwrap(), "tool\n");
    // rebasing to where it is changes nothing
    let same = h.layerctl(&["rebase", "--unchanged-exit-77", &format!("fixture:{TESTING}")]).unwrap();
    assert_eq!(same.status.code(), Some(77), "{}", stderr(&same));
    // and back
    h.layerctl_ok(&["rollback"]).unwrap();
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "1.0");
    assert_eq!(h.status_json().unwrap()["deployments"][0]["origin"], format!("fixture:{REF}"));
    // errors: nothing changes
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["rebase", "fixture:no/such/ref"]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("no/such/ref"), "{}", stderr(&e));
    let e = h.layerctl(&["rebase", "https://example.com/not/a/ref"]).unwrap();
    assert!(stderr(&e).contains("not an ostree refspec, nor an image reference"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
}

#[test]
fn upgrade_check_preview_and_downgrade_protection() {
    let mut h = booted_host("upgrade-check");
    let none = h.layerctl(&["upgrade", "--check", "--unchanged-exit-77"]).unwrap();
    assert_eq!(none.status.code(), Some(77));
    assert!(stdout(&none).contains("No update available."), "{}", stdout(&none));
    let old = h.exec_ok(&["ostree", "rev-parse", &format!("fixture:{REF}")]).unwrap().trim().to_string();
    // commit timestamps have one-second resolution: make 2.0 newer than 1.0
    std::thread::sleep(std::time::Duration::from_millis(1100));
    h.publish(&OsSpec::new("2.0")).unwrap();
    let before = h.ostree_admin_status().unwrap();
    let out = h.layerctl_ok(&["upgrade", "--check"]).unwrap();
    assert!(out.contains("Available: 2.0 ("), "{out}");
    let out = h.layerctl_ok(&["upgrade", "--preview"]).unwrap();
    assert!(out.contains("Changed: fixture-release-1.0-1.x86_64 -> fixture-release-2.0-1.x86_64"), "{out}");
    assert_eq!(h.ostree_admin_status().unwrap(), before, "--check and --preview change nothing");
    h.layerctl_ok(&["upgrade"]).unwrap();
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "2.0");
    // the ref moves back to the older commit: upgrading to it is a downgrade
    layerd_tests::cmd::run(layerd_tests::cmd::command(
        "ostree",
        [format!("--repo={}", h.fixture.path.display()), "reset".into(), REF.into(), old.clone()],
    ))
    .unwrap();
    let e = h.layerctl(&["upgrade"]).unwrap();
    assert!(stderr(&e).contains("is older than the current base") && stderr(&e).contains("--allow-downgrade"), "{}", stderr(&e));
    h.layerctl_ok(&["upgrade", "--allow-downgrade"]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][0]["checksum"], old);
}

#[test]
fn deploy_a_revision_by_version_or_checksum() {
    let mut h = booted_host("deploy-rev");
    let two = h.publish(&OsSpec::new("2.0")).unwrap();
    h.publish(&OsSpec::new("3.0")).unwrap();
    h.layerctl_ok(&["deploy", "2.0"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["version"], "2.0");
    assert_eq!(s["deployments"][0]["checksum"], two);
    let origin = h.exec_ok(&["sh", "-c", &format!("cat /ostree/deploy/fixture/deploy/{two}.*.origin")]).unwrap();
    assert!(origin.contains(&format!("override-commit={two}")), "{origin}");
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "2.0");
    let e = h.layerctl(&["deploy", "9.9"]).unwrap();
    assert!(stderr(&e).contains("has no commit with version 9.9"), "{}", stderr(&e));
    // upgrade follows the ref again
    h.layerctl_ok(&["upgrade"]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["version"], "3.0");
    let csum = s["deployments"][0]["checksum"].as_str().unwrap().to_string();
    let origin = h.exec_ok(&["sh", "-c", &format!("cat /ostree/deploy/fixture/deploy/{csum}.*.origin")]).unwrap();
    assert!(!origin.contains("override-commit"), "{origin}");
    // by checksum, with deploy or with rebase
    h.layerctl_ok(&["deploy", &two]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][0]["checksum"], two);
    h.layerctl_ok(&["upgrade"]).unwrap();
    h.layerctl_ok(&["rebase", &two]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][0]["checksum"], two);
}

#[test]
fn rebase_to_a_bootable_container_image_and_back() {
    let mut h = booted_host("image-rebase");
    layer_tool(&h);
    h.reboot().unwrap();
    let commit = h.publish_to(&OsSpec::new("7.0"), "fixture/images/seven").unwrap();
    let oci = h.sysroot.path.join("images/seven");
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &oci).unwrap();
    let image = "ostree-unverified-image:oci:/sysroot/images/seven";
    let out = h.layerctl_ok(&["rebase", image]).unwrap();
    assert!(out.contains("Fetching"), "{out}");
    let s = h.status_json().unwrap();
    let d = &s["deployments"][0];
    assert_eq!(d["container-image-reference"], image);
    assert!(d["container-image-reference-digest"].as_str().unwrap_or("").starts_with("sha256:"), "{d}");
    assert_eq!(strs(&d["requested-local-packages"]), ["tool-1-1.x86_64"], "layered packages come along");
    assert!(d["origin"].is_null(), "{d}");
    // zincati and the MCO read the deployment's own version: a layered commit on an image base
    // carries the image's
    assert_eq!(d["version"], "7.0", "{d}");
    assert_eq!(d["base-version"], "7.0", "{d}");
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "7.0");
    assert_eq!(h.exec_ok(&["tool"]).unwrap(), "tool\n");
    let same = h.layerctl(&["upgrade", "--unchanged-exit-77"]).unwrap();
    assert_eq!(same.status.code(), Some(77), "same image: {}{}", stdout(&same), stderr(&same));
    h.layerctl_ok(&["rollback"]).unwrap();
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "1.0");
}

#[test]
fn images_from_a_registry_upgrade_by_digest_and_clear_errors() {
    let mut h = booted_host("image-registry");
    let registry = layerd_tests::images::Registry::start(&h.dir.join("registry")).unwrap();
    // the registry is plain http: mark it insecure for the host's image tools
    h.exec_ok(&["sh", "-c", &format!("mkdir -p /etc/containers && printf '%s' '{}' > /etc/containers/registries.conf", registry.registries_conf())])
        .unwrap();
    let v8 = h.publish_to(&OsSpec::new("8.0"), "fixture/images/custom").unwrap();
    let dir8 = h.dir.join("images/v8");
    layerd_tests::images::encapsulate(&h.fixture.path, &v8, &dir8).unwrap();
    registry.push(&dir8, "fixture/os:custom").unwrap();
    let image = format!("ostree-unverified-registry:{}/fixture/os:custom", registry.host());
    let out = h.layerctl_ok(&["rebase", &image]).unwrap();
    assert!(out.contains("Fetching 1 of 1 layers") && out.contains("Fetching layers: 1 items"), "layer progress: {out}");
    let s = h.status_json().unwrap();
    let first_digest = s["deployments"][0]["container-image-reference-digest"].as_str().unwrap().to_string();
    assert_eq!(s["deployments"][0]["container-image-reference"], image.as_str());
    assert_eq!(s["deployments"][0]["version"], "8.0", "the image's version");
    let meta = &s["deployments"][0]["base-commit-meta"];
    assert!(meta.get("ostree.manifest").is_some() && meta.get("ostree.container.image-config").is_some(), "{meta}");
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "8.0");
    let none = h.layerctl(&["upgrade", "--unchanged-exit-77"]).unwrap();
    assert_eq!(none.status.code(), Some(77), "{}", stderr(&none));
    let none = h.layerctl(&["upgrade", "--check", "--unchanged-exit-77"]).unwrap();
    assert_eq!(none.status.code(), Some(77), "{}", stderr(&none));
    assert!(stdout(&none).contains("No update available."), "{}", stdout(&none));
    // a new image pushed to the same tag: upgrade stages it
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let v9 = h.publish_to(&OsSpec::new("9.0"), "fixture/images/custom").unwrap();
    let dir9 = h.dir.join("images/v9");
    layerd_tests::images::encapsulate(&h.fixture.path, &v9, &dir9).unwrap();
    registry.push(&dir9, "fixture/os:custom").unwrap();
    let before_check = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap();
    let out = h.layerctl_ok(&["upgrade", "--check"]).unwrap();
    assert!(out.contains("Available: 9.0 (sha256:"), "{out}");
    assert_eq!(h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap(), before_check, "--check fetches no layer");
    h.layerctl_ok(&["upgrade"]).unwrap();
    let s = h.status_json().unwrap();
    assert_ne!(s["deployments"][0]["container-image-reference-digest"].as_str().unwrap(), first_digest);
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "9.0");
    // back to the first image by its digest
    h.layerctl_ok(&["deploy", &first_digest]).unwrap();
    let s = h.status_json().unwrap();
    assert_eq!(s["deployments"][0]["container-image-reference-digest"], first_digest.as_str());
    assert!(s["deployments"][0]["container-image-reference"].as_str().unwrap().ends_with(&format!("fixture/os@{first_digest}")));
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "8.0");
    // stored images live as long as a deployment names them: cleanup drops the tag's image
    let images = |h: &VirtualHost| {
        h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs", "ostree/container/image"]).unwrap().lines().count()
    };
    assert_eq!(images(&h), 2, "the tag's and the digest's image");
    let out = h.layerctl_ok(&["cleanup", "-r"]).unwrap();
    assert!(out.contains("Dropped 1 stored image"), "{out}");
    assert_eq!(images(&h), 1);
    // errors name the problem and change nothing
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["rebase", &format!("ostree-unverified-registry:{}/fixture/os:nope", registry.host())]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("fixture/os:nope"), "{}", stderr(&e));
    let e = h.layerctl(&["rebase", "ostree-unverified-registry:127.0.0.1:9/fixture/os:x"]).unwrap();
    assert!(!e.status.success() && stderr(&e).contains("127.0.0.1:9"), "{}", stderr(&e));
    let e = h.layerctl(&["rebase", "ostree-unverified-registry:"]).unwrap();
    assert!(stderr(&e).contains("not a valid image reference"), "{}", stderr(&e));
    // a plain (not ostree-encapsulated) image cannot be booted
    let plain = h.dir.join("images/plain");
    layerd_tests::cmd::run(layerd_tests::cmd::command("umoci", ["init", "--layout"]).arg(&plain)).unwrap();
    let src = format!("{}:latest", plain.display());
    layerd_tests::cmd::run(layerd_tests::cmd::command("umoci", ["new", "--image"]).arg(&src)).unwrap();
    std::fs::write(h.dir.join("app.txt"), "an application, not an OS\n").unwrap();
    layerd_tests::cmd::run(layerd_tests::cmd::command("umoci", ["insert", "--image"]).arg(&src).arg(h.dir.join("app.txt")).arg("/app.txt")).unwrap();
    layerd_tests::cmd::run(layerd_tests::cmd::command("skopeo", ["copy", "--dest-tls-verify=false"]).arg(format!("oci:{src}")).arg(format!("docker://{}/plain/app:latest", registry.host())))
        .unwrap();
    let e = h.layerctl(&["rebase", &format!("ostree-unverified-registry:{}/plain/app:latest", registry.host())]).unwrap();
    assert!(!e.status.success());
    assert!(stderr(&e).contains("plain/app:latest is not a bootable image"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
}


#[test]
fn signed_image_references_follow_the_container_policy() {
    let h = booted_host("image-signed");
    let registry = layerd_tests::images::Registry::start(&h.dir.join("registry")).unwrap();
    let commit = h.publish_to(&OsSpec::new("6.0"), "fixture/images/signed").unwrap();
    let dir = h.dir.join("images/six");
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &dir).unwrap();
    registry.push(&dir, "fixture/os:six").unwrap();
    let set_policy = |registry_rule: &str| {
        let policy = format!(
            "{{\"default\":[{{\"type\":\"reject\"}}],\"transports\":{{\"docker\":{{\"{}\":[{registry_rule}]}}}}}}",
            registry.host()
        );
        h.exec_ok(&["sh", "-c", &format!(
            "mkdir -p /etc/containers && printf '%s' '{}' > /etc/containers/registries.conf && printf '%s' '{policy}' > /etc/containers/policy.json",
            registry.registries_conf()
        )])
        .unwrap();
    };
    let signed = format!("ostree-image-signed:docker://{}/fixture/os:six", registry.host());
    let before = h.ostree_admin_status().unwrap();
    // the policy demands a signature from this registry; the image has none
    set_policy(r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/etc/pki/containers/fixture.gpg"}"#);
    let e = h.layerctl(&["rebase", &signed]).unwrap();
    assert!(stderr(&e).contains("refused by the signature policy"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    // a policy that accepts anything by default is not a signature policy
    h.exec_ok(&["sh", "-c", r#"printf '%s' '{"default":[{"type":"insecureAcceptAnything"}]}' > /etc/containers/policy.json"#]).unwrap();
    let e = h.layerctl(&["rebase", &signed]).unwrap();
    assert!(stderr(&e).contains("must require signatures"), "{}", stderr(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    // the policy trusts this registry explicitly: the verified copy is imported
    set_policy(r#"{"type":"insecureAcceptAnything"}"#);
    let out = h.layerctl_ok(&["rebase", &signed]).unwrap();
    assert!(out.contains("Verifying") && out.contains("policy.json"), "{out}");
    assert_eq!(h.status_json().unwrap()["deployments"][0]["container-image-reference"], signed.as_str());
    // the verified copy leaves no store entry behind, and an unchanged image is not fetched again
    let refs = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap();
    assert!(!refs.contains("ostree/container/image"), "{refs}");
    let same = h.layerctl(&["upgrade", "--unchanged-exit-77"]).unwrap();
    assert_eq!(same.status.code(), Some(77), "{}{}", stdout(&same), stderr(&same));
    assert!(!stdout(&same).contains("Verifying"), "{}", stdout(&same));
}

#[test]
fn derived_image_with_tools_and_custom_version_fetches_only_its_layer() {
    let mut h = booted_host("image-derived");
    let registry = layerd_tests::images::Registry::start(&h.dir.join("registry")).unwrap();
    h.exec_ok(&["sh", "-c", &format!("mkdir -p /etc/containers && printf '%s' '{}' > /etc/containers/registries.conf", registry.registries_conf())])
        .unwrap();
    // the node image team's build: the bootable base plus one layer with a tool and a version
    let base = h.publish_to(&OsSpec::new("4.10"), "fixture/images/base").unwrap();
    let dir = h.dir.join("images/base");
    layerd_tests::images::encapsulate(&h.fixture.path, &base, &dir).unwrap();
    registry.push(&dir, "node/os:base").unwrap();
    let extra = h.dir.join("extra");
    std::fs::create_dir_all(extra.join("usr/bin")).unwrap();
    std::fs::create_dir_all(extra.join("usr/lib")).unwrap();
    std::fs::write(extra.join("usr/bin/htop"), "#!/bin/sh\necho htop from the image\n").unwrap();
    std::fs::set_permissions(extra.join("usr/bin/htop"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(extra.join("usr/lib/os-release"), "NAME=\"Fixture CoreOS\"\nID=fixture\nVERSION_ID=410.84.custom-0\n").unwrap();
    layerd_tests::images::add_layer(&dir, &extra, "COPY usr /usr").unwrap();
    registry.push(&dir, "node/os:custom").unwrap();

    h.layerctl_ok(&["rebase", &format!("ostree-unverified-registry:{}/node/os:base", registry.host())]).unwrap();
    let out = h.layerctl_ok(&["rebase", &format!("ostree-unverified-registry:{}/node/os:custom", registry.host())]).unwrap();
    assert!(out.contains("Fetching 1 of 2 layers (the others are already here)"), "only the new layer is fetched: {out}");
    // and the bytes fetched are the small layer's, not the base's
    let bytes: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Fetching layers: 1 items, ")?.strip_suffix(" bytes")?.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {out}"));
    assert!(bytes > 0 && bytes < 10_000, "{bytes} bytes for a one-file layer");
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "410.84.custom-0");
    assert_eq!(h.exec_ok(&["htop"]).unwrap(), "htop from the image\n");
    // back to what was booted before (the staged base image was replaced by the custom one)
    h.layerctl_ok(&["rollback"]).unwrap();
    h.reboot().unwrap();
    assert_eq!(os_version(&h), "1.0");
}

#[test]
fn oci_archive_images_and_cancel_during_a_pull() {
    let h = booted_host("image-cancel");
    // an image big enough that its import takes a moment
    let spec = OsSpec { bulk_files: 600, bulk_file_bytes: 100_000, ..OsSpec::new("3.3") };
    let commit = h.publish_to(&spec, "fixture/images/archive").unwrap();
    let dir = h.dir.join("images/archive-src");
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &dir).unwrap();
    let archive = h.sysroot.path.join("images/os.ociarchive");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    layerd_tests::cmd::run(layerd_tests::cmd::command("skopeo", ["copy"]).arg(format!("oci:{}", dir.display())).arg(format!("oci-archive:{}", archive.display()))).unwrap();
    let image = "ostree-unverified-image:oci-archive:/sysroot/images/os.ociarchive";
    let before = h.ostree_admin_status().unwrap();
    let refs_before = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap();
    let client = h.layerctl_command(&["rebase", image]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    wait_until("the pull runs", || h.layerd_log_tail(50).contains("Fetching 1 of 1 layers"));
    h.layerctl_ok(&["cancel"]).unwrap();
    let out = client.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    let refs_after = h.exec_ok(&["ostree", "--repo=/sysroot/ostree/repo", "refs"]).unwrap();
    assert!(!refs_after.contains("ostree/container/image"), "no partial image ref: {refs_after}");
    assert_eq!(refs_after, refs_before);
    // and the same archive imports when not interrupted
    h.layerctl_ok(&["rebase", image]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][0]["version"], "3.3");
}

#[test]
fn ostree_remote_image_checks_the_commit_signature() {
    let h = booted_host("image-remote-sig");
    let key = layerd_tests::gpgkeys::generate(&h.dir, "Fixture OS Signing <os@example.com>").unwrap();
    let keys = h.sysroot.path.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("os.asc"), &key.public).unwrap();
    // a remote that exists only to hold the trusted keys
    h.exec_ok(&["ostree", "remote", "add", "--repo=/sysroot/ostree/repo", "--set=gpg-verify=true", "--gpg-import=/sysroot/keys/os.asc", "signed-os", "file:///nonexistent"]).unwrap();
    let signed = h.publish_to(&OsSpec::new("5.5"), "fixture/images/signed-ostree").unwrap();
    key.sign_ostree_commit(&h.fixture.path, &signed).unwrap();
    let unsigned = h.publish_to(&OsSpec::new("5.6"), "fixture/images/unsigned-ostree").unwrap();
    for (name, commit) in [("signed", &signed), ("unsigned", &unsigned)] {
        layerd_tests::images::encapsulate(&h.fixture.path, commit, &h.sysroot.path.join(format!("images/{name}"))).unwrap();
    }
    let before = h.ostree_admin_status().unwrap();
    let e = h.layerctl(&["rebase", "ostree-remote-image:signed-os:oci:/sysroot/images/unsigned"]).unwrap();
    assert!(!e.status.success(), "an unsigned commit is refused: {}", stdout(&e));
    assert_eq!(h.ostree_admin_status().unwrap(), before);
    h.layerctl_ok(&["rebase", "ostree-remote-image:signed-os:oci:/sysroot/images/signed"]).unwrap();
    assert_eq!(h.status_json().unwrap()["deployments"][0]["version"], "5.5");
}

#[test]
fn images_from_containers_storage() {
    let h = booted_host("image-cstorage");
    let commit = h.publish_to(&OsSpec::new("2.2"), "fixture/images/cstorage").unwrap();
    layerd_tests::images::encapsulate(&h.fixture.path, &commit, &h.sysroot.path.join("images/cs")).unwrap();
    // the node's own container storage (vfs driver: no kernel overlay needed), filled with skopeo
    let storage = "[vfs@/var/lib/containers/storage+/run/containers/storage]localhost/fixture/os:2.2";
    h.exec_ok(&["skopeo", "copy", "--insecure-policy", "oci:/sysroot/images/cs", &format!("containers-storage:{storage}")]).unwrap();
    let before = h.ostree_admin_status().unwrap();
    let out = h.layerctl(&["rebase", &format!("ostree-unverified-image:containers-storage:{storage}")]).unwrap();
    if out.status.success() {
        assert_eq!(h.status_json().unwrap()["deployments"][0]["version"], "2.2");
    } else {
        // Debian 12's skopeo (1.9) cannot serve containers-storage to the image proxy: the
        // error says so and nothing changes; newer skopeo takes the other branch
        assert!(stderr(&out).contains("skopeo too old to pull from containers-storage"), "{}", stderr(&out));
        assert_eq!(h.ostree_admin_status().unwrap(), before);
    }
}
