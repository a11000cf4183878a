//! Choosing the base a new deployment is built on: the current one, the newest commit of the
//! origin's ref (`upgrade`), another ostree ref (`rebase`), or a given revision of the current
//! ref (`deploy`). Layered packages are carried over by the build whichever it is.
//!
//! Fetched commits stay in the repository (as after `ostree pull`) even if the rest of the
//! transaction fails; the deployments are untouched until the new one is staged.

use crate::error::{Context, Error, Result};
use crate::origin::Origin;
use crate::txn::Transaction;
use crate::{glib, ostree};

/// What to do with the base.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BaseChange {
    #[default]
    Keep,
    /// The newest commit of the origin's ref.
    Upgrade { allow_downgrade: bool },
    /// Another ostree ref (`remote:ref`, `:ref` or `ref` on the current remote), optionally at
    /// a given revision.
    Rebase { refspec: String, revision: Option<String> },
    /// A revision (checksum, or `version` metadata) of the current ref.
    Deploy { revision: String },
}

/// The chosen base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewBase {
    pub commit: String,
    /// The refspec the new origin tracks.
    pub refspec: Option<String>,
    /// Or the container image reference it tracks.
    pub image: Option<String>,
    /// `override-commit=` for the new origin (`deploy` pins a revision).
    pub override_commit: Option<String>,
}

fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Split `remote:ref` (the remote may be empty: a local ref).
fn split(refspec: &str) -> (Option<&str>, &str) {
    match refspec.split_once(':') {
        Some((r, b)) if !r.is_empty() => (Some(r), b),
        Some((_, b)) => (None, b),
        None => (None, refspec),
    }
}

/// The full refspec a `rebase` argument means, given the current one.
pub fn resolve_refspec(arg: &str, current: Option<&str>) -> Result<String> {
    // a ref is a file name under refs/: no path is longer than PATH_MAX
    if arg.len() > 4096 {
        let start: String = arg.chars().take(32).collect();
        return Err(Error::InvalidArgument(format!("refspec \"{start}…\" is {} bytes long; not an ostree refspec", arg.len())));
    }
    if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err(Error::InvalidArgument(format!("{arg:?} is not an ostree refspec")));
    }
    if arg.starts_with("ostree-") || arg.contains("://") {
        return Err(Error::InvalidArgument(format!(
            "{arg}: not an ostree refspec, nor an image reference layerd understands (ostree-unverified-registry:, ostree-unverified-image:, ostree-image-signed:, ostree-remote-image:)"
        )));
    }
    let current_remote = current.and_then(|c| split(c).0);
    Ok(match arg.split_once(':') {
        Some(("", r)) => match current_remote {
            Some(remote) => format!("{remote}:{r}"),
            None => r.to_string(),
        },
        Some(_) => arg.to_string(),
        None => match current_remote {
            Some(remote) => format!("{remote}:{arg}"),
            None => arg.to_string(),
        },
    })
}

/// What a fetch brings: the whole tree, or the commit object only (enough for its version,
/// timestamp and parent: history walks and `upgrade --check` do not download trees).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Depth {
    Tree,
    CommitOnly,
}

/// Fetch `refspec` (its head, or `commit`) from its remote; returns the commit.
fn fetch(txn: &Transaction, repo: &ostree::Repo, refspec: &str, commit: Option<&str>, depth: Depth) -> Result<String> {
    let (remote, branch) = split(refspec);
    if let Some(remote) = remote {
        let opts = glib::VariantDict::new(None);
        opts.insert_value("refs", &glib::ToVariant::to_variant(&vec![branch.to_string()]));
        if depth == Depth::CommitOnly {
            opts.insert_value("flags", &glib::ToVariant::to_variant(&(ostree::RepoPullFlags::COMMIT_ONLY.bits() as i32)));
        }
        if let Some(c) = commit {
            opts.insert_value("override-commit-ids", &glib::ToVariant::to_variant(&vec![c.to_string()]));
        }
        txn.task(&format!("Fetching {refspec}"), || {
            repo.pull_with_options(remote, &opts.end(), None, Some(txn.cancellable()))
                .with_context(|| format!("fetching {refspec}"))
        })?;
    }
    if let Some(c) = commit {
        repo.load_commit(c).with_context(|| format!("commit {c} of {refspec}"))?;
        return Ok(c.to_string());
    }
    let rev = repo
        .resolve_rev(refspec, true)
        .with_context(|| format!("resolving {refspec}"))?
        .ok_or_else(|| Error::NotFound(format!("{refspec} does not exist (no such ref in the repository or on its remote)")))?;
    Ok(rev.to_string())
}

