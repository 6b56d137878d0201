//! The clock reconcilers read "now" from.

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

/// Source of the current time. Reconcilers never read the system time
/// directly, so tests control time with a fake.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

impl<T: Clock + ?Sized> Clock for Arc<T> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}
