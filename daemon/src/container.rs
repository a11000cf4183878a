//! Container image bases: importing an ostree-encapsulated ("bootable") image into the
//! repository with `ostree-ext` (skopeo as the image proxy; layers are stored as refs, so a
//! layer shared with an image already imported is not fetched again). The image's merge commit
//! is then the base commit the layering build works on, like an ostree ref's commit.

use crate::error::{Error, Result};
use crate::ostree;
use crate::txn::Transaction;
use crate::txn::Progress;
use ostree_ext::container::store::{ImageImporter, ImportProgress, PrepareResult};
use ostree_ext::container::{ImageReference, OstreeImageReference, SignatureSource, Transport};
use std::path::Path;

/// Whether `s` is a container image reference layerd understands (`ostree-unverified-registry:`,
/// `ostree-unverified-image:`, `ostree-image-signed:`, `ostree-remote-image:`).
pub fn is_image_reference(s: &str) -> bool {
    s.starts_with("ostree-unverified-registry:")
        || s.starts_with("ostree-unverified-image:")
        || s.starts_with("ostree-image-signed:")
        || s.starts_with("ostree-remote-image:")
        || s.starts_with("ostree-remote-registry:")
}

/// Parse and normalise an image reference (errors name it).
pub fn parse(s: &str) -> Result<OstreeImageReference> {
    OstreeImageReference::try_from(s).map_err(|e| Error::InvalidArgument(format!("{s}: not a valid image reference: {e:#}")))
}

/// `reference` pinned to `digest` (`sha256:…`): `…/repo:tag` or `…/repo@sha256:old` becomes
/// `…/repo@sha256:…`. Only registry references have digests to pin.
pub fn with_digest(reference: &str, digest: &str) -> Result<String> {
    let valid = digest.strip_prefix("sha256:").is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    if !valid {
        return Err(Error::InvalidArgument(format!("{digest} is not an image digest (sha256:<64 hex digits>)")));
    }
    let r = parse(reference)?;
    if r.imgref.transport != Transport::Registry {
        return Err(Error::InvalidArgument(format!("{reference}: only registry images can be deployed by digest")));
    }
    let name = &r.imgref.name;
    let repo = match name.split_once('@') {
        Some((repo, _)) => repo.to_string(),
        None => {
            // strip a tag (after the last '/', a ':' separates the tag; a port is before it)
            let slash = name.rfind('/').map_or(0, |i| i + 1);
            match name[slash..].rfind(':') {
                Some(i) => name[..slash + i].to_string(),
                None => name.clone(),
            }
        }
    };
    let pinned = OstreeImageReference { sigverify: r.sigverify, imgref: ImageReference { transport: Transport::Registry, name: format!("{repo}@{digest}") } };
    Ok(pinned.to_string())
}

/// `ostree-image-signed:`: the image proxy (skopeo's experimental proxy, 1.9 here) fetches
/// without applying `/etc/containers/policy.json`, so the image is first copied with `skopeo
/// copy`, which enforces the policy (signatures, rejections) before it copies any layer, into
/// scratch space; the verified copy is then imported. A policy that accepts anything is
/// refused, as ostree-ext does for signed references.
fn verified_copy(txn: &Transaction, imgref: &OstreeImageReference, scratch: &Path) -> Result<OstreeImageReference> {
    let shown = imgref.to_string();
    let policy = std::fs::read_to_string("/etc/containers/policy.json").unwrap_or_default();
    let compact: String = policy.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.is_empty() || compact.contains(r#""default":[{"type":"insecureAcceptAnything"}]"#) {
        return Err(Error::InvalidArgument(format!(
            "{shown}: /etc/containers/policy.json must require signatures for this image (it is missing or accepts anything by default)"
        )));
    }
    let dest = scratch.join("verified-image");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(scratch).map_err(|e| Error::Failed(format!("creating {}: {e}", scratch.display())))?;
    txn.message(format!("Verifying {shown} against /etc/containers/policy.json"));
    let log = scratch.join("verified-image.log");
    let stderr = std::fs::File::create(&log).map_err(|e| Error::Failed(format!("creating {}: {e}", log.display())))?;
    let mut cmd = std::process::Command::new("skopeo");
    cmd.arg("copy");
    if let Some(auth) = authfile() {
        cmd.arg("--src-authfile").arg(auth);
    }
    let mut child = cmd
        .arg(imgref.imgref.to_string())
        .arg(format!("dir:{}", dest.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Failed(format!("{shown}: running skopeo: {e}")))?;
    // a cancel kills the copy and removes what it wrote
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if txn.is_cancelled() => {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_dir_all(&dest);
                return Err(Error::Cancelled);
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            Err(e) => return Err(Error::Failed(format!("{shown}: waiting for skopeo: {e}"))),
        }
    };
    if !status.success() {
        let _ = std::fs::remove_dir_all(&dest);
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        return Err(Error::InvalidArgument(format!(
            "{shown}: refused by the signature policy (or unreachable): {}",
            text.trim()
        )));
    }
    Ok(OstreeImageReference {
        sigverify: SignatureSource::ContainerPolicyAllowInsecure,
        imgref: ImageReference { transport: Transport::Dir, name: dest.display().to_string() },
    })
}

