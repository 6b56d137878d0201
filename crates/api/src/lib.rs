#![doc = include_str!("../README.md")]
// Repeated `printcolumn(type_ = ...)` arguments of the CRD derive are distinct
// columns, not duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod cluster;
pub mod common;
pub mod crd;
pub mod labels;
pub mod names;
pub mod pd;
pub mod rules;
pub mod tikv;

pub use cluster::{Cluster, ClusterSpec, ClusterStatus};
pub use common::*;
pub use crd::{
    all_crds, crd_file_name, render_all_crds_yaml, render_crd_yaml, schema_json, schema_json_of,
};
pub use pd::{
    MemberFailure, PD, PDGroup, PDGroupSpec, PDGroupStatus, PDSpec, PDStatus, PDTemplateSpec,
    PdFailoverStatus,
};
pub use tikv::{
    TiKV, TiKVGroup, TiKVGroupSpec, TiKVGroupStatus, TiKVSpec, TiKVStatus, TiKVTemplateSpec,
};

/// API group of every kind in this crate.
pub const GROUP: &str = "core.tikv.org";
/// API version of every kind in this crate.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string of every kind in this crate.
pub const API_VERSION: &str = "core.tikv.org/v1alpha1";
