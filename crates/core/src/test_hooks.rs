//! Test-only changes of the operator's rendering, set once at start.
//!
//! They exist so that end-to-end tests can run a "new operator version"
//! whose rendering differs harmlessly from the old one's, and check that
//! upgrading the operator restarts no Pod (`e2e/tests/operator_upgrade.rs`).
//! Nothing here is part of the revision of a Pod (see [`crate::revision`]):
//! that is exactly what the tests check. Production deployments never set
//! them; the manager's flag is hidden.

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::EnvVar;

static EXTRA_POD_ENV: OnceLock<Vec<EnvVar>> = OnceLock::new();

/// Adds the environment variables `vars` (`NAME=VALUE`) to the main
/// container of every PD and TiKV Pod rendered from now on. Test only. Can
/// be set once per process; returns false when it was set already.
pub fn set_extra_pod_env(vars: &[(String, String)]) -> bool {
    EXTRA_POD_ENV
        .set(
            vars.iter()
                .map(|(name, value)| EnvVar {
                    name: name.clone(),
                    value: Some(value.clone()),
                    value_from: None,
                })
                .collect(),
        )
        .is_ok()
}

/// The environment variables set by [`set_extra_pod_env`] (none by default).
pub fn extra_pod_env() -> Option<Vec<EnvVar>> {
    EXTRA_POD_ENV.get().filter(|v| !v.is_empty()).cloned()
}
