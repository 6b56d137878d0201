//! PD's view of its own membership, as the planners consume it.

use pd_client::{ClusterId, MemberHealth, MemberId, Members, PdApi};
use tikv_operator_core::pd_state::PdSnapshot;

/// One observation of PD's membership. Planners act destructively only on a
/// [`PdView::Reachable`] view (safety rule 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdView {
    /// PD could not answer (unreachable, no leader, wrong cluster). Nothing
    /// destructive may happen; the message goes into a condition.
    Unreachable {
        /// Why, for conditions and Events.
        message: String,
    },
    /// PD answered.
    Reachable(Membership),
}

impl PdView {
    /// The membership, when PD answered.
    pub fn membership(&self) -> Option<&Membership> {
        match self {
            Self::Reachable(m) => Some(m),
            Self::Unreachable { .. } => None,
        }
    }

    /// The view of a PD state cache snapshot
    /// ([`tikv_operator_core::pd_state::PdStateCache`]).
    pub fn from_snapshot(s: &PdSnapshot) -> Self {
        match (&s.error, &s.members) {
            (None, Some(m)) => Self::Reachable(Membership {
                observed_at: s.observed_at,
                ..Membership::from_pd(m, &s.health)
            }),
            (Some(e), _) => Self::Unreachable { message: e.clone() },
            (None, None) => Self::Unreachable {
                message: "PD not read yet".to_owned(),
            },
        }
    }

    /// Guards against acting on the wrong PD: when the Cluster recorded a PD
    /// cluster id (`Cluster.status.id`) and PD reports another one, the view
    /// becomes [`PdView::Unreachable`].
    pub fn expecting_cluster_id(self, recorded: Option<&str>) -> Self {
        match (&self, recorded) {
            (Self::Reachable(m), Some(id)) if m.cluster_id.to_string() != id => Self::Unreachable {
                message: format!(
                    "PD reports cluster id {} but the Cluster recorded {id}; not acting on it",
                    m.cluster_id
                ),
            },
            _ => self,
        }
    }

    /// Asks PD for members and health. Any error yields
    /// [`PdView::Unreachable`]: a PD that cannot be trusted is never acted on.
    pub async fn observe(pd: &dyn PdApi) -> Self {
        let members = match pd.members().await {
            Ok(m) => m,
            Err(e) => {
                return Self::Unreachable {
                    message: format!("cannot read PD members ({}): {e}", e.category()),
                };
            }
        };
        match pd.health().await {
            Ok(health) => Self::Reachable(Membership::from_pd(&members, &health)),
            Err(e) => Self::Unreachable {
                message: format!("cannot read PD member health ({}): {e}", e.category()),
            },
        }
    }
}

/// One PD member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Member name (the PD instance and Pod name).
    pub name: String,
    /// Member id.
    pub id: MemberId,
    /// Peer URLs (the only identity of a member added to etcd whose process
    /// has not started yet: it has no name).
    pub peer_urls: Vec<String>,
    /// Whether PD's health check reached it.
    pub healthy: bool,
}

impl MemberView {
    /// How to name the member in a message (a member that has not started
    /// has no name).
    pub fn display(&self) -> String {
        if self.name.is_empty() {
            format!("member {} (added, not started)", self.id)
        } else {
            self.name.clone()
        }
    }
}

/// PD's members, their health and the leader.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Membership {
    /// The PD cluster id the answering member belongs to.
    pub cluster_id: ClusterId,
    /// All members, healthy or not.
    pub members: Vec<MemberView>,
    /// Name of the PD leader, if one is elected.
    pub leader: Option<String>,
    /// When the read this view comes from started (`None`: unknown). Health
    /// read before a member's Pod turned Ready says nothing about that Pod.
    pub observed_at: Option<k8s_openapi::jiff::Timestamp>,
}

