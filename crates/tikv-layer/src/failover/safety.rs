//! The safety checks failover runs before it replaces or removes a store
//! (safety rules 2, 5 and 8).

use pd_client::{Store, StoreId};

use super::{FailoverInput, RegionHealth, unhealthy};
use crate::group::Blocked;
use crate::reasons;
use crate::store_view::Stores;

/// A refusal with its reason and message.
pub(super) fn blocked(reason: &'static str, message: String) -> Blocked {
    Blocked { reason, message }
}

/// The stores PD reports unhealthy, over the whole Cluster, by store id: PD lists its stores
/// in no fixed order, and a message that changed with the order would rewrite the condition
/// and repeat the refusal's Event at every reconcile.
fn unhealthy_stores(stores: &Stores) -> Vec<&Store> {
    let mut out: Vec<&Store> = stores.stores.iter().filter(|s| unhealthy(s)).collect();
    out.sort_by_key(|s| s.id);
    out
}

/// Safety rule 5 Cluster-wide: more unhealthy stores at once than
/// `failover.maxInFlight` is an outage to report, not to repair. It refuses every
/// due failure alike (not only the first), so the group reports it whatever the order.
pub(super) fn too_many_failures(input: &FailoverInput<'_>, stores: &Stores) -> Result<(), Blocked> {
    let unhealthy = unhealthy_stores(stores);
    if unhealthy.len() > input.settings.max_in_flight {
        let list: Vec<String> = unhealthy
            .iter()
            .map(|s| format!("{} ({})", s.id, s.address))
            .collect();
        return Err(blocked(
            reasons::TOO_MANY_FAILURES,
            format!(
                "{} stores of the Cluster are unhealthy at once ({}), more than \
                 failover.maxInFlight ({}); not replacing any (a zone or network outage is \
                 reported, not repaired)",
                unhealthy.len(),
                list.join(", "),
                input.settings.max_in_flight
            ),
        ));
    }
    Ok(())
}

/// Safety rules 2, 5 and 8 for replacing (or removing) the store of
/// `failed`; `exempt`: instances whose disruption is this failover's own.
pub(super) fn safety_check(
    input: &FailoverInput<'_>,
    stores: &Stores,
    failed_store: Option<StoreId>,
    exempt: &[&str],
) -> Result<(), Blocked> {
    too_many_failures(input, stores)?;
    let unhealthy_ids: Vec<StoreId> = unhealthy_stores(stores).iter().map(|s| s.id).collect();
    // Safety rule 2: any other disruption in the Cluster holds failover. An
    // instance whose store is itself one of the (at most maxInFlight)
    // unhealthy stores is a failure, counted above.
    let other = input
        .members
        .iter()
        .chain(&input.others)
        .filter(|m| !exempt.contains(&m.name.as_str()))
        .filter(|m| !m.store_id.is_some_and(|id| unhealthy_ids.contains(&id)))
        .find_map(|m| m.disrupted.as_ref().map(|why| (m.name.as_str(), why)));
    if let Some((name, why)) = other {
        return Err(blocked(
            reasons::ANOTHER_STORE_DISRUPTED,
            format!("{name} is disrupted ({why}); failover waits until every other store serves"),
        ));
    }
    if let Some(s) = stores
        .removing()
        .into_iter()
        .find(|s| Some(s.id) != failed_store)
    {
        return Err(blocked(
            reasons::ANOTHER_STORE_DISRUPTED,
            format!(
                "store {} ({}) is being removed; failover waits for it",
                s.id, s.address
            ),
        ));
    }
    // Safety rule 8: no Region may lose its majority.
    let Some(failed_store) = failed_store else {
        return Ok(());
    };
    match input.regions {
        RegionHealth::NotRead => Err(blocked(
            reasons::REGION_HEALTH_UNKNOWN,
            "PD's Region health was not read; failover waits for it".to_owned(),
        )),
        RegionHealth::Unknown(why) => Err(blocked(
            reasons::REGION_HEALTH_UNKNOWN,
            format!("{why}; failover waits until PD answers"),
        )),
        RegionHealth::Read(regions) => {
            for r in regions.iter().filter(|r| r.voters.contains(&failed_store)) {
                let healthy = r
                    .voters
                    .iter()
                    .filter(|s| {
                        **s != failed_store && !r.down.contains(s) && !r.pending.contains(s)
                    })
                    .count();
                if healthy * 2 <= r.voters.len() {
                    return Err(blocked(
                        reasons::REGION_MAJORITY_AT_RISK,
                        format!(
                            "Region {} has {healthy} healthy voter(s) of {} besides store \
                             {failed_store}: without it the Region has no majority; not \
                             replacing (a majority already lost is reported, not repaired)",
                            r.id,
                            r.voters.len()
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}
