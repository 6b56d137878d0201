//! What PD and TiKV instances share, written once and generic over a
//! [`Component`]: instance naming ([`naming`]), EvenlySpread placement
//! ([`spread`]), Pod readiness ([`pods`]), user overlays ([`overlay`]), the
//! rendering of an instance's objects ([`render`]) and their apply ([`apply`]). Each layer
//! implements [`Component`] for its kind and keeps only what is its own
//! (PD membership and bootstrap; TiKV stores, labels and eviction).

pub mod apply;
pub mod group;
pub mod naming;
pub mod overlay;
pub mod pods;
pub mod render;
mod service;
pub mod spread;

use kube::Resource;
use serde::Serialize;
use tikv_operator_api::common::{
    ConfigUpdateStrategy, Overlay, ResourceRequirements, Topology, UpdateStrategy, Volume,
};
use tikv_operator_api::rules::OwnedKeys;
use tikv_operator_api::{PDTemplateSpec, TiKVTemplateSpec};

/// Why a group is not (yet) where `replicas` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// CamelCase reason for the `Progressing` condition (see each layer's `reasons`).
    pub reason: &'static str,
    /// What the group waits for, for humans.
    pub message: String,
}

/// The instance template fields every component has (`spec.template.spec`
/// of a group, inlined in each instance).
pub trait InstanceTemplate: Serialize {
    /// `version`.
    fn version(&self) -> &str;
    /// `image`.
    fn image(&self) -> Option<&str>;
    /// `resources`.
    fn resources(&self) -> Option<&ResourceRequirements>;
    /// `updateStrategy`.
    fn update_strategy(&self) -> Option<&UpdateStrategy>;
    /// `config`.
    fn config(&self) -> Option<&str>;
    /// `volumes`.
    fn volumes(&self) -> &[Volume];
    /// `overlay`.
    fn overlay(&self) -> Option<&Overlay>;
    /// `tlsSecretName`.
    fn tls_secret_name(&self) -> Option<&str>;

    /// Whether a configuration change applies without a restart.
    fn hot_reload(&self) -> bool {
        self.update_strategy().and_then(|u| u.config) == Some(ConfigUpdateStrategy::HotReload)
    }
}

macro_rules! instance_template {
    ($t:ty) => {
        impl InstanceTemplate for $t {
            fn version(&self) -> &str {
                &self.version
            }
            fn image(&self) -> Option<&str> {
                self.image.as_deref()
            }
            fn resources(&self) -> Option<&ResourceRequirements> {
                self.resources.as_ref()
            }
            fn update_strategy(&self) -> Option<&UpdateStrategy> {
                self.update_strategy.as_ref()
            }
            fn config(&self) -> Option<&str> {
                self.config.as_deref()
            }
            fn volumes(&self) -> &[Volume] {
                &self.volumes
            }
            fn overlay(&self) -> Option<&Overlay> {
                self.overlay.as_ref()
            }
            fn tls_secret_name(&self) -> Option<&str> {
                self.tls_secret_name.as_deref()
            }
        }
    };
}

instance_template!(PDTemplateSpec);
instance_template!(TiKVTemplateSpec);

/// One component (PD, TiKV): its kinds and what sets its instances apart.
/// Implemented by each layer on a marker type.
pub trait Component {
    /// The instance kind (`PD`, `TiKV`).
    type Instance: Resource<DynamicType = ()>;
    /// The group kind (`PDGroup`, `TiKVGroup`).
    type Group: Resource<DynamicType = ()>;
    /// The instance template.
    type Template: InstanceTemplate;

    /// The kind's name in messages (`PD`, `TiKV`); the group kind is this
    /// plus `Group`.
    const KIND: &'static str;
    /// Value of the [`tikv_operator_api::labels::COMPONENT`] label.
    const LABEL: &'static str;
    /// Name of the container.
    const CONTAINER: &'static str;
    /// Image used when the template names none.
    const DEFAULT_IMAGE: &'static str;
    /// The server binary the container runs.
    const BINARY: &'static str;
    /// Directory the ConfigMap is mounted at.
    const CONFIG_DIR: &'static str;
    /// Key of the configuration file in the ConfigMap.
    const CONFIG_FILE: &'static str;
    /// Data directory when the `data` mount names no path.
    const DEFAULT_DATA_DIR: &'static str;
    /// Directory the TLS Secret is mounted at when the member speaks TLS.
    const TLS_DIR: &'static str;
    /// Configuration keys the operator sets itself.
    const OWNED_KEYS: OwnedKeys;
    /// Appended to the message refusing a configuration that sets owned keys.
    const OWNED_KEYS_HINT: &'static str;
    /// The Pod's `terminationGracePeriodSeconds` (`None`: Kubernetes' default).
    const TERMINATION_GRACE_PERIOD_SECONDS: Option<i64>;

    /// An instance's template.
    fn template(i: &Self::Instance) -> &Self::Template;
    /// An instance's Cluster name.
    fn cluster(i: &Self::Instance) -> &str;
    /// The topology an instance is pinned to.
    fn topology(i: &Self::Instance) -> Option<&Topology>;
    /// The headless Service giving an instance's Pod its DNS name.
    fn subdomain(i: &Self::Instance) -> &str;
    /// Whether an instance speaks TLS (`spec.tlsCluster`).
    fn tls_cluster(i: &Self::Instance) -> bool;
    /// The TLS Secret of a group's members when its template names none.
    fn default_tls_secret(group: &str) -> String;
    /// The headless peer Service of a group (every member's DNS name is
    /// `<pod>.<peer service>.<namespace>.svc`).
    fn peer_service(group: &str) -> String;
    /// The group's Services that clients or members dial by their own name
    /// (`<service>.<namespace>.svc`): a member's certificate must cover them.
    fn dialed_services(group: &str) -> Vec<String>;
}
