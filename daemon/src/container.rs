//! Container image bases: importing an ostree-encapsulated ("bootable") image into the
//! repository with `ostree-ext` (skopeo as the image proxy; layers are stored as refs, so a
//! layer shared with an image already imported is not fetched again). The image's merge commit
//! is then the base commit the layering build works on, like an ostree ref's commit.

use crate::error::{Error, Result};
use crate::ostree;
use crate::txn::Transaction;
use ostree_ext::container::store::{ImageImporter, PrepareResult};
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

/// Parse and normalise an image reference (errors name it).
pub fn parse(s: &str) -> Result<OstreeImageReference> {
    OstreeImageReference::try_from(s).map_err(|e| Error::InvalidArgument(format!("{s}: not a valid image reference: {e:#}")))
}

/// An imported image: its merge commit and manifest digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Imported {
    pub commit: String,
    pub digest: String,
}

/// Import `imgref` (fetching what is not there yet) and return its merge commit. Runs the
/// importer's async API on the daemon's runtime from this blocking thread; a cancel of the
/// transaction aborts the fetch.
pub fn import(txn: &Transaction, repo: &ostree::Repo, imgref: &OstreeImageReference) -> Result<Imported> {
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
        let mut importer = ImageImporter::new(repo, imgref, Default::default())
            .await
            .map_err(|e| fail("starting the image proxy (skopeo)", e))?;
        let state = match importer.prepare().await.map_err(|e| fail("reading the image", e))? {
            PrepareResult::AlreadyPresent(s) => {
                txn.message("The image is already in the repository");
                s
            }
            PrepareResult::Ready(prep) => {
                let total = prep.all_layers().count();
                let have = prep.all_layers().filter(|l| l.commit.is_some()).count();
                txn.message(format!("Fetching {} of {total} layers (the others are already here)", total - have));
                importer.import(prep).await.map_err(|e| fail("importing the image", e))?
            }
        };
        Ok::<_, Error>(Imported { commit: state.merge_commit.clone(), digest: state.manifest_digest.to_string() })
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
