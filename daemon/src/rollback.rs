//! Rollback: make the previous deployment the default for the next boot.
//!
//! Semantics match rpm-ostree so admins' habits hold: when the booted deployment boots next,
//! the first deployment after it (same stateroot) moves to the front; when a newer deployment
//! is pending in front of the booted one, the booted one moves back to the front. Calling it
//! again swaps back. Refused while a deployment is staged, since finalizing it at shutdown
//! would silently undo the rollback.

use crate::error::{Context, Error, Result};
use crate::sysroot::deployment_id;
use crate::txn::Transaction;
use crate::{ostree, sysroot::SysrootPath};

/// The new boot order as indices into the current one, and the index that moves to the front.
pub fn plan(osnames: &[String], anchor: usize) -> Result<(Vec<usize>, usize)> {
    if anchor >= osnames.len() {
        return Err(Error::InvalidState("no deployments".into()));
    }
    let front = if anchor == 0 {
        (1..osnames.len())
            .find(|&i| osnames[i] == osnames[anchor])
            .ok_or_else(|| Error::InvalidState("no rollback deployment: there is only one deployment".into()))?
    } else {
        anchor
    };
    let mut order = vec![front];
    order.extend((0..osnames.len()).filter(|&i| i != front));
    Ok((order, front))
}

/// Run a rollback transaction.
pub fn run(txn: &Transaction, path: &SysrootPath) -> Result<bool> {
    let locked = path.lock_for(txn)?;
    let sysroot = &locked.sysroot;
    if let Some(staged) = sysroot.staged_deployment() {
        return Err(Error::InvalidState(format!(
            "a deployment is staged ({}); finalizing it at shutdown would undo a rollback. \
             Remove it first with `layerctl cleanup -p`",
            deployment_id(&staged)
        )));
    }
    let (deployments, anchor) = locked.deployments_and_anchor();
    let osnames: Vec<String> = deployments.iter().map(|d| d.osname().to_string()).collect();
    let (order, front) = plan(&osnames, anchor)?;
    txn.message(format!("Moving '{}' to be first deployment", deployment_id(&deployments[front])));
    txn.check_cancelled()?;
    // The same objects, not `Deployment::clone()` (libostree's deep copy): libostree finds the
    // booted deployment in the new list by identity.
    let new: Vec<ostree::Deployment> = order.iter().map(|&i| Clone::clone(&deployments[i])).collect();
    sysroot
        .write_deployments(&new, Some(txn.cancellable()))
        .context("writing the new deployment order")?;
    txn.message("Rollback complete; the change applies at the next boot");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(n: usize) -> Vec<String> {
        vec!["fedora".to_string(); n]
    }

    #[test]
    fn booted_first_moves_next_to_front() {
        assert_eq!(plan(&os(3), 0).unwrap(), (vec![1, 0, 2], 1));
    }

    #[test]
    fn pending_in_front_moves_booted_back() {
        assert_eq!(plan(&os(2), 1).unwrap(), (vec![1, 0], 1));
    }

    #[test]
    fn twice_swaps_back() {
        let (first, _) = plan(&os(2), 0).unwrap();
        // after the first rollback the booted deployment (old index 0) sits at index 1
        let booted_now = first.iter().position(|&i| i == 0).unwrap();
        let (second, _) = plan(&os(2), booted_now).unwrap();
        let composed: Vec<usize> = second.iter().map(|&i| first[i]).collect();
        assert_eq!(composed, vec![0, 1]);
    }

    #[test]
    fn single_deployment_is_refused() {
        assert!(matches!(plan(&os(1), 0), Err(Error::InvalidState(m)) if m.contains("only one")));
    }

    #[test]
    fn other_stateroots_are_not_rollback_targets() {
        let names = vec!["a".to_string(), "b".to_string(), "a".to_string()];
        assert_eq!(plan(&names, 0).unwrap(), (vec![2, 0, 1], 2));
    }
}
