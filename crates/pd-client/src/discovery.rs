//! Leader discovery: ask every known URL for the member list, require one
//! cluster id, find the leader, keep a channel to it. Knows nothing about
//! retry policy; callers decide when to refresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::task::JoinSet;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::config::normalize_url;
use crate::error::{PdError, Result};
use crate::grpc;
use crate::tls::TlsConfig;
use crate::types::{ClusterId, Member, Members};

/// What discovery found: the cluster, its members, the leader and a channel to it.
#[derive(Debug, Clone)]
pub(crate) struct LeaderView {
    pub(crate) cluster_id: ClusterId,
    pub(crate) members: Members,
    pub(crate) leader: Member,
    /// The leader's client URL in use (normalised).
    pub(crate) leader_url: String,
    pub(crate) leader_channel: Channel,
    /// Increases with every successful refresh.
    pub(crate) generation: u64,
}

#[derive(Debug)]
pub(crate) struct Discovery {
    seeds: Vec<String>,
    tls: Option<TlsConfig>,
    connect_timeout: Duration,
    request_timeout: Duration,
    /// One lazily connecting channel per URL; kept while the URL stays a seed
    /// or member URL, so a refresh that finds the same membership reuses
    /// connections instead of reconnecting.
    channels: Mutex<HashMap<String, Channel>>,
    view: RwLock<Option<Arc<LeaderView>>>,
    /// The first cluster id ever learned; never changes afterwards.
    pinned: Mutex<Option<ClusterId>>,
    /// Serialises refreshes; concurrent callers share one.
    refresh_lock: tokio::sync::Mutex<()>,
}

/// A comparable summary of membership: ids, names and client URLs, plus the leader.
type Fingerprint = (BTreeMap<u64, (String, Vec<String>)>, Option<u64>);

fn fingerprint(members: &Members) -> Fingerprint {
    (
        members
            .members
            .iter()
            .map(|m| (m.id.0, (m.name.clone(), m.client_urls.clone())))
            .collect(),
        members.leader.as_ref().map(|l| l.id.0),
    )
}

