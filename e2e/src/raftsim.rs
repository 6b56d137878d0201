//! The regions of simulated stores, shared by all store simulators of the agent: which peers a
//! region has, which peer leads it, and the effect of PD's scheduling answers (add/remove
//! peer, transfer leader). Only the leader's store heartbeats a region, as in TiKV; when a
//! leader's store stops, a live voter takes over (a raft election, instantly).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::proto::{metapb, pdpb};

/// One simulated region.
#[derive(Debug, Clone)]
pub struct SimRegion {
    /// Region metadata as reported to PD.
    pub meta: metapb::Region,
    /// Peer id of the leader.
    pub leader: u64,
    /// Raft term (bumped on every leader change).
    pub term: u64,
}

impl SimRegion {
    /// The leader peer.
    pub fn leader_peer(&self) -> Option<&metapb::Peer> {
        self.meta.peers.iter().find(|p| p.id == self.leader)
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// (cluster id, region id) -> region.
    regions: BTreeMap<(u64, u64), SimRegion>,
    /// (cluster id, store id) of running simulators, with how many guards hold each (a
    /// restarted session takes its new guard before the old one is dropped).
    live: HashMap<(u64, u64), usize>,
    /// (cluster id, store id) of stores with peers that are not live, with when they were
    /// first seen not live (reported to PD as down peers, as a TiKV leader reports peers it
    /// has not heard from).
    dead_since: HashMap<(u64, u64), Instant>,
}

/// Shared region state of every simulated store of the agent.
#[derive(Debug, Default, Clone)]
pub struct World {
    inner: Arc<Mutex<Inner>>,
}

/// Marks a store live until dropped.
#[derive(Debug)]
pub struct LiveGuard {
    world: World,
    key: (u64, u64),
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut inner = self.world.lock();
        if let Some(n) = inner.live.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                inner.live.remove(&self.key);
                inner.dead_since.insert(self.key, Instant::now());
            }
        }
    }
}

fn is_voter(p: &metapb::Peer) -> bool {
    p.role == metapb::PeerRole::Voter as i32 || p.role == metapb::PeerRole::IncomingVoter as i32
}

impl World {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a region (the bootstrap region) led by `leader`.
    pub fn add_region(&self, cluster: u64, meta: metapb::Region, leader: u64) {
        self.lock().regions.insert(
            (cluster, meta.id),
            SimRegion {
                meta,
                leader,
                term: 1,
            },
        );
    }

    /// Marks a store live for as long as the returned guard lives.
    pub fn live(&self, cluster: u64, store: u64) -> LiveGuard {
        let mut inner = self.lock();
        *inner.live.entry((cluster, store)).or_insert(0) += 1;
        inner.dead_since.remove(&(cluster, store));
        drop(inner);
        LiveGuard {
            world: self.clone(),
            key: (cluster, store),
        }
    }

    /// Regions `store` leads now. A region whose leader's store is not live is taken over by
    /// this store if it has a voter there.
    pub fn led_by(&self, cluster: u64, store: u64) -> Vec<SimRegion> {
        let mut inner = self.lock();
        let live: HashSet<(u64, u64)> = inner.live.keys().copied().collect();
        let mut out = Vec::new();
        for ((c, _), r) in inner.regions.iter_mut() {
            if *c != cluster {
                continue;
            }
            let leader_store = r.leader_peer().map(|p| p.store_id);
            let leader_alive = leader_store.is_some_and(|s| live.contains(&(cluster, s)));
            // An election needs a majority of the voters live (a region that lost it has
            // no leader and is not heartbeated, as in raft).
            let voters: Vec<&metapb::Peer> = r.meta.peers.iter().filter(|p| is_voter(p)).collect();
            let live_voters = voters
                .iter()
                .filter(|p| live.contains(&(cluster, p.store_id)))
                .count();
            if !leader_alive
                && live_voters * 2 > voters.len()
                && let Some(p) = r
                    .meta
                    .peers
                    .iter()
                    .find(|p| p.store_id == store && is_voter(p))
            {
                r.leader = p.id;
                r.term += 1;
            }
            if r.leader_peer().is_some_and(|p| p.store_id == store) {
                out.push(r.clone());
            }
        }
        out
    }

