//! Container image bases: importing an ostree-encapsulated ("bootable") image into the
//! repository with `ostree-ext` (skopeo as the image proxy; layers are stored as refs, so a
//! layer shared with an image already imported is not fetched again). The image's merge commit
//! is then the base commit the layering build works on, like an ostree ref's commit.

use crate::error::{Error, Result};
use crate::ostree;
use crate::txn::Transaction;
use crate::txn::Progress;
use ostree_ext::container::store::{ImageImporter, ImportProgress, PrepareResult};
use ostree_ext::container::OstreeImageReference;

/// Whether `s` is a container image reference layerd understands (`ostree-unverified-registry:`,
/// `ostree-unverified-image:`, `ostree-image-signed:`, `ostree-remote-image:`).
pub fn is_image_reference(s: &str) -> bool {
    s.starts_with("ostree-unverified-registry:")
        || s.starts_with("ostree-unverified-image:")
        || s.starts_with("ostree-image-signed:")
        || s.starts_with("ostree-remote-image:")
        || s.starts_with("ostree-remote-registry:")
}

/// Parse and normalise an image reference (errors name it). `ostree-image-signed:` is refused:
/// the image proxy this version drives (skopeo's experimental proxy) fetches without applying
/// `/etc/containers/policy.json`, so accepting it would promise a verification that does not
/// happen.
pub fn parse(s: &str) -> Result<OstreeImageReference> {
    let r = OstreeImageReference::try_from(s).map_err(|e| Error::InvalidArgument(format!("{s}: not a valid image reference: {e:#}")))?;
    if matches!(r.sigverify, ostree_ext::container::SignatureSource::ContainerPolicy) {
        return Err(Error::InvalidArgument(format!(
            "{s}: signature verification of images (policy.json) is not supported by this layerd version; \
             refusing rather than fetching it unverified (use ostree-unverified-registry: to accept it without checks)"
        )));
    }
    Ok(r)
}

/// Import `imgref` (fetching what is not there yet) and return its merge commit (which records
/// the manifest digest, as status shows it). Runs the
/// importer's async API on the daemon's runtime from this blocking thread; a cancel of the
/// transaction aborts the fetch.
pub fn import(txn: &Transaction, repo: &ostree::Repo, imgref: &OstreeImageReference) -> Result<String> {
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| Error::Failed("importing an image needs the daemon's runtime".into()))?;
    let shown = imgref.to_string();
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
                    let mut done = 0u64;
                    loop {
                        tokio::select! {
                            ev = layers.recv() => match ev {
                                Some(ImportProgress::OstreeChunkCompleted(_) | ImportProgress::DerivedLayerCompleted(_)) => {
                                    done += 1;
                                    txn.progress(Progress { text: "Fetching layers".into(), bytes_done: 0, bytes_total: 0, items_done: done, items_total: fetch });
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
                                    txn.progress(Progress { text: "Fetching layers".into(), bytes_done: fetched, bytes_total: total, items_done: done, items_total: fetch });
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
        tokio::select! {
            r = work => r,
            _ = cancel => Err(Error::Cancelled),
        }
    })
}
