//! Package signatures: with `gpgcheck=1` every package from the repository must carry a
//! signature made by one of the repository's `gpgkey=` keys (ASCII-armoured OpenPGP, read from
//! `file://` paths or fetched over http(s)). Unsigned and badly signed packages fail naming
//! the package.

use std::path::Path;

use crate::error::{Error, Result};
use crate::repos::Repo;
use crate::rpmfile::LocalRpm;

/// The repository's `gpgkey=` keys (armoured bytes, one entry per URL).
fn keys(repo: &Repo, scratch: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    if repo.gpgkeys.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "repository [{}] ({}) checks signatures but has no gpgkey",
            repo.id, repo.file
        )));
    }
    let mut out = Vec::new();
    for (i, url) in repo.gpgkeys.iter().enumerate() {
        let dest = scratch.join(format!("{}-key-{i}.asc", repo.id));
        let bytes = crate::fetch::fetch_url(repo, url, &dest, 1 << 20, &|| false)
            .map_err(|e| Error::InvalidArgument(format!("repository [{}]: gpgkey {url}: {e}", repo.id)))?;
        out.push((url.clone(), bytes));
    }
    Ok(out)
}

/// The repository's keys as one package-signature verifier (built once per transaction and
/// repository, shared by the downloads).
pub fn verifier(repo: &Repo, scratch: &Path) -> Result<rpm::signature::pgp::Verifier> {
    let mut v = rpm::signature::pgp::Verifier::new();
    for (url, bytes) in keys(repo, scratch)? {
        v.load_from_asc_bytes(&bytes)
            .map_err(|e| Error::InvalidArgument(format!("repository [{}]: gpgkey {url} is not a usable OpenPGP key: {e}", repo.id)))?;
    }
    Ok(v)
}

/// `repo_gpgcheck=1`: `data` (repomd.xml) must carry a detached signature `signature`
/// (repomd.xml.asc) by one of the repository's keys or their subkeys.
pub fn verify_detached(repo: &Repo, data: &[u8], signature: &str, scratch: &Path) -> Result<()> {
    use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
    let bad = |what: String| Error::InvalidArgument(format!("repository [{}]: repomd.xml {what} (repo_gpgcheck=1)", repo.id));
    let (sig, _) = DetachedSignature::from_string(signature).map_err(|e| bad(format!("signature is unreadable: {e}")))?;
    for (url, bytes) in keys(repo, scratch)? {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (found, _) = SignedPublicKey::from_string_many(&text)
            .map_err(|e| Error::InvalidArgument(format!("repository [{}]: gpgkey {url}: {e}", repo.id)))?;
        for key in found.flatten() {
            if sig.verify(&key, data).is_ok() || key.public_subkeys.iter().any(|k| sig.verify(k, data).is_ok()) {
                return Ok(());
            }
        }
    }
    Err(bad("has no valid signature by the keys of the repository".into()))
}

/// Check `rpm` against `repo`'s keys (`verifier`).
pub fn verify(repo: &Repo, verifier: &rpm::signature::pgp::Verifier, rpm: &LocalRpm) -> Result<()> {
    rpm.package.verify_signature(verifier).map_err(|e| {
        let why = match e {
            rpm::Error::NoSignatureFound => "is not signed".to_string(),
            other => format!("has no valid signature by the keys of the repository: {other}"),
        };
        Error::InvalidArgument(format!("{} from repository [{}] {why} (gpgcheck=1)", rpm.nevra(), repo.id))
    })
}