    /// The peers of `region` on stores that are not live, with how long each has been seen
    /// down (seconds): what the region's leader reports as down peers.
    pub fn down_peers(&self, region: &SimRegion, cluster: u64) -> Vec<(metapb::Peer, u64)> {
        let mut inner = self.lock();
        let now = Instant::now();
        let mut out = Vec::new();
        for p in &region.meta.peers {
            let key = (cluster, p.store_id);
            if inner.live.contains_key(&key) {
                continue;
            }
            let since = *inner.dead_since.entry(key).or_insert(now);
            out.push((*p, now.duration_since(since).as_secs()));
        }
        out
    }

    /// The region `id` as the simulator knows it.
    pub fn region(&self, cluster: u64, id: u64) -> Option<SimRegion> {
        self.lock().regions.get(&(cluster, id)).cloned()
    }

    /// Splits region `id` at `keys` (sorted, inside the region) using the ids PD allocated:
    /// new regions take the left ranges, the original keeps the rightmost (as TiKV does by
    /// default). Returns every resulting region, left to right.
    pub fn split(
        &self,
        cluster: u64,
        id: u64,
        keys: &[Vec<u8>],
        ids: &[pdpb::SplitId],
    ) -> Option<Vec<metapb::Region>> {
        let mut inner = self.lock();
        let orig = inner.regions.get(&(cluster, id))?.clone();
        let mut keys: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| {
                k.as_slice() > orig.meta.start_key.as_slice()
                    && (orig.meta.end_key.is_empty() || k.as_slice() < orig.meta.end_key.as_slice())
            })
            .cloned()
            .collect();
        keys.sort();
        keys.dedup();
        if keys.is_empty() || ids.len() < keys.len() {
            return None;
        }
        let n = u64::try_from(keys.len()).ok()?;
        let epoch = orig.meta.region_epoch.unwrap_or_default();
        let new_epoch = metapb::RegionEpoch {
            conf_ver: epoch.conf_ver,
            version: epoch.version + n,
        };
        let leader_store = orig.leader_peer().map(|p| p.store_id);
        let mut out = Vec::new();
        let mut start = orig.meta.start_key.clone();
        for (key, sid) in keys.iter().zip(ids) {
            let peers: Vec<metapb::Peer> = orig
                .meta
                .peers
                .iter()
                .zip(&sid.new_peer_ids)
                .map(|(p, pid)| metapb::Peer {
                    id: *pid,
                    store_id: p.store_id,
                    role: p.role,
                })
                .collect();
            let leader = peers
                .iter()
                .find(|p| Some(p.store_id) == leader_store)
                .map_or(0, |p| p.id);
            let meta = metapb::Region {
                id: sid.new_region_id,
                start_key: start.clone(),
                end_key: key.clone(),
                region_epoch: Some(new_epoch),
                peers,
            };
            out.push(meta.clone());
            inner.regions.insert(
                (cluster, meta.id),
                SimRegion {
                    meta,
                    leader,
                    term: orig.term,
                },
            );
            start = key.clone();
        }
        if let Some(r) = inner.regions.get_mut(&(cluster, id)) {
            r.meta.start_key = start;
            r.meta.region_epoch = Some(new_epoch);
            out.push(r.meta.clone());
        }
        Some(out)
    }

    /// (regions with a peer on `store`, regions led by `store`).
    pub fn counts(&self, cluster: u64, store: u64) -> (u32, u32) {
        let inner = self.lock();
        let mut regions = 0;
        let mut leaders = 0;
        for ((c, _), r) in &inner.regions {
            if *c != cluster {
                continue;
            }
            if r.meta.peers.iter().any(|p| p.store_id == store) {
                regions += 1;
            }
            if r.leader_peer().is_some_and(|p| p.store_id == store) {
                leaders += 1;
            }
        }
        (regions, leaders)
    }

    /// Applies PD's answer to a region heartbeat; returns a description of what changed.
    pub fn apply(&self, cluster: u64, resp: &pdpb::RegionHeartbeatResponse) -> Option<String> {
        let mut inner = self.lock();
        let live: HashSet<(u64, u64)> = inner.live.keys().copied().collect();
        let r = inner.regions.get_mut(&(cluster, resp.region_id))?;
        let mut changes: Vec<pdpb::ChangePeer> = Vec::new();
        if let Some(cp) = &resp.change_peer {
            changes.push(*cp);
        }
        if let Some(v2) = &resp.change_peer_v2 {
            changes.extend(v2.changes.iter().cloned());
        }
        let mut what = Vec::new();
        for cp in changes {
            let Some(peer) = cp.peer else { continue };
            let kind = pdpb::ConfChangeType::try_from(cp.change_type)
                .unwrap_or(pdpb::ConfChangeType::AddNode);
            let role = match kind {
                pdpb::ConfChangeType::AddNode => metapb::PeerRole::Voter,
                pdpb::ConfChangeType::AddLearnerNode => metapb::PeerRole::Learner,
                pdpb::ConfChangeType::RemoveNode => {
                    if peer.id != r.leader {
                        r.meta.peers.retain(|p| p.id != peer.id);
                        what.push(format!(
                            "removed peer {} (store {})",
                            peer.id, peer.store_id
                        ));
                    }
                    continue;
                }
            };
            match r.meta.peers.iter_mut().find(|p| p.id == peer.id) {
                Some(p) => p.role = role as i32,
                None => r.meta.peers.push(metapb::Peer {
                    id: peer.id,
                    store_id: peer.store_id,
                    role: role as i32,
                }),
            }
            what.push(format!(
                "{kind:?} peer {} (store {})",
                peer.id, peer.store_id
            ));
        }
        if !what.is_empty()
            && let Some(epoch) = r.meta.region_epoch.as_mut()
        {
            epoch.conf_ver += 1;
        }
        if let Some(tl) = &resp.transfer_leader {
            let candidates = tl.peer.iter().chain(tl.peers.iter());
            for target in candidates {
                let ok = r.meta.peers.iter().any(|p| {
                    p.id == target.id && is_voter(p) && live.contains(&(cluster, p.store_id))
                });
                if ok {
                    r.leader = target.id;
                    r.term += 1;
                    what.push(format!(
                        "leader -> peer {} (store {})",
                        target.id, target.store_id
                    ));
                    break;
                }
            }
        }
        (!what.is_empty()).then(|| format!("region {}: {}", resp.region_id, what.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> metapb::Peer {
        metapb::Peer {
            id,
            store_id,
            role: metapb::PeerRole::Voter as i32,
        }
    }

    fn world_with_region() -> World {
        let w = World::default();
        w.add_region(
            7,
            metapb::Region {
                id: 2,
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers: vec![peer(3, 1)],
                ..Default::default()
            },
            3,
        );
        w
    }

    #[test]
    fn peers_are_added_and_leaders_move_only_to_live_voters() {
        let w = world_with_region();
        let _s1 = w.live(7, 1);
        let _s2 = w.live(7, 2);
        let add = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            change_peer: Some(pdpb::ChangePeer {
                peer: Some(peer(4, 2)),
                change_type: pdpb::ConfChangeType::AddLearnerNode as i32,
            }),
            ..Default::default()
        };
        assert!(w.apply(7, &add).is_some());
        assert_eq!(w.counts(7, 2), (1, 0));
        // A learner cannot take the lead.
        let transfer = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            transfer_leader: Some(pdpb::TransferLeader {
                peer: Some(peer(4, 2)),
                peers: Vec::new(),
            }),
            ..Default::default()
        };
        assert!(w.apply(7, &transfer).is_none());
        let promote = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            change_peer_v2: Some(pdpb::ChangePeerV2 {
                changes: vec![pdpb::ChangePeer {
                    peer: Some(peer(4, 2)),
                    change_type: pdpb::ConfChangeType::AddNode as i32,
                }],
            }),
            ..Default::default()
        };
        assert!(w.apply(7, &promote).is_some());
        assert!(w.apply(7, &transfer).is_some());
        assert_eq!(w.counts(7, 2), (1, 1));
        assert_eq!(w.counts(7, 1), (1, 0));
    }

    fn add_voter(w: &World, id: u64, store: u64) {
        let add = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            change_peer: Some(pdpb::ChangePeer {
                peer: Some(peer(id, store)),
                change_type: pdpb::ConfChangeType::AddNode as i32,
            }),
            ..Default::default()
        };
        w.apply(7, &add);
    }

    #[test]
    fn a_voter_takes_over_when_the_leader_store_stops() {
        let w = world_with_region();
        let s1 = w.live(7, 1);
        let _s2 = w.live(7, 2);
        let _s3 = w.live(7, 3);
        add_voter(&w, 4, 2);
        add_voter(&w, 5, 3);
        assert!(w.led_by(7, 2).is_empty());
        drop(s1);
        let led = w.led_by(7, 2);
        assert_eq!(led.len(), 1);
        assert_eq!(led[0].term, 2);
    }

    /// Raft needs a majority of the voters to elect a leader: with two of three voters'
    /// stores stopped, the region stays without a leader (and is not heartbeated).
    #[test]
    fn no_leader_without_a_majority_of_live_voters() {
        let w = world_with_region();
        let s1 = w.live(7, 1);
        let s2 = w.live(7, 2);
        let _s3 = w.live(7, 3);
        add_voter(&w, 4, 2);
        add_voter(&w, 5, 3);
        drop(s1);
        drop(s2);
        assert!(w.led_by(7, 3).is_empty());
    }

    /// The leader reports the peers on stopped stores as down, with how long they have been
    /// down; a store that comes back is no longer reported.
    #[test]
    fn peers_on_stopped_stores_are_reported_down() {
        let w = world_with_region();
        let _s1 = w.live(7, 1);
        let s2 = w.live(7, 2);
        add_voter(&w, 4, 2);
        let region = || w.region(7, 2).expect("region 2");
        assert!(w.down_peers(&region(), 7).is_empty());
        drop(s2);
        let down = w.down_peers(&region(), 7);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0.store_id, 2);
        let _back = w.live(7, 2);
        assert!(w.down_peers(&region(), 7).is_empty());
    }

    #[test]
    fn a_store_stays_live_while_a_newer_guard_holds_it() {
        let w = world_with_region();
        let _s1 = w.live(7, 1);
        let first = w.live(7, 2);
        let add = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            change_peer: Some(pdpb::ChangePeer {
                peer: Some(peer(4, 2)),
                change_type: pdpb::ConfChangeType::AddNode as i32,
            }),
            ..Default::default()
        };
        w.apply(7, &add);
        // A restarted session: the new guard first, then the old one goes.
        let _second = w.live(7, 2);
        drop(first);
        let transfer = pdpb::RegionHeartbeatResponse {
            region_id: 2,
            transfer_leader: Some(pdpb::TransferLeader {
                peer: Some(peer(4, 2)),
                peers: Vec::new(),
            }),
            ..Default::default()
        };
        assert!(w.apply(7, &transfer).is_some(), "store 2 is still live");
        assert_eq!(w.counts(7, 2), (1, 1));
    }

    #[test]
    fn split_gives_left_ranges_to_new_regions() {
        let w = world_with_region();
        let ids = vec![
            pdpb::SplitId {
                new_region_id: 10,
                new_peer_ids: vec![11],
            },
            pdpb::SplitId {
                new_region_id: 12,
                new_peer_ids: vec![13],
            },
        ];
        let regions = w
            .split(7, 2, &[b"m".to_vec(), b"c".to_vec()], &ids)
            .unwrap_or_default();
        let ranges: Vec<(u64, &[u8], &[u8])> = regions
            .iter()
            .map(|r| (r.id, r.start_key.as_slice(), r.end_key.as_slice()))
            .collect();
        assert_eq!(
            ranges,
            vec![
                (10, &b""[..], &b"c"[..]),
                (12, &b"c"[..], &b"m"[..]),
                (2, &b"m"[..], &b""[..])
            ]
        );
        assert!(
            regions
                .iter()
                .all(|r| r.region_epoch.is_some_and(|e| e.version == 3))
        );
        assert_eq!(w.counts(7, 1), (3, 3));
    }
}
