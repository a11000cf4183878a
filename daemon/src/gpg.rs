//! Package signatures: with `gpgcheck=1` every package from the repository must carry a
//! signature made by one of the repository's `gpgkey=` keys (ASCII-armoured OpenPGP, read from
//! `file://` paths or fetched over http(s)). Unsigned and badly signed packages fail naming
//! the package.

use std::path::Path;

use crate::error::{Error, Result};
use crate::repos::Repo;
use crate::rpmfile::LocalRpm;

/// The repository's keys as one verifier.
fn verifier(repo: &Repo, scratch: &Path) -> Result<rpm::signature::pgp::Verifier> {
    if repo.gpgkeys.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "repository [{}] ({}) has gpgcheck=1 but no gpgkey",
            repo.id, repo.file
        )));
    }
    let mut v = rpm::signature::pgp::Verifier::new();
    for (i, url) in repo.gpgkeys.iter().enumerate() {
        let bytes = if let Some(p) = url.strip_prefix("file://") {
            std::fs::read(p).map_err(|e| Error::InvalidArgument(format!("repository [{}]: gpgkey {url}: {e}", repo.id)))?
        } else {
            let dest = scratch.join(format!("{}-key-{i}.asc", repo.id));
            let (base, file) = url.rsplit_once('/').ok_or_else(|| Error::InvalidArgument(format!("gpgkey {url} is not a URL")))?;
            let keyrepo = Repo { baseurls: vec![base.to_string()], ..repo.clone() };
            crate::fetch::Fetcher::new(&keyrepo)?.download(file, &dest, 1 << 20, None, &|| false, &|_| {})?;
            std::fs::read(&dest).map_err(|e| Error::Failed(format!("reading {}: {e}", dest.display())))?
        };
        v.load_from_asc_bytes(&bytes)
            .map_err(|e| Error::InvalidArgument(format!("repository [{}]: gpgkey {url} is not a usable OpenPGP key: {e}", repo.id)))?;
    }
    Ok(v)
}

/// Check `rpm` (downloaded to `file`) against `repo`'s keys.
pub fn verify(repo: &Repo, rpm: &LocalRpm, file: &Path) -> Result<()> {
    let scratch = file.parent().unwrap_or(Path::new("/tmp"));
    let v = verifier(repo, scratch)?;
    rpm.package.verify_signature(v).map_err(|e| {
        let why = match e {
            rpm::Error::NoSignatureFound => "is not signed".to_string(),
            other => format!("has no valid signature by the keys of the repository: {other}"),
        };
        Error::InvalidArgument(format!("{} from repository [{}] {why} (gpgcheck=1)", rpm.nevra(), repo.id))
    })
}
