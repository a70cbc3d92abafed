//! Bringing up hosts and VMs and checking the cloud works: filled in as the agent's controller
//! and xenstore integration lands.

use crate::provision::Provisioned;
use crate::sys::{DevcloudError, Result};
use crate::topology::Plan;

/// Starts the hosts, plugs the VMs and runs the checks.
pub fn run_all(
    _o: &crate::Opts,
    _plan: &Plan,
    _st: &mut crate::State,
    p: &Provisioned,
) -> Result<()> {
    Err(DevcloudError::Step(format!(
        "provisioned {} VMs (floating IP {:?}); host bring-up is not assembled yet",
        p.vms.len(),
        p.fip
    )))
}
