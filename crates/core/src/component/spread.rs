//! EvenlySpread placement: which topology a new instance goes to, and how
//! crowded each instance's topology is (for choosing what to remove).

use tikv_operator_api::{SchedulePolicy, SchedulePolicyType, Topology};

/// Topologies and weights of a group's `EvenlySpread` policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Spread {
    /// `(topology, weight)`; weights are at least 1. Empty: no spreading.
    pub topologies: Vec<(Topology, u64)>,
}

impl Spread {
    /// The spread of a group's schedule policies (the first `EvenlySpread`
    /// policy; none means no spreading).
    pub fn from_policies(policies: &[SchedulePolicy]) -> Self {
        let topologies = policies
            .iter()
            .find(|p| p.type_ == SchedulePolicyType::EvenlySpread)
            .and_then(|p| p.evenly_spread.as_ref())
            .map(|e| {
                e.topologies
                    .iter()
                    .map(|t| {
                        let w = t.weight.unwrap_or(1).max(1);
                        (t.topology.clone(), u64::try_from(w).unwrap_or(1))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { topologies }
    }

    fn counts<'a>(&self, existing: impl IntoIterator<Item = Option<&'a Topology>>) -> Vec<u64> {
        let mut counts = vec![0u64; self.topologies.len()];
        for t in existing.into_iter().flatten() {
            if let Some(i) = self.topologies.iter().position(|(tt, _)| tt == t) {
                counts[i] += 1;
            }
        }
        counts
    }

    /// The topology for one new instance, given the topologies of the
    /// instances that stay: the one furthest below its weighted share (lowest
    /// count/weight; ties go to the earlier topology). `None` without spreading.
    pub fn next<'a>(
        &self,
        existing: impl IntoIterator<Item = Option<&'a Topology>>,
    ) -> Option<Topology> {
        let counts = self.counts(existing);
        let mut best: Option<usize> = None;
        for i in 0..self.topologies.len() {
            best = match best {
                None => Some(i),
                // counts[i]/w[i] < counts[b]/w[b]
                Some(b) if counts[i] * self.topologies[b].1 < counts[b] * self.topologies[i].1 => {
                    Some(i)
                }
                keep => keep,
            };
        }
        best.map(|i| self.topologies[i].0.clone())
    }

    /// Crowdedness of `topology` among `existing` as a fraction
    /// `(count, weight)`: higher count/weight is more crowded. A topology that
    /// is not (or no longer) part of the policy is the most crowded of all
    /// (`(1, 0)`, infinity) so that it is emptied first; without spreading every
    /// topology is equally crowded (`(0, 1)`).
    pub fn crowding<'a>(
        &self,
        topology: Option<&Topology>,
        existing: impl IntoIterator<Item = Option<&'a Topology>>,
    ) -> (u64, u64) {
        if self.topologies.is_empty() {
            return (0, 1);
        }
        let counts = self.counts(existing);
        match topology.and_then(|t| self.topologies.iter().position(|(tt, _)| tt == t)) {
            Some(i) => (counts[i], self.topologies[i].1),
            None => (1, 0),
        }
    }
}

/// Compares two fractions `a.0/a.1` and `b.0/b.1` (denominator 0 = infinity).
pub fn cmp_fraction(a: (u64, u64), b: (u64, u64)) -> std::cmp::Ordering {
    (u128::from(a.0) * u128::from(b.1)).cmp(&(u128::from(b.0) * u128::from(a.1)))
}

/// Spread fixtures for tests of the layers.
#[cfg(any(test, feature = "fake"))]
pub mod fixtures {
    use super::*;
    use tikv_operator_api::{EvenlySpreadPolicy, ScheduleTopology};

    /// A zone topology.
    pub fn zone(z: &str) -> Topology {
        [("topology.kubernetes.io/zone".to_owned(), z.to_owned())].into()
    }

    /// An `EvenlySpread` policy over zones with weights.
    pub fn policy(zones: &[(&str, Option<i32>)]) -> Vec<SchedulePolicy> {
        vec![SchedulePolicy {
            type_: SchedulePolicyType::EvenlySpread,
            evenly_spread: Some(EvenlySpreadPolicy {
                topologies: zones
                    .iter()
                    .map(|(z, w)| ScheduleTopology {
                        topology: zone(z),
                        weight: *w,
                    })
                    .collect(),
            }),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{policy, zone};
    use super::*;

    #[test]
    fn new_instances_fill_the_least_loaded_topology_by_weight() {
        let s = Spread::from_policies(&policy(&[("a", None), ("b", Some(2)), ("c", None)]));
        let mut placed: Vec<Topology> = Vec::new();
        for _ in 0..8 {
            let t = s.next(placed.iter().map(Some)).expect("spread");
            placed.push(t);
        }
        let count = |z: &str| placed.iter().filter(|t| **t == zone(z)).count();
        // Weights 1:2:1 over 8 instances.
        assert_eq!((count("a"), count("b"), count("c")), (2, 4, 2));
        // Ties go to the earlier topology.
        assert_eq!(s.next(std::iter::empty()), Some(zone("a")));
    }

    #[test]
    fn crowding_ranks_topologies_and_stale_ones_first() {
        let s = Spread::from_policies(&policy(&[("a", None), ("b", Some(2))]));
        let existing = [zone("a"), zone("a"), zone("b"), zone("b"), zone("x")];
        let a = s.crowding(Some(&zone("a")), existing.iter().map(Some));
        let b = s.crowding(Some(&zone("b")), existing.iter().map(Some));
        let x = s.crowding(Some(&zone("x")), existing.iter().map(Some));
        assert_eq!(cmp_fraction(a, b), std::cmp::Ordering::Greater);
        assert_eq!(cmp_fraction(x, a), std::cmp::Ordering::Greater);
        let none = Spread::default();
        assert_eq!(none.next(std::iter::empty()), None);
        assert_eq!(
            cmp_fraction(
                none.crowding(Some(&zone("a")), std::iter::empty()),
                none.crowding(None, std::iter::empty())
            ),
            std::cmp::Ordering::Equal
        );
    }
}
