//! TiKV store simulator: joins a real PD the way a TiKV store does (GetMembers ->
//! IsBootstrapped -> Bootstrap for the first store -> AllocID -> PutStore -> StoreHeartbeat)
//! and keeps heartbeating until PD says the store is tombstoned or it is stopped.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::proto::{metapb, pdpb};
use crate::raftsim::{LiveGuard, World};

type Pd = pdpb::pd_client::PdClient<Channel>;

/// What a simulated store needs to know (read from its pod).
#[derive(Debug, Clone)]
pub struct StoreParams {
    /// PD endpoints (`host:port` or URLs).
    pub pd_endpoints: Vec<String>,
    /// Advertised gRPC address of the store (unique per store).
    pub address: String,
    /// Advertised status address.
    pub status_address: String,
    /// Version reported to PD, e.g. "8.5.5".
    pub version: String,
    /// Store labels.
    pub labels: Vec<(String, String)>,
    /// Where the store keeps its identity (the pod's data volume), if any.
    pub data_dir: Option<PathBuf>,
    /// Where the simulator writes its [`StoreStatus`].
    pub status_file: PathBuf,
    /// Heartbeat interval (PD wants one at least every 10 s).
    pub heartbeat: Duration,
    /// Capacity reported in store heartbeats.
    pub capacity_bytes: u64,
    /// Regions shared with the other simulated stores of the agent.
    pub world: World,
    /// Mutual TLS to PD (TiKV's `[security]`), host paths of the pod's mounted files.
    pub tls: Option<TlsFiles>,
}

/// Host paths of the PEM files of TiKV's `[security] ca-path`, `cert-path`, `key-path`. They
/// are read again for every new connection, as TiKV does, so a rotated Secret (rewritten in
/// place by the agent, as a kubelet does) is used from the next connection on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `ca-path`: the CA bundle PD's certificate must chain to.
    pub ca: PathBuf,
    /// `cert-path`: the store's certificate, presented to PD.
    pub cert: PathBuf,
    /// `key-path`: its key.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files' current contents as tonic's client TLS configuration.
    pub fn load(&self) -> Result<tonic::transport::ClientTlsConfig> {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        Ok(tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read(&self.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&self.cert)?,
                read(&self.key)?,
            )))
    }
}

/// Observable state of a simulated store (written as JSON to `status_file`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoreStatus {
    /// PD store id, once allocated.
    pub store_id: Option<u64>,
    /// PD cluster id.
    pub cluster_id: Option<u64>,
    /// "Starting", "Registered", "Heartbeating", "Tombstone".
    pub phase: String,
    /// Heartbeats PD accepted.
    pub heartbeats: u64,
    /// Regions with a peer on this store.
    pub region_count: u32,
    /// Regions this store leads.
    pub leader_count: u32,
    /// Whether this store bootstrapped the cluster.
    pub bootstrapped_cluster: bool,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The advertised address.
    pub address: String,
    /// Sessions that registered the store with PD (1 while nothing went wrong).
    #[serde(default)]
    pub sessions: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Ident {
    store_id: u64,
    cluster_id: u64,
    region_count: u32,
    bootstrapped_cluster: bool,
}

/// A PD business error (`header.error`).
#[derive(Debug)]
struct PdError {
    kind: pdpb::ErrorType,
    message: String,
}

impl std::fmt::Display for PdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PD error {:?}: {}", self.kind, self.message)
    }
}

impl std::error::Error for PdError {}

fn check(header: Option<pdpb::ResponseHeader>) -> Result<()> {
    if let Some(err) = header.and_then(|h| h.error) {
        let kind = pdpb::ErrorType::try_from(err.r#type).unwrap_or(pdpb::ErrorType::Unknown);
        if kind != pdpb::ErrorType::Ok {
            return Err(PdError {
                kind,
                message: err.message,
            }
            .into());
        }
    }
    Ok(())
}

fn pd_error_kind(e: &anyhow::Error) -> Option<pdpb::ErrorType> {
    e.downcast_ref::<PdError>().map(|p| p.kind)
}

fn url(endpoint: &str, tls: bool) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else if tls {
        format!("https://{endpoint}")
    } else {
        format!("http://{endpoint}")
    }
}

