//! Shared plumbing of every tikv-operator reconciler.
//!
//! Reconcilers follow one shape: *observe* (watch caches, PD state) -> *plan*
//! (pure) -> *apply* -> *report*. This crate owns what every layer needs for
//! the effectful stages and nothing component specific:
//!
//! - [`KubeWriter`]: the narrow Kubernetes side-effect trait (server-side apply
//!   with the field manager [`tikv_operator_api::labels::FIELD_MANAGER`],
//!   delete, status patch, Events). [`KubeWriter::apply_if_changed`] skips a
//!   write when the watch cache already holds the desired object.
//!   [`KubeClientWriter`] is the production implementation over `kube::Client`.
//! - [`pd_state::PdStateCache`]: the per-Cluster PD state cache (adaptive
//!   refresh, publish on change, which members/stores changed).
//! - [`ledger`]: read-your-own-writes: which of this process's writes the
//!   watch caches do not show yet (no reconcile acts on a cache behind them).
//! - [`component`]: what PD and TiKV instances share (naming, spread, Pod
//!   readiness, overlays).
//! - [`Clock`]: the only source of "now" for reconcilers.
//! - [`Ctx`]: the side effects a reconcile may use (writer, clock, requeue policy).
//! - [`conditions`]: Kubernetes-convention conditions (lastTransitionTime
//!   changes only with the status; observedGeneration).
//! - [`revision`]: which changes need a running Pod recreated (the user's
//!   inputs and the rendering generation) and which apply in place.
//! - [`tls`]: what a TLS Secret must hold (keys, PEM, key match, chain,
//!   validity, usage, names), checked before anything uses it.
//! - [`test_hooks`]: test-only rendering changes (end-to-end tests of an
//!   operator upgrade).
//! - [`Error`]: the one error type of the effectful stages, with a stable
//!   [`Error::category`] for metrics and Events.
//! - [`Requeue`] / [`RequeuePolicy`]: when a reconcile runs again.
//!
//! In-memory fakes (`fake::FakeKube`, `fake::FakeClock`) that record every
//! call are behind the `fake` feature, for reconciler tests.

mod clock;
pub mod component;
pub mod conditions;
pub mod config;
mod ctx;
mod error;
pub mod failover;
#[cfg(feature = "fake")]
pub mod fake;
pub mod history;
mod kube_client;
mod kube_writer;
pub mod ledger;
pub mod objects;
pub mod pd_state;
mod requeue;
pub mod revision;
pub mod test_hooks;
pub mod tls;
pub mod version;

pub use clock::{Clock, SystemClock};
pub use ctx::Ctx;
pub use error::{BoxError, Error, Result};
pub use kube_client::KubeClientWriter;
pub use kube_writer::{
    ApplyOutcome, Desired, EventSpec, EventType, KubeWriter, ObjectKey, contains_desired,
    content_hash,
};
pub use requeue::{Requeue, RequeuePolicy};