impl Membership {
    /// Combines `members` with `health`; a member missing from the health
    /// report counts as unhealthy.
    pub fn from_pd(members: &Members, health: &[MemberHealth]) -> Self {
        Self {
            cluster_id: members.cluster_id,
            members: members
                .members
                .iter()
                .map(|m| MemberView {
                    name: m.name.clone(),
                    id: m.id,
                    peer_urls: m.peer_urls.clone(),
                    healthy: health.iter().any(|h| h.id == m.id && h.healthy),
                })
                .collect(),
            leader: members.leader.as_ref().map(|l| l.name.clone()),
            observed_at: None,
        }
    }

    /// Whether this view was read after `since` (unknown times count as
    /// fresh): only then does it say anything about a Pod Ready since then.
    pub fn fresher_than(&self, since: Option<k8s_openapi::jiff::Timestamp>) -> bool {
        match (self.observed_at, since) {
            (Some(at), Some(since)) => at > since,
            _ => true,
        }
    }

    /// The member named `name` (never a member without a name).
    pub fn member(&self, name: &str) -> Option<&MemberView> {
        self.members
            .iter()
            .find(|m| !m.name.is_empty() && m.name == name)
    }

    /// The member of the instance `name` that advertises `peer_url`: by
    /// name, else by peer URL (a member added to etcd by `--join` has no
    /// name until its process starts, but has its peer URL). Safety rule 3:
    /// members are identified by id and peer URL, never by name alone.
    pub fn member_of(&self, name: &str, peer_url: &str) -> Option<&MemberView> {
        let same_url = |u: &String| u.trim_end_matches('/') == peer_url.trim_end_matches('/');
        self.member(name).or_else(|| {
            self.members
                .iter()
                .find(|m| m.peer_urls.iter().any(same_url))
        })
    }