/// Registry credentials as rpm-ostree and bootc read them: `/etc/ostree/auth.json`, else the
/// runtime `/run/ostree/auth.json`.
fn authfile() -> Option<&'static str> {
    ["/etc/ostree/auth.json", "/run/ostree/auth.json"].into_iter().find(|p| Path::new(p).exists())
}

/// The manifest digest a base commit was imported from (`ostree.manifest-digest` of the merge
/// commit, which layered commits carry over).
pub fn deployed_digest(repo: &ostree::Repo, commit: &str) -> Option<String> {
    let (c, _) = repo.load_commit(commit).ok()?;
    crate::glib::VariantDict::new(Some(&c.child_value(0))).lookup::<String>("ostree.manifest-digest").ok().flatten()
}

/// Drop stored images (and then their layers) that no deployment's origin names: images are
/// kept for the deployments using them (so an upgrade fetches only changed layers), not
/// forever. The objects go with the next prune. Returns how many images were dropped.
pub fn prune_unused(repo: &ostree::Repo, deployments: &[ostree::Deployment]) -> Result<u32> {
    let used: std::collections::HashSet<String> = deployments
        .iter()
        .filter_map(|d| d.origin())
        .filter_map(|o| o.string("origin", "container-image-reference").ok())
        .filter_map(|r| OstreeImageReference::try_from(r.as_str()).ok())
        .map(|r| r.imgref.to_string())
        .collect();
    let fail = |e: anyhow::Error| Error::Failed(format!("pruning stored images: {e:#}"));
    let mut dropped = 0;
    for name in ostree_ext::container::store::list_images(repo).map_err(fail)? {
        if used.contains(&name) {
            continue;
        }
        let Ok(img) = ImageReference::try_from(name.as_str()) else { continue };
        if ostree_ext::container::store::remove_image(repo, &img).map_err(fail)? {
            dropped += 1;
        }
    }
    ostree_ext::container::store::gc_image_layers(repo).map_err(fail)?;
    Ok(dropped)
}

/// Import `imgref` (fetching what is not there yet) and return its merge commit (which records
/// the manifest digest, as status shows it). Runs the
/// importer's async API on the daemon's runtime from this blocking thread; a cancel of the
/// transaction aborts the fetch.
pub fn import(txn: &Transaction, repo: &ostree::Repo, imgref: &OstreeImageReference, scratch: &Path) -> Result<String> {
    let verified;
    let (imgref, shown) = if matches!(imgref.sigverify, SignatureSource::ContainerPolicy) {
        verified = verified_copy(txn, imgref, scratch)?;
        (&verified, imgref.to_string())
    } else {
        (imgref, imgref.to_string())
    };
    let result = import_unchecked(txn, repo, imgref, &shown);
    if matches!(imgref.imgref.transport, Transport::Dir) && imgref.imgref.name.starts_with(&*scratch.to_string_lossy()) {
        let _ = std::fs::remove_dir_all(&imgref.imgref.name);
        // the verified copy's store ref names a scratch directory that is gone: drop it (the
        // merge commit stays reachable through the deployment built on it)
        let _ = ostree_ext::container::store::remove_image(repo, &imgref.imgref);
    }
    result
}

/// What the registry has for `imgref` now, reading only its manifest and configuration (no
/// layers): the manifest digest and the version label. For `upgrade --check`.
pub fn check(txn: &Transaction, repo: &ostree::Repo, imgref: &OstreeImageReference) -> Result<(String, Option<String>)> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Failed("checking an image needs the daemon's runtime".into()))?;
    let shown = imgref.to_string();
    let fail = |e: anyhow::Error| Error::Failed(format!("{shown}: reading the image: {e:#}"));
    txn.message(format!("Checking {shown}"));
    handle.block_on(async {
        let mut config = ostree_ext::containers_image_proxy::ImageProxyConfig::default();
        ostree_ext::container::merge_default_container_proxy_opts_with_isolation(&mut config, None).map_err(fail)?;
        let mut importer = ImageImporter::new(repo, imgref, config).await.map_err(fail)?;
        Ok(match importer.prepare().await.map_err(fail)? {
            PrepareResult::AlreadyPresent(s) => (s.manifest_digest.to_string(), None),
            PrepareResult::Ready(p) => {
                let labels = p.config.config().as_ref().and_then(|c| c.labels().clone()).unwrap_or_default();
                let version = labels.get("org.opencontainers.image.version").or(labels.get("version")).cloned();
                (p.manifest_digest.to_string(), version)
            }
        })
    })
}