async fn connect(endpoint: &str, tls: Option<&TlsFiles>) -> Result<Pd> {
    connect_with(endpoint, tls, Some(Duration::from_secs(10))).await
}

/// A client whose requests time out after `timeout` (`None`: never, for long-lived streams:
/// a request timeout covers the wait for the response headers, and PD sends those on the
/// region heartbeat stream only with its first answer, so a store that leads no region would
/// lose its stream, and restart its session, every `timeout`).
///
/// With `tls`, the files are read now: a new connection uses the certificates of the moment.
async fn connect_with(
    endpoint: &str,
    tls: Option<&TlsFiles>,
    timeout: Option<Duration>,
) -> Result<Pd> {
    let mut ep =
        Channel::from_shared(url(endpoint, tls.is_some()))?.connect_timeout(Duration::from_secs(3));
    if let Some(files) = tls {
        ep = ep.tls_config(files.load()?)?;
    }
    if let Some(t) = timeout {
        ep = ep.timeout(t);
    }
    let channel = ep
        .connect()
        .await
        .with_context(|| format!("connecting to PD at {endpoint}"))?;
    Ok(Pd::new(channel))
}

/// Finds the PD leader through any endpoint; returns (cluster id, client to the leader, the
/// leader's URL).
async fn connect_leader(endpoints: &[String], tls: Option<&TlsFiles>) -> Result<(u64, Pd, String)> {
    let mut errors = Vec::new();
    for ep in endpoints {
        let attempt = async {
            let mut c = connect(ep, tls).await?;
            let resp = c
                .get_members(pdpb::GetMembersRequest { header: None })
                .await?
                .into_inner();
            check(resp.header.clone())?;
            let cluster_id = resp.header.map(|h| h.cluster_id).unwrap_or_default();
            let leader = resp
                .leader
                .and_then(|l| l.client_urls.into_iter().next())
                .ok_or_else(|| anyhow!("PD at {ep} has no leader yet"))?;
            let leader_client = connect(&leader, tls).await?;
            anyhow::Ok((cluster_id, leader_client, leader))
        };
        match attempt.await {
            Ok(r) => return Ok(r),
            Err(e) => errors.push(format!("{ep}: {e:#}")),
        }
    }
    bail!("no PD leader reachable: {}", errors.join("; "))
}

fn header(cluster_id: u64) -> Option<pdpb::RequestHeader> {
    Some(pdpb::RequestHeader {
        cluster_id,
        sender_id: 0,
    })
}

