//! Applying an instance's rendered objects: ConfigMap and PVCs always, the
//! Pod created when missing and patched in place while it runs the current
//! revision; a Pod on another revision is only reported (its group restarts
//! it the component's way).

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};

use super::render::{RenderError, Rendered};
use crate::objects::{cached, desired, name_of};
use crate::{KubeWriter, ObjectKey, Result};

/// Condition reason: the running Pod was started from an older rendering.
pub const RESTART_PENDING: &str = "RestartPending";
/// Condition reason: an outdated Pod is being restarted.
pub const RESTARTING: &str = "Restarting";

/// An instance's objects as the watch caches hold them.
#[derive(Debug, Clone, Copy)]
pub struct Cached<'a> {
    /// Its ConfigMap.
    pub config_map: Option<&'a ConfigMap>,
    /// Its PVCs.
    pub pvcs: &'a [PersistentVolumeClaim],
    /// Its Pod.
    pub pod: Option<&'a Pod>,
}

/// How a component treats its instance's Pod.
#[derive(Debug, Clone, Copy)]
pub struct PodPolicy {
    /// Whether a missing Pod is created; otherwise `missing` is reported.
    pub create: bool,
    /// Why a missing Pod is not created (when `create` is false).
    pub missing: &'static str,
    /// Whether a terminating Pod is waited for ([`RESTARTING`]) instead of
    /// being judged by its revision.
    pub wait_terminating: bool,
    /// The message of [`RESTART_PENDING`]: who restarts an outdated Pod.
    pub restart_pending: &'static str,
}

/// What [`apply_instance_objects`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// For humans (the Synced condition's message).
    pub message: String,
    /// The revision of the Pod created just now (its instance records it as
    /// current at once, instead of one status write later).
    pub created_revision: Option<String>,
}

impl Applied {
    fn said(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            created_revision: None,
        }
    }
}

/// The synced message of an instance whose Pod runs its current rendering.
/// A Pod created just now says the same: it is up to date, and a message
/// that changed one reconcile later would cost a status write.
pub const UP_TO_DATE: &str = "up to date";

/// Applies ConfigMap, PVCs and the Pod (see [`PodPolicy`]); under
/// `suspend_compute` the Pod is deleted and PVCs and config are kept. The
/// outer error is a failed write; the inner one why the instance is not in
/// sync: (reason, message). Ok: what was done.
pub async fn apply_instance_objects(
    kube: &dyn KubeWriter,
    rendered: &std::result::Result<Rendered, RenderError>,
    now: Cached<'_>,
    suspend_compute: bool,
    policy: PodPolicy,
) -> Result<std::result::Result<Applied, (&'static str, String)>> {
    let Rendered {
        config_map,
        pvcs,
        pod,
        revision,
    } = match rendered {
        Ok(r) => r,
        Err(e) => return Ok(Err((e.reason(), e.to_string()))),
    };
    kube.apply_if_changed(&desired(config_map)?, cached(now.config_map).as_ref())
        .await?;
    for pvc in pvcs {
        let current = cached(now.pvcs.iter().find(|p| name_of(*p) == name_of(pvc)));
        kube.apply_if_changed(&desired(pvc)?, current.as_ref())
            .await?;
    }
    if suspend_compute {
        if let Some(p) = now.pod {
            kube.delete(&ObjectKey::of(p)?).await?;
        }
        return Ok(Ok(Applied::said(
            "compute suspended: Pod deleted, PVCs and config kept",
        )));
    }
    match now.pod {
        None if policy.create => {
            kube.apply_if_changed(&desired(pod)?, None).await?;
            Ok(Ok(Applied {
                message: UP_TO_DATE.to_owned(),
                created_revision: Some(revision.revision.clone()),
            }))
        }
        None => Ok(Ok(Applied::said(policy.missing))),
        Some(current)
            if policy.wait_terminating && current.metadata.deletion_timestamp.is_some() =>
        {
            Ok(Err((
                RESTARTING,
                "waiting for the old Pod to terminate".to_owned(),
            )))
        }
        // Changing a running Pod is a disruption: the group restarts
        // outdated Pods; here the difference is only reported.
        Some(current) if revision.runs(Some(current)) => {
            // Same revision: whatever differs (labels, annotations, the
            // config hash under HotReload) is patched in place; a spec
            // rendered differently waits for the next recreation.
            let pod = crate::revision::in_place(pod, current);
            kube.apply_if_changed(&desired(&pod)?, cached(Some(current)).as_ref())
                .await?;
            Ok(Ok(Applied::said(UP_TO_DATE)))
        }
        Some(_) => Ok(Err((RESTART_PENDING, policy.restart_pending.to_owned()))),
    }
}
