//! The TiKV layer of tikv-operator: TiKVGroups and their TiKV instances
//! (stores). See the README for the lifecycle (join, scale-in, cancellation,
//! PVC policy, status, Cluster deletion, heterogeneous groups).
//!
//! Everything here except [`StoreView::observe`] and the [`reconcile`]
//! functions is pure planning: no client, no clock, no implicit randomness.
//!
//! - [`group`]: how many instances a TiKVGroup creates, which one it takes
//!   offline on scale-in, cancel-instead-of-create, refusal below
//!   `max-replicas`.
//! - [`removal`]: the step machine that removes one store safely (evict
//!   leaders, delete the store in PD, wait for Tombstone, delete Pod and
//!   PVCs) or cancels the removal.
//! - [`restart`]: rolling restarts: which store the group lets restart
//!   (the Cluster-wide `maxUnavailable` budget, PD first) and the steps of
//!   one restart (evict leaders, delete the Pod, wait for the store to be
//!   registered again, remove the evict-leader entry).
//! - [`store_labels`]: store labels from `server.labels` and node topology.
//! - [`render`]: the objects of one instance (ConfigMap, Pod, PVCs) and of
//!   a group (peer Service, instance objects).
//! - [`reconcile`]: observe -> plan -> apply -> report.

pub mod failover;
pub mod group;
pub mod reasons;
pub mod reconcile;
pub mod removal;
pub mod render;
pub mod restart;
pub mod store_labels;
pub mod store_view;

pub use store_view::{StoreView, Stores};