async fn alloc_id(pd: &mut Pd, cluster_id: u64) -> Result<u64> {
    let r = pd
        .alloc_id(pdpb::AllocIdRequest {
            header: header(cluster_id),
        })
        .await?
        .into_inner();
    check(r.header)?;
    Ok(r.id)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

struct Sim {
    p: StoreParams,
    status: StoreStatus,
    start: u64,
    live: Option<LiveGuard>,
}

impl Sim {
    fn save(&self) {
        if let Ok(text) = serde_json::to_string_pretty(&self.status) {
            let tmp = self.p.status_file.with_extension("tmp");
            if std::fs::write(&tmp, text).is_ok() {
                let _ = std::fs::rename(&tmp, &self.p.status_file);
            }
        }
    }

    fn ident_path(&self) -> Option<PathBuf> {
        self.p
            .data_dir
            .as_ref()
            .map(|d| d.join("e2e-store-ident.json"))
    }

    fn load_ident(&self) -> Option<Ident> {
        let text = std::fs::read_to_string(self.ident_path()?).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn save_ident(&self, ident: &Ident) -> Result<()> {
        if let Some(path) = self.ident_path() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(path, serde_json::to_string(ident)?)?;
        }
        Ok(())
    }

    fn store(&self, id: u64) -> metapb::Store {
        metapb::Store {
            id,
            address: self.p.address.clone(),
            state: metapb::StoreState::Up as i32,
            labels: self
                .p
                .labels
                .iter()
                .map(|(k, v)| metapb::StoreLabel {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            version: self.p.version.clone(),
            peer_address: self.p.address.clone(),
            status_address: self.p.status_address.clone(),
            git_hash: "e2e-store-simulator".into(),
            start_timestamp: i64::try_from(self.start).unwrap_or_default(),
            deploy_path: "/".into(),
            ..Default::default()
        }
    }

    /// Registers the store (bootstrapping the cluster if nobody did); returns its ident.
    async fn register(&mut self, pd: &mut Pd, cluster_id: u64) -> Result<Ident> {
        if let Some(ident) = self.load_ident()
            && ident.cluster_id == cluster_id
        {
            return Ok(ident);
        }
        let r = pd
            .is_bootstrapped(pdpb::IsBootstrappedRequest {
                header: header(cluster_id),
            })
            .await?
            .into_inner();
        check(r.header)?;
        let store_id = alloc_id(pd, cluster_id).await?;
        let mut ident = Ident {
            store_id,
            cluster_id,
            region_count: 0,
            bootstrapped_cluster: false,
        };
        if !r.bootstrapped {
            let region_id = alloc_id(pd, cluster_id).await?;
            let peer_id = alloc_id(pd, cluster_id).await?;
            let region = metapb::Region {
                id: region_id,
                start_key: Vec::new(),
                end_key: Vec::new(),
                region_epoch: Some(metapb::RegionEpoch {
                    conf_ver: 1,
                    version: 1,
                }),
                peers: vec![metapb::Peer {
                    id: peer_id,
                    store_id,
                    role: metapb::PeerRole::Voter as i32,
                }],
            };
            let resp = pd
                .bootstrap(pdpb::BootstrapRequest {
                    header: header(cluster_id),
                    store: Some(self.store(store_id)),
                    region: Some(region.clone()),
                })
                .await?
                .into_inner();
            match check(resp.header) {
                Ok(()) => {
                    ident.region_count = 1;
                    ident.bootstrapped_cluster = true;
                    self.p.world.add_region(cluster_id, region, peer_id);
                }
                Err(e) if pd_error_kind(&e) == Some(pdpb::ErrorType::AlreadyBootstrapped) => {}
                Err(e) => return Err(e),
            }
        }
        self.save_ident(&ident)?;
        Ok(ident)
    }

    async fn session(&mut self) -> Result<bool> {
        let (cluster_id, mut pd, leader_url) =
            connect_leader(&self.p.pd_endpoints, self.p.tls.as_ref()).await?;
        self.status.cluster_id = Some(cluster_id);
        let ident = self.register(&mut pd, cluster_id).await?;
        self.status.store_id = Some(ident.store_id);
        self.status.region_count = ident.region_count;
        self.status.bootstrapped_cluster = ident.bootstrapped_cluster;
        let r = pd
            .put_store(pdpb::PutStoreRequest {
                header: header(cluster_id),
                store: Some(self.store(ident.store_id)),
            })
            .await?
            .into_inner();
        if let Err(e) = check(r.header) {
            if pd_error_kind(&e) == Some(pdpb::ErrorType::StoreTombstone) {
                return Ok(true);
            }
            return Err(e);
        }
        self.status.phase = "Registered".into();
        self.status.sessions += 1;
        self.live = Some(self.p.world.live(cluster_id, ident.store_id));
        self.save();

        // Region heartbeats go over one stream per store, as in TiKV; PD answers on it with
        // scheduling steps, which are applied to the shared regions at once.
        let (tx, rx) = futures::channel::mpsc::unbounded::<pdpb::RegionHeartbeatRequest>();
        let mut reader_client = connect_with(&leader_url, self.p.tls.as_ref(), None).await?;
        let mut split_client = pd.clone();
        let world = self.p.world.clone();
        let reader = AbortOnDrop(tokio::spawn(async move {
            let mut stream = reader_client.region_heartbeat(rx).await?.into_inner();
            while let Some(resp) = stream.message().await? {
                if check(resp.header.clone()).is_err() {
                    continue;
                }
                if let Some(split) = &resp.split_region {
                    if let Err(e) = split_region(
                        &mut split_client,
                        &world,
                        cluster_id,
                        resp.region_id,
                        &split.keys,
                    )
                    .await
                    {
                        println!(
                            "store simulator: split of region {} failed: {e:#}",
                            resp.region_id
                        );
                    }
                } else if let Some(what) = world.apply(cluster_id, &resp) {
                    println!("store simulator: {what}");
                }
            }
            anyhow::Ok(())
        }));
        let store_id = ident.store_id;
        let mut last_store_heartbeat: Option<std::time::Instant> = None;
        loop {
            if reader.0.is_finished() {
                bail!("region heartbeat stream closed");
            }
            for r in self.p.world.led_by(cluster_id, store_id) {
                let down_peers = self
                    .p
                    .world
                    .down_peers(&r, cluster_id)
                    .into_iter()
                    .map(|(peer, down_seconds)| pdpb::PeerStats {
                        peer: Some(peer),
                        down_seconds,
                    })
                    .collect();
                let req = pdpb::RegionHeartbeatRequest {
                    header: header(cluster_id),
                    leader: r.leader_peer().cloned(),
                    region: Some(r.meta.clone()),
                    down_peers,
                    pending_peers: Vec::new(),
                    approximate_size: 1,
                    approximate_keys: 1000,
                    term: r.term,
                };
                tx.unbounded_send(req)
                    .map_err(|_| anyhow!("region heartbeat stream closed"))?;
            }
            let (regions, leaders) = self.p.world.counts(cluster_id, store_id);
            self.status.region_count = regions;
            self.status.leader_count = leaders;
            if last_store_heartbeat.is_none_or(|t| t.elapsed() >= self.p.heartbeat) {
                last_store_heartbeat = Some(std::time::Instant::now());
                let used = 1 << 20;
                let stats = pdpb::StoreStats {
                    store_id,
                    capacity: self.p.capacity_bytes,
                    available: self.p.capacity_bytes - used,
                    used_size: used,
                    region_count: regions,
                    start_time: u32::try_from(self.start).unwrap_or_default(),
                    ..Default::default()
                };
                let r = pd
                    .store_heartbeat(pdpb::StoreHeartbeatRequest {
                        header: header(cluster_id),
                        stats: Some(stats),
                    })
                    .await?
                    .into_inner();
                if let Err(e) = check(r.header) {
                    if pd_error_kind(&e) == Some(pdpb::ErrorType::StoreTombstone) {
                        return Ok(true);
                    }
                    return Err(e);
                }
                self.status.heartbeats += 1;
            }
            self.status.phase = "Heartbeating".into();
            self.status.last_error = None;
            self.save();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Splits a region as TiKV does when PD asks: AskBatchSplit for ids, split, ReportBatchSplit.
async fn split_region(
    pd: &mut Pd,
    world: &World,
    cluster_id: u64,
    region_id: u64,
    keys: &[Vec<u8>],
) -> Result<()> {
    let Some(region) = world.region(cluster_id, region_id) else {
        return Ok(());
    };
    let r = pd
        .ask_batch_split(pdpb::AskBatchSplitRequest {
            header: header(cluster_id),
            region: Some(region.meta.clone()),
            split_count: u32::try_from(keys.len()).unwrap_or(u32::MAX),
        })
        .await?
        .into_inner();
    check(r.header)?;
    let Some(regions) = world.split(cluster_id, region_id, keys, &r.ids) else {
        return Ok(());
    };
    let n = regions.len();
    let r = pd
        .report_batch_split(pdpb::ReportBatchSplitRequest {
            header: header(cluster_id),
            regions,
        })
        .await?
        .into_inner();
    check(r.header)?;
    println!("store simulator: split region {region_id} into {n}");
    Ok(())
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a restarted store (its identity already on its data volume) takes before it
/// registers with PD again, as a real TiKV opens its engines and replays its Raft logs first.
/// Meanwhile PD still reports the store Up from the previous process's heartbeats (it marks a
/// store Disconnected only after 20 s without one), which must not be taken for the new
/// process serving. A new store registers at once.
pub const RESTART_BOOT: Duration = Duration::from_secs(5);

/// Runs a simulated store until PD tombstones it (returns Ok) or the task is aborted.
pub async fn run(p: StoreParams) -> Result<()> {
    let mut sim = Sim {
        status: StoreStatus {
            phase: "Starting".into(),
            address: p.address.clone(),
            ..Default::default()
        },
        start: now_secs(),
        p,
        live: None,
    };
    sim.save();
    if sim.load_ident().is_some() {
        tokio::time::sleep(RESTART_BOOT).await;
    }
    loop {
        match sim.session().await {
            Ok(true) => {
                sim.live = None;
                sim.status.phase = "Tombstone".into();
                sim.save();
                return Ok(());
            }
            Ok(false) => {}
            Err(e) => {
                sim.status.last_error = Some(format!("{e:#}"));
                sim.save();
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