fn import_unchecked(txn: &Transaction, repo: &ostree::Repo, imgref: &OstreeImageReference, shown: &str) -> Result<String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Failed("importing an image needs the daemon's runtime".into()))?;
    let fail = |what: &str, e: anyhow::Error| {
        let text = format!("{e:#}");
        if text.contains("not an ostree encapsulated container") {
            Error::InvalidArgument(format!(
                "{shown} is not a bootable image: it is not ostree-encapsulated (build it FROM a bootable \
                 base such as Fedora CoreOS or RHCOS): {text}"
            ))
        } else {
            Error::Failed(format!("{shown}: {what}: {text}"))
        }
    };
    txn.message(format!("Fetching {shown}"));
    let work = async {
        // registry credentials from /etc/ostree/auth.json or /run/ostree/auth.json, as
        // rpm-ostree and bootc read them; skopeo runs as the daemon's user
        let mut config = ostree_ext::containers_image_proxy::ImageProxyConfig::default();
        ostree_ext::container::merge_default_container_proxy_opts_with_isolation(&mut config, None)
            .map_err(|e| fail("configuring the image proxy", e))?;
        let mut importer = ImageImporter::new(repo, imgref, config)
            .await
            .map_err(|e| fail("starting the image proxy (skopeo)", e))?;
        let mut layers = importer.request_progress();
        let mut bytes = importer.request_layer_progress();
        let state = match importer.prepare().await.map_err(|e| fail("reading the image", e))? {
            PrepareResult::AlreadyPresent(s) => {
                txn.message("The image is already in the repository");
                s
            }
            PrepareResult::Ready(prep) => {
                let total = prep.all_layers().count();
                let have = prep.all_layers().filter(|l| l.commit.is_some()).count();
                let fetch = (total - have) as u64;
                txn.message(format!("Fetching {fetch} of {total} layers (the others are already here)"));
                // layer count and bytes of the layer in flight, as transaction progress
                let report = async {
                    // bytes of finished layers plus the one in flight
                    let (mut done, mut done_bytes, mut current) = (0u64, 0u64, 0u64);
                    let mut total_hint = 0u64;
                    loop {
                        tokio::select! {
                            ev = layers.recv() => match ev {
                                Some(ImportProgress::OstreeChunkCompleted(_) | ImportProgress::DerivedLayerCompleted(_)) => {
                                    done += 1;
                                    done_bytes += current;
                                    current = 0;
                                    txn.progress(Progress { text: "Fetching layers".into(), bytes_done: done_bytes, bytes_total: total_hint.max(done_bytes), items_done: done, items_total: fetch });
                                }
                                Some(_) => {}
                                None => break,
                            },
                            ch = bytes.changed() => {
                                if ch.is_err() {
                                    break;
                                }
                                let cur = bytes.borrow_and_update().as_ref().map(|p| (p.fetched, p.total));
                                if let Some((fetched, total)) = cur {
                                    current = fetched;
                                    total_hint = total_hint.max(done_bytes + total);
                                    txn.progress(Progress { text: "Fetching layers".into(), bytes_done: done_bytes + fetched, bytes_total: total_hint, items_done: done, items_total: fetch });
                                }
                            }
                        }
                    }
                };
                let (state, ()) = tokio::join!(importer.import(prep), report);
                state.map_err(|e| fail("importing the image", e))?
            }
        };
        Ok::<_, Error>(state.merge_commit.clone())
    };
    let cancel = async {
        while !txn.is_cancelled() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    handle.block_on(async {
        tokio::pin!(work);
        tokio::select! {
            r = &mut work => r,
            _ = cancel => {
                // stop the transfer at its source, then let the importer unwind: its tasks
                // write into the repository, and nothing may still do so once this transaction
                // aborts (or the next one starts)
                kill_image_proxies();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(120), &mut work).await;
                Err(Error::Cancelled)
            }
        }
    })
}

/// Kill the image proxies (skopeo) this process started.
fn kill_image_proxies() {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else { return };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid …": comm may hold spaces, so split after the last ')'
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let comm = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
        if comm == "skopeo" && ppid == Some(me) {
            // SAFETY: sending a signal to a child process of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_pins() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            with_digest("ostree-unverified-registry:127.0.0.1:5000/fixture/os:custom", &d).unwrap(),
            format!("ostree-unverified-registry:127.0.0.1:5000/fixture/os@{d}")
        );
        assert_eq!(
            with_digest(&format!("ostree-unverified-registry:quay.io/x/y@sha256:{}", "b".repeat(64)), &d).unwrap(),
            format!("ostree-unverified-registry:quay.io/x/y@{d}")
        );
        assert!(with_digest("ostree-unverified-registry:quay.io/x/y:1", "sha256:zz").unwrap_err().to_string().contains("not an image digest"));
        assert!(with_digest("ostree-unverified-image:oci:/x", &d).unwrap_err().to_string().contains("only registry"));
    }
}