    /// Whether `name` is the PD leader.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader.as_deref() == Some(name)
    }

    /// Whether the members left after removing `victim` keep a quorum: at
    /// least one member is left and a strict majority of those left are
    /// healthy (safety rule 3). Removing a name that is not a member changes
    /// nothing, so it is safe exactly when the current membership has quorum.
    pub fn quorum_after_removal(&self, victim: &str) -> bool {
        self.quorum_without(self.member(victim).map(|m| m.id))
    }

    /// Whether the members left after removing the member `victim` (`None`:
    /// none) keep a quorum (see [`Membership::quorum_after_removal`]).
    pub fn quorum_without(&self, victim: Option<MemberId>) -> bool {
        let left: Vec<&MemberView> = self
            .members
            .iter()
            .filter(|m| Some(m.id) != victim)
            .collect();
        let healthy = left.iter().filter(|m| m.healthy).count();
        !left.is_empty() && healthy * 2 > left.len()
    }

    /// Unhealthy members other than the one named `except` (`""`: every
    /// unhealthy member), as [`MemberView::display`] names them. A member
    /// without a name (added, not started) is never `except`.
    pub fn unhealthy_except(&self, except: &str) -> Vec<String> {
        let id = self.member(except).map(|m| m.id);
        self.unhealthy_except_id(id)
    }

    /// Unhealthy members other than the member `except`.
    pub fn unhealthy_except_id(&self, except: Option<MemberId>) -> Vec<String> {
        self.members
            .iter()
            .filter(|m| Some(m.id) != except && !m.healthy)
            .map(MemberView::display)
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pd_client::{FakePd, PdError};

    /// A membership of `(name, healthy)` with `leader`.
    pub(crate) fn membership(members: &[(&str, bool)], leader: Option<&str>) -> Membership {
        Membership {
            cluster_id: ClusterId(1),
            members: members
                .iter()
                .enumerate()
                .map(|(i, (n, h))| MemberView {
                    name: (*n).to_owned(),
                    id: MemberId(i as u64 + 100),
                    peer_urls: vec![format!("http://{n}:2380")],
                    healthy: *h,
                })
                .collect(),
            leader: leader.map(str::to_owned),
            observed_at: None,
        }
    }

    #[test]
    fn quorum_after_removal() {
        let all = membership(&[("a", true), ("b", true), ("c", true)], Some("a"));
        assert!(all.quorum_after_removal("c"));
        // 3 members, one down: removing a healthy one leaves 1 of 2 healthy.
        let one_down = membership(&[("a", true), ("b", true), ("c", false)], Some("a"));
        assert!(!one_down.quorum_after_removal("b"));
        // Removing the down one leaves 2 of 2.
        assert!(one_down.quorum_after_removal("c"));
        // 5 members, two down: removing a healthy one leaves 2 of 4.
        let two_down = membership(
            &[
                ("a", true),
                ("b", true),
                ("c", true),
                ("d", false),
                ("e", false),
            ],
            Some("a"),
        );
        assert!(!two_down.quorum_after_removal("c"));
        assert!(two_down.quorum_after_removal("d"));
        // The last member can never be removed.
        assert!(!membership(&[("a", true)], Some("a")).quorum_after_removal("a"));
        // 2 members, removing one leaves a healthy single member.
        assert!(membership(&[("a", true), ("b", true)], Some("a")).quorum_after_removal("b"));
        // A non-member: safe iff the cluster has quorum now.
        assert!(!membership(&[("a", true), ("b", false)], None).quorum_after_removal("zz"));
    }

    #[tokio::test]
    async fn observe_reads_members_and_health_and_never_trusts_errors() {
        let pd = FakePd::with_cluster(3, 0);
        pd.set_member_healthy("pd-2", false);
        let view = PdView::observe(&pd).await;
        let m = view.membership().unwrap();
        assert_eq!(m.members.len(), 3);
        assert_eq!(m.leader.as_deref(), Some("pd-0"));
        assert!(!m.member("pd-2").unwrap().healthy);
        assert_eq!(m.unhealthy_except("pd-0"), vec!["pd-2"]);

        pd.set_unreachable(true);
        assert!(matches!(
            PdView::observe(&pd).await,
            PdView::Unreachable { .. }
        ));
        pd.set_unreachable(false);
        pd.inject_error(pd_client::FakeOp::Health, PdError::unavailable("flaky"));
        assert!(PdView::observe(&pd).await.membership().is_none());
    }

    #[test]
    fn a_pd_of_another_cluster_is_never_acted_on() {
        let view = PdView::Reachable(membership(&[("a", true)], Some("a")));
        assert_eq!(view.clone().expecting_cluster_id(None), view);
        assert_eq!(view.clone().expecting_cluster_id(Some("1")), view);
        assert!(view.expecting_cluster_id(Some("2")).membership().is_none());
    }

    #[tokio::test]
    async fn snapshots_of_the_state_cache_map_to_the_same_view() {
        use std::sync::Arc;
        use tikv_operator_core::pd_state::{PdStateCache, RefreshPolicy};
        let pd = FakePd::with_cluster(3, 0);
        pd.set_member_healthy("pd-1", false);
        let cache = PdStateCache::new(Arc::new(pd.clone()), RefreshPolicy::default());
        assert!(
            PdView::from_snapshot(&cache.current())
                .membership()
                .is_none()
        );
        let before = k8s_openapi::jiff::Timestamp::now();
        cache.refresh().await;
        let from_cache = PdView::from_snapshot(&cache.current());
        let observed_at = from_cache.membership().unwrap().observed_at;
        assert!(observed_at.is_some_and(|t| t >= before), "{observed_at:?}");
        let PdView::Reachable(observed) = PdView::observe(&pd).await else {
            panic!("unreachable")
        };
        assert_eq!(
            from_cache,
            PdView::Reachable(Membership {
                observed_at,
                ..observed
            })
        );
        // A view read before a Pod turned Ready says nothing about it.
        let m = from_cache.membership().unwrap();
        assert!(m.fresher_than(Some(before)));
        assert!(!m.fresher_than(
            observed_at.map(|t| t + k8s_openapi::jiff::SignedDuration::from_secs(1))
        ));
        assert!(m.fresher_than(None));
        pd.set_unreachable(true);
        cache.refresh().await;
        assert!(
            PdView::from_snapshot(&cache.current())
                .membership()
                .is_none()
        );
    }
}
