//! The PD layer of tikv-operator: PDGroups and their PD instances.
//!
//! Everything here except [`PdView::observe`] is pure planning: functions
//! from observed state to desired objects and steps, with no client, no clock
//! and no implicit randomness.
//!
//! - [`group`]: how many instances a PDGroup creates or removes, where they
//!   go (EvenlySpread), bootstrap vs join, and when a scale-in is refused.
//! - [`removal`]: the step machine that removes one PD member safely
//!   (transfer leadership, remove the member through PD, delete the Pod).
//! - [`render`]: the objects of one PD instance (ConfigMap, Pod, PVCs) and
//!   of a group (peer and client Services, instance objects).

pub mod failover;
pub mod group;
pub mod pd_view;
pub mod reasons;
pub mod reconcile;
pub mod removal;
pub mod render;

pub use pd_view::{MemberView, Membership, PdView};