fn version_and_time(repo: &ostree::Repo, commit: &str) -> Result<(Option<String>, u64, Option<String>)> {
    let (c, _) = repo.load_commit(commit).with_context(|| format!("loading commit {commit}"))?;
    let version = glib::VariantDict::new(Some(&c.child_value(0))).lookup::<String>("version").ok().flatten();
    Ok((version, ostree::commit_get_timestamp(&c), ostree::commit_get_parent(&c).map(|p| p.to_string())))
}

/// How a commit is named to humans: `version (checksum)`.
pub fn describe(repo: &ostree::Repo, commit: &str) -> String {
    match version_and_time(repo, commit) {
        Ok((Some(v), _, _)) => format!("{v} ({commit})"),
        _ => commit.to_string(),
    }
}

/// Find the commit of `refspec` (fetched) whose `version` is `version`, walking its history
/// (fetching parents as needed).
fn find_version(txn: &Transaction, repo: &ostree::Repo, refspec: &str, version: &str) -> Result<String> {
    let mut cur = Some(fetch(txn, repo, refspec, None, Depth::CommitOnly)?);
    let mut seen = 0;
    while let Some(c) = cur {
        let (v, _, parent) = match version_and_time(repo, &c) {
            Ok(found) => found,
            Err(_) => {
                // older history is fetched as it is walked
                fetch(txn, repo, refspec, Some(&c), Depth::CommitOnly)?;
                version_and_time(repo, &c)?
            }
        };
        if v.as_deref() == Some(version) {
            // the tree of the one commit deployed
            return fetch(txn, repo, refspec, Some(&c), Depth::Tree);
        }
        seen += 1;
        if seen > 10_000 {
            break;
        }
        cur = parent;
    }
    Err(Error::NotFound(format!("{refspec} has no commit with version {version}")))
}

/// The commit of `refspec` a revision names: a checksum, or a `version` (`version=` optional).
fn fetch_revision(txn: &Transaction, repo: &ostree::Repo, refspec: &str, revision: &str) -> Result<String> {
    if is_checksum(revision) {
        fetch(txn, repo, refspec, Some(revision), Depth::Tree)
    } else {
        find_version(txn, repo, refspec, revision.strip_prefix("version=").unwrap_or(revision))
    }
}