impl Discovery {
    pub(crate) fn new(
        seeds: &[String],
        tls: Option<TlsConfig>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self> {
        if seeds.is_empty() {
            return Err(PdError::config("no PD endpoints configured"));
        }
        let seeds: Vec<String> = seeds
            .iter()
            .map(|s| normalize_url(s, tls.is_some()))
            .collect();
        let this = Self {
            seeds,
            tls,
            connect_timeout,
            request_timeout,
            channels: Mutex::new(HashMap::new()),
            view: RwLock::new(None),
            pinned: Mutex::new(None),
            refresh_lock: tokio::sync::Mutex::new(()),
        };
        // Validate every seed URL now, so a typo is a config error at startup.
        for seed in &this.seeds {
            this.channel(seed)?;
        }
        Ok(this)
    }

    pub(crate) fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The cluster id learned so far, if any.
    pub(crate) fn cluster_id(&self) -> Option<ClusterId> {
        *self
            .pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The current view, if discovery has succeeded before.
    pub(crate) fn current(&self) -> Option<Arc<LeaderView>> {
        self.view
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn channel(&self, url: &str) -> Result<Channel> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let c = grpc::channel(url, self.tls.as_ref(), self.connect_timeout)?;
        channels.insert(url.to_owned(), c.clone());
        Ok(c)
    }

    /// Re-discovers members and leader. If another refresh finished while this
    /// one waited for its turn, that result is returned instead (single flight).
    pub(crate) async fn refresh(&self) -> Result<Arc<LeaderView>> {
        let seen = self.current().map(|v| v.generation);
        let _guard = self.refresh_lock.lock().await;
        if let Some(view) = self.current()
            && Some(view.generation) != seen
        {
            return Ok(view);
        }
        self.refresh_locked(seen).await
    }

    async fn refresh_locked(&self, seen: Option<u64>) -> Result<Arc<LeaderView>> {
        let previous = self.current();
        // Ask the seeds and every member we know about.
        let mut urls: Vec<String> = self.seeds.clone();
        if let Some(v) = &previous {
            for m in &v.members.members {
                for u in &m.client_urls {
                    urls.push(normalize_url(u, self.tls_enabled()));
                }
            }
        }
        // Seeds first, in configured order; then members. Answers keep this
        // order, so "expected" cluster id is the first seed's when seeds disagree.
        let mut seen_urls = std::collections::HashSet::new();
        urls.retain(|u| seen_urls.insert(u.clone()));

        let mut tasks = JoinSet::new();
        for (order, url) in urls.iter().enumerate() {
            let channel = self.channel(url)?;
            let timeout = self.request_timeout;
            let url = url.clone();
            tasks.spawn(async move {
                let res = match tokio::time::timeout(timeout, grpc::get_members(channel, timeout))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(PdError::Timeout {
                        operation: "get_members",
                        after: timeout,
                    }),
                };
                (order, url, res)
            });
        }
        let mut answers: Vec<(usize, String, Members)> = Vec::new();
        let mut failures: Vec<String> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((order, url, Ok(members))) => answers.push((order, url, members)),
                Ok((_, url, Err(e))) => {
                    debug!(%url, error = %e, "PD member did not answer GetMembers");
                    failures.push(format!("{url}: {e}"));
                }
                Err(e) => failures.push(format!("task failed: {e}")),
            }
        }
        answers.sort_by_key(|a| a.0);
        let answers = answers.into_iter().map(|(_, u, m)| (u, m)).collect();
        let view = self.select(answers, failures, previous.as_deref(), seen)?;
        let view = Arc::new(view);
        *self
            .view
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view.clone());
        Ok(view)
    }

    /// Picks the cluster and leader from the answers (cluster ids must agree,
    /// also with the pinned id) and prepares the leader channel.
    fn select(
        &self,
        answers: Vec<(String, Members)>,
        failures: Vec<String>,
        previous: Option<&LeaderView>,
        seen: Option<u64>,
    ) -> Result<LeaderView> {
        if answers.is_empty() {
            return Err(PdError::unavailable(format!(
                "no PD member answered: {}",
                failures.join("; ")
            )));
        }
        let pinned = self.cluster_id();
        let expected = pinned.unwrap_or(answers[0].1.cluster_id);
        if let Some((url, other)) = answers.iter().find(|(_, m)| m.cluster_id != expected) {
            warn!(%url, expected = %expected, got = %other.cluster_id, "PD cluster id mismatch");
            return Err(PdError::ClusterIdMismatch {
                expected,
                got: other.cluster_id,
            });
        }

        // The leader most answers agree on; ties go to the first answer's.
        let mut votes: Vec<(Member, usize)> = Vec::new();
        for (_, m) in &answers {
            if let Some(l) = &m.leader {
                match votes.iter_mut().find(|(v, _)| v.id == l.id) {
                    Some((_, n)) => *n += 1,
                    None => votes.push((l.clone(), 1)),
                }
            }
        }
        let Some(leader) = votes
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, n))| (*n, usize::MAX - i))
            .map(|(_, (l, _))| l.clone())
        else {
            return Err(PdError::unavailable(
                "PD has no leader (election in progress?)",
            ));
        };
        // Prefer the leader's own view of the membership.
        let members = answers
            .iter()
            .find(|(_, m)| {
                m.members.iter().any(|x| x.id == leader.id)
                    && m.leader.as_ref().map(|l| l.id) == Some(leader.id)
            })
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| answers[0].1.clone());

        let tls = self.tls_enabled();
        let leader_url = leader
            .client_urls
            .first()
            .map(|u| normalize_url(u, tls))
            .ok_or_else(|| PdError::Protocol {
                operation: "get_members",
                message: format!("leader {} has no client URL", leader.name),
            })?;
        let leader_channel = self.channel(&leader_url)?;

        // Forget channels of URLs that are neither seeds nor members any more.
        {
            let keep: Vec<String> = self
                .seeds
                .iter()
                .cloned()
                .chain(
                    members
                        .members
                        .iter()
                        .flat_map(|m| m.client_urls.iter().map(|u| normalize_url(u, tls))),
                )
                .chain(std::iter::once(leader_url.clone()))
                .collect();
            self.channels
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .retain(|url, _| keep.contains(url));
        }

        if pinned.is_none() {
            *self
                .pinned
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(expected);
        }
        let changed = previous.is_none_or(|p| fingerprint(&p.members) != fingerprint(&members));
        if changed {
            info!(
                cluster_id = %expected,
                leader = %leader.name,
                %leader_url,
                members = members.members.len(),
                "PD membership or leader changed"
            );
        }
        Ok(LeaderView {
            cluster_id: expected,
            members,
            leader,
            leader_url,
            leader_channel,
            generation: seen.map_or(1, |g| g + 1),
        })
    }
}