/// Choose the new base for `change`, given the deployment's origin and current base commit.
pub fn choose(
    txn: &Transaction,
    repo: &ostree::Repo,
    origin: &Origin,
    current: &str,
    change: &BaseChange,
    scratch: &std::path::Path,
    check_only: bool,
) -> Result<NewBase> {
    let current_refspec = origin.base_refspec().map(str::to_string);
    let keep = NewBase {
        commit: current.to_string(),
        refspec: current_refspec.clone(),
        image: origin.container_image_reference.clone(),
        override_commit: origin.override_commit.clone(),
    };
    // an image base: `deploy DIGEST` moves to that digest of the same repository
    if let (Some(img), BaseChange::Deploy { revision }) = (&origin.container_image_reference, change) {
        let pinned = crate::container::with_digest(img, revision)?;
        let commit = crate::container::import(txn, repo, &crate::container::parse(&pinned)?, scratch)?;
        return Ok(NewBase { commit, refspec: None, image: Some(pinned), override_commit: None });
    }
    // an image base: upgrade re-imports the same reference when the registry has a new digest
    // (the manifest is read first, so an unchanged image costs one request, signed or not)
    if let (Some(img), BaseChange::Upgrade { .. }) = (&origin.container_image_reference, change) {
        let imgref = crate::container::parse(img)?;
        let deployed = crate::container::deployed_digest(repo, current);
        let (digest, _) = crate::container::check(txn, repo, &imgref)?;
        if deployed.as_deref() == Some(digest.as_str()) {
            return Ok(keep);
        }
        let commit = crate::container::import(txn, repo, &imgref, scratch)?;
        return Ok(NewBase { commit, refspec: None, image: Some(img.clone()), override_commit: None });
    }
    let need_ref = || {
        if origin.container_image_reference.is_some() {
            return Err(Error::InvalidState(
                "this deployment's base is a container image, which this layerd version cannot change yet".into(),
            ));
        }
        current_refspec.clone().ok_or_else(|| Error::InvalidState("the origin names no ostree refspec".into()))
    };
    match change {
        BaseChange::Keep => Ok(keep),
        BaseChange::Upgrade { allow_downgrade } => {
            let refspec = need_ref()?;
            let commit = fetch(txn, repo, &refspec, None, if check_only { Depth::CommitOnly } else { Depth::Tree })?;
            if commit != current && !allow_downgrade {
                let (_, new_t, _) = version_and_time(repo, &commit)?;
                let (_, cur_t, _) = version_and_time(repo, current)?;
                if new_t < cur_t {
                    return Err(Error::InvalidState(format!(
                        "the newest commit of {refspec}, {}, is older than the current base {}; pass --allow-downgrade to move to it",
                        describe(repo, &commit),
                        describe(repo, current)
                    )));
                }
            }
            Ok(NewBase { commit, refspec: Some(refspec), image: None, override_commit: None })
        }
        // `rebase CHECKSUM`: that commit, on the current ref (pinned), as `deploy CHECKSUM`
        BaseChange::Rebase { refspec, revision: None } if is_checksum(refspec) => {
            choose(txn, repo, origin, current, &BaseChange::Deploy { revision: refspec.clone() }, scratch, check_only)
        }
        BaseChange::Rebase { refspec, revision: None } if crate::container::is_image_reference(refspec) => {
            let imgref = crate::container::parse(refspec)?;
            let commit = crate::container::import(txn, repo, &imgref, scratch)?;
            Ok(NewBase { commit, refspec: None, image: Some(imgref.to_string()), override_commit: None })
        }
        BaseChange::Rebase { refspec, revision } => {
            let cur = if origin.container_image_reference.is_some() { None } else { current_refspec.as_deref() };
            let refspec = resolve_refspec(refspec, cur)?;
            let commit = match revision.as_deref() {
                Some(r) => fetch_revision(txn, repo, &refspec, r)?,
                None => fetch(txn, repo, &refspec, None, Depth::Tree)?,
            };
            // a given revision is pinned, as `deploy` pins one
            let override_commit = revision.as_ref().map(|_| commit.clone());
            Ok(NewBase { commit, refspec: Some(refspec), image: None, override_commit })
        }
        BaseChange::Deploy { revision } => {
            let refspec = need_ref()?;
            let commit = fetch_revision(txn, repo, &refspec, revision)?;
            Ok(NewBase { commit: commit.clone(), refspec: Some(refspec), image: None, override_commit: Some(commit) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebase_arguments() {
        let cur = Some("fedora:fedora/x86_64/coreos/stable");
        assert_eq!(resolve_refspec("fedora:fedora/x86_64/coreos/testing", cur).unwrap(), "fedora:fedora/x86_64/coreos/testing");
        assert_eq!(resolve_refspec(":fedora/x86_64/coreos/next", cur).unwrap(), "fedora:fedora/x86_64/coreos/next");
        assert_eq!(resolve_refspec("fedora/x86_64/coreos/next", cur).unwrap(), "fedora:fedora/x86_64/coreos/next");
        assert_eq!(resolve_refspec("other:x", cur).unwrap(), "other:x");
        assert_eq!(resolve_refspec("local/ref", None).unwrap(), "local/ref");
        assert!(resolve_refspec("https://example.com/x", cur).unwrap_err().to_string().contains("not an ostree refspec"));
        assert!(resolve_refspec("has space", cur).is_err());
        assert!(is_checksum(&"a".repeat(64)) && !is_checksum("abc"));
    }
}
