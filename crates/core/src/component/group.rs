//! What a PD or TiKV group does the same way with its template: refuse one
//! that must not roll out, refuse a TLS Secret its members must not use, and
//! roll the template out to the group's Services and revision history.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;

use super::render::{self, RenderError};
use super::{Blocked, Component, InstanceTemplate};
use crate::conditions::ConditionUpdate;
use crate::objects::{cached, desired, name_of};
use crate::{Ctx, Error, Result, history};

/// Condition reason: the template's version is lower than what members run.
pub const DOWNGRADE_REFUSED: &str = "DowngradeRefused";

/// Why a group's `template` must not reach its instances: its `version` is
/// lower than one of `running` (the versions the members run) unless the
/// group allows downgrades, or its `config` is rejected. Nothing of such a
/// template is rolled out; the last good one keeps running.
pub fn template_refusal<'a, C: Component>(
    group: &C::Group,
    template: &C::Template,
    running: impl IntoIterator<Item = &'a str>,
) -> Option<Blocked> {
    if let Some(message) = crate::version::downgrade_refusal(
        group.meta().annotations.as_ref(),
        template.version(),
        running,
    ) {
        return Some(Blocked {
            reason: DOWNGRADE_REFUSED,
            message,
        });
    }
    render::check_config::<C>(template.config())
        .err()
        .map(|e| Blocked {
            reason: render::INVALID_CONFIG,
            message: format!(
                "the template is not rolled out (the instances keep the last good one): {e}"
            ),
        })
}

/// The names a member's certificate must cover in a group speaking TLS: the
/// DNS name of each of `members` (`<pod>.<peer service>.<namespace>.svc`,
/// what it advertises) and the group's Services dialed by name
/// ([`Component::dialed_services`]).
pub fn tls_names<'a, C: Component>(
    group: &str,
    namespace: &str,
    members: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let peer = C::peer_service(group);
    let mut names: Vec<String> = members
        .into_iter()
        .map(|m| render::pod_host(m, &peer, namespace))
        .collect();
    names.extend(
        C::dialed_services(group)
            .iter()
            .map(|s| format!("{s}.{namespace}.svc")),
    );
    names
}

/// Why a group speaking TLS must neither create a member nor move one onto
/// a new revision: its TLS Secret (named by `template`, read as `secret`,
/// `None` when absent) fails [`crate::tls::check`] for `members` (the live
/// members and those about to be created) at `now`. `None`: it may. The
/// members running already are left alone either way.
pub fn tls_refusal<'a, C: Component>(
    group: &str,
    namespace: &str,
    template: &C::Template,
    secret: Option<&Secret>,
    members: impl IntoIterator<Item = &'a str>,
    now: Timestamp,
) -> Option<Blocked> {
    let name = format!(
        "{namespace}/{}",
        render::tls_secret_name::<C>(group, template)
    );
    let names = tls_names::<C>(group, namespace, members);
    let err = crate::tls::check(
        &name,
        secret,
        crate::tls::Usage::Member { names: &names },
        now,
    )
    .err()?;
    let peer = C::peer_service(group);
    let hint = match &err {
        crate::tls::SecretError::MissingSan { name, .. }
            if name.ends_with(&format!(".{peer}.{namespace}.svc")) =>
        {
            format!(
                "; every member is reached at <pod>.{peer}.{namespace}.svc: the DNS name \
                 *.{peer}.{namespace}.svc covers them all"
            )
        }
        _ => String::new(),
    };
    Some(Blocked {
        reason: err.reason(),
        message: format!(
            "no {kind} member is created or updated until the TLS Secret is fixed (running \
             members are left alone): {err}{hint}",
            kind = C::KIND
        ),
    })
}

/// Why no member may be created while the Cluster's client Secret `name`
/// (`<namespace>/<name>`, read as `secret`) fails [`crate::tls::check`] as a
/// client certificate at `now`: the operator could not reach the members.
/// `None`: it passes.
pub fn client_tls_refusal(name: &str, secret: Option<&Secret>, now: Timestamp) -> Option<Blocked> {
    let err = crate::tls::check(name, secret, crate::tls::Usage::Client, now).err()?;
    Some(Blocked {
        reason: err.reason(),
        message: format!(
            "no member is created until the Cluster's client TLS Secret is fixed (the operator \
             reaches PD with it): {err}"
        ),
    })
}

/// The TLS Secrets a group of a Cluster speaking TLS reads when it
/// reconciles (the operator caches no Secret: one `get` each).
#[derive(Debug, Clone)]
pub struct TlsSecrets {
    /// `<namespace>/<name>` of the Cluster's client Secret and the Secret,
    /// when the group checks it (PD: no member is created while the
    /// operator could not reach it).
    pub client: Option<(String, Option<Secret>)>,
    /// The group's Secret (`None`: absent).
    pub group: Option<Secret>,
}

impl TlsSecrets {
    /// Reads the Secret the members of `group` (named as `template` says)
    /// mount and, when `client_secret` names one, the Cluster's client
    /// Secret.
    pub async fn read<C: Component>(
        ctx: &Ctx,
        group: &str,
        namespace: &str,
        template: &C::Template,
        client_secret: Option<&str>,
    ) -> Result<Self> {
        let client = match client_secret {
            Some(name) => Some((
                format!("{namespace}/{name}"),
                ctx.kube.get_secret(namespace, name).await?,
            )),
            None => None,
        };
        let name = render::tls_secret_name::<C>(group, template);
        Ok(Self {
            client,
            group: ctx.kube.get_secret(namespace, &name).await?,
        })
    }

    /// Why the group must neither create a member nor move one onto a new
    /// revision now: the client Secret is refused ([`client_tls_refusal`]),
    /// else the group's Secret is refused for `members`
    /// ([`tls_refusal`]). `None`: it may.
    pub fn refusal<'a, C: Component>(
        &self,
        group: &str,
        namespace: &str,
        template: &C::Template,
        members: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
    ) -> Option<Blocked> {
        if let Some((name, secret)) = &self.client
            && let Some(b) = client_tls_refusal(name, secret.as_ref(), now)
        {
            return Some(b);
        }
        tls_refusal::<C>(
            group,
            namespace,
            template,
            self.group.as_ref(),
            members,
            now,
        )
    }
}

/// Of a refused template, what keeps the group from being `Synced` and
/// `Ready` (see [`crate::conditions::group_sync_and_ready`]): a config that
/// does not parse or a refused TLS Secret. A refused downgrade is not among
/// them: the last good template keeps running in sync.
pub fn sync_refusal(refused: Option<&Blocked>) -> Option<(&'static str, &str)> {
    refused
        .filter(|b| b.reason == render::INVALID_CONFIG || is_tls_refusal(b.reason))
        .map(|b| (b.reason, b.message.as_str()))
}

/// Publishes a Warning Event for a refused template (a downgrade, a config
/// that does not parse, a refused TLS Secret) when the refusal is new:
/// `previous` is the group's `Progressing` condition before this reconcile,
/// which carries the refusal while it lasts.
pub async fn announce_refusal<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    group: &K,
    refused: Option<&Blocked>,
    previous: Option<&Condition>,
) -> Result<()> {
    let Some(b) = refused.filter(|b| {
        b.reason == DOWNGRADE_REFUSED
            || b.reason == render::INVALID_CONFIG
            || is_tls_refusal(b.reason)
    }) else {
        return Ok(());
    };
    if previous.is_some_and(|c| c.reason == b.reason && c.message == b.message) {
        return Ok(());
    }
    tracing::warn!(reason = b.reason, message = %b.message, "template refused");
    let action = if is_tls_refusal(b.reason) {
        "CheckTLSSecret"
    } else {
        "Upgrade"
    };
    crate::objects::publish(
        ctx.kube.as_ref(),
        crate::objects::event(
            group,
            crate::kube_writer::EventType::Warning,
            b.reason,
            action,
            b.message.clone(),
        ),
    )
    .await
}

/// What a group's conditions report after a reconcile (see [`set_conditions`]).
#[derive(Debug)]
pub struct GroupConditions<'a> {
    /// `Progressing` as the plan decided it.
    pub progressing: ConditionUpdate,
    /// Pods outdated only by a bump of the rendering generation: what to tell.
    pub notice: Option<&'a str>,
    /// The notice is new this reconcile: it is announced with an Event.
    pub announce: bool,
    /// The group acts (its Cluster is not paused or deleted, nor is it).
    pub acting: bool,
    /// The `Failover` condition, when failover ran: holds, reason, message.
    pub failover: Option<(bool, String, String)>,
    /// The plan's refusal, if any (see [`sync_refusal`]).
    pub refused: Option<&'a Blocked>,
    /// Every member ready: holds, reason, message.
    pub ready: (bool, &'a str, String),
}

/// Sets a group's `Progressing` (with the rendering generation notice),
/// `Failover`, `Synced` and `Ready` conditions in `conds`, and announces a new
/// notice with an Event while the group progresses. The same for every
/// component.
pub async fn set_conditions<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    group: &K,
    conds: &mut Vec<Condition>,
    report: GroupConditions<'_>,
    now: Timestamp,
) -> Result<()> {
    let generation = group.meta().generation;
    let progressing = crate::revision::with_notice(report.progressing, report.notice);
    if report.announce
        && report.acting
        && let Some(n) = report.notice
        && progressing.status == crate::conditions::TRUE
    {
        tracing::info!(notice = n, "Pods outdated only by the rendering generation");
        crate::objects::publish(
            ctx.kube.as_ref(),
            crate::objects::event(
                group,
                crate::kube_writer::EventType::Normal,
                crate::revision::RENDERING_GENERATION_CHANGED,
                "Restart",
                n.to_owned(),
            ),
        )
        .await?;
    }
    crate::conditions::set(conds, progressing, generation, now);
    if let Some((holds, reason, message)) = report.failover {
        crate::conditions::set(
            conds,
            ConditionUpdate::new(
                crate::failover::reasons::CONDITION_FAILOVER,
                holds,
                reason,
                message,
            ),
            generation,
            now,
        );
    }
    // A rejected config or TLS Secret: not Synced, not Ready.
    for update in
        crate::conditions::group_sync_and_ready(sync_refusal(report.refused), report.ready)
    {
        crate::conditions::set(conds, update, generation, now);
    }
    Ok(())
}

/// Reason of a group that waits for its Cluster to be claimed.
pub const WAITING_FOR_CLUSTER: &str = "WaitingForCluster";

/// What a group waits for while its Cluster `cluster` does not carry the
/// operator's finalizer yet: nothing is created for a Cluster whose deletion
/// the operator could not see through.
pub fn waiting_for_cluster(cluster: &str) -> Blocked {
    Blocked {
        reason: WAITING_FOR_CLUSTER,
        message: format!(
            "Cluster {cluster} does not carry the operator's finalizer yet; nothing is created \
             for it until its first reconcile adds it"
        ),
    }
}

/// Whether `reason` is one of a refused TLS Secret.
pub fn is_tls_refusal(reason: &str) -> bool {
    [
        crate::tls::SECRET_MISSING,
        crate::tls::SECRET_INVALID,
        crate::tls::CERTIFICATE_MISSING_SAN,
    ]
    .contains(&reason)
}

/// A group's template revision, for its revision history.
#[derive(Debug, Clone)]
pub struct TemplateRevision<'a> {
    /// The template's revision (`status.updateRevision`).
    pub update: &'a str,
    /// What it is computed from.
    pub data: serde_json::Value,
    /// Every instance runs it: it becomes the current revision.
    pub all_updated: bool,
    /// The current revision the group's status records.
    pub recorded_current: Option<&'a str>,
    /// `spec.revisionHistoryLimit` of the Cluster.
    pub limit: usize,
    /// The group's ControllerRevisions as cached.
    pub existing: &'a [ControllerRevision],
}

/// Applies a group's Services (`cached`: as the watch cache holds them) and
/// records its template in the revision history.
pub async fn apply_group_objects<C: Component>(
    ctx: &Ctx,
    group: &C::Group,
    cluster: &str,
    services: impl IntoIterator<Item = std::result::Result<Service, RenderError>>,
    cached_services: &[Service],
    revision: TemplateRevision<'_>,
) -> Result<()> {
    for svc in services {
        let svc = svc.map_err(|e| Error::InvalidSpec {
            message: e.to_string(),
        })?;
        let d = desired(&svc)?;
        let current = cached(cached_services.iter().find(|c| name_of(*c) == d.key.name));
        ctx.kube.apply_if_changed(&d, current.as_ref()).await?;
    }
    let name = name_of(group);
    let namespace = group.meta().namespace.as_deref();
    history::apply_history(
        ctx,
        namespace,
        &history::plan_history(&history::HistoryInput {
            group: name,
            namespace: namespace.unwrap_or_default(),
            labels: render::group_selector::<C>(cluster, name),
            owner: group.controller_owner_ref(&()),
            update: revision.update,
            data: revision.data,
            current: if revision.all_updated {
                Some(revision.update)
            } else {
                revision.recorded_current
            },
            limit: revision.limit,
            existing: revision.existing,
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tikv_operator_api::labels::ALLOW_DOWNGRADE;
    use tikv_operator_api::rules::{OwnedKeys, PD_OWNED_KEYS};
    use tikv_operator_api::{PD, PDGroup, PDTemplateSpec, Topology};

    struct TestPd;
    impl Component for TestPd {
        type Instance = PD;
        type Group = PDGroup;
        type Template = PDTemplateSpec;
        const KIND: &'static str = "PD";
        const LABEL: &'static str = "pd";
        const CONTAINER: &'static str = "pd";
        const DEFAULT_IMAGE: &'static str = "pingcap/pd";
        const BINARY: &'static str = "/pd-server";
        const CONFIG_DIR: &'static str = "/etc/pd";
        const CONFIG_FILE: &'static str = "pd.toml";
        const DEFAULT_DATA_DIR: &'static str = "/var/lib/pd";
        const TLS_DIR: &'static str = "/var/lib/pd-tls";
        const OWNED_KEYS: OwnedKeys = PD_OWNED_KEYS;
        const OWNED_KEYS_HINT: &'static str = "";
        const TERMINATION_GRACE_PERIOD_SECONDS: Option<i64> = None;
        fn template(i: &PD) -> &PDTemplateSpec {
            &i.spec.template
        }
        fn cluster(i: &PD) -> &str {
            &i.spec.cluster.name
        }
        fn topology(i: &PD) -> Option<&Topology> {
            i.spec.topology.as_ref()
        }
        fn subdomain(i: &PD) -> &str {
            &i.spec.subdomain
        }
        fn tls_cluster(i: &PD) -> bool {
            i.spec.tls_cluster
        }
        fn default_tls_secret(group: &str) -> String {
            format!("{group}-pd-tls")
        }
        fn peer_service(group: &str) -> String {
            format!("{group}-pd-peer")
        }
        fn dialed_services(group: &str) -> Vec<String> {
            vec![format!("{group}-pd"), format!("{group}-pd-peer")]
        }
    }

    fn group(allow_downgrade: bool) -> PDGroup {
        let mut g: PDGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "core.tikv.org/v1alpha1",
            "kind": "PDGroup",
            "metadata": {"name": "pd", "namespace": "ns"},
            "spec": {"cluster": {"name": "c"}, "replicas": 3,
                     "template": {"spec": {"version": "v8.5.0", "volumes": []}}}
        }))
        .unwrap();
        if allow_downgrade {
            g.metadata.annotations = Some([(ALLOW_DOWNGRADE.to_owned(), "true".to_owned())].into());
        }
        g
    }

    /// A template rolls out unless its version is below what a member runs
    /// (and downgrades are not allowed) or its config is rejected; the
    /// downgrade is reported first.
    #[test]
    fn templates_that_must_not_roll_out() {
        // (version, downgrades allowed, versions running, config, refusal)
        type Case<'a> = (
            &'a str,
            bool,
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: [Case<'_>; 7] = [
            ("v8.5.0", false, &["v8.5.0", "v8.1.0"], None, None),
            ("v8.5.0", false, &["v8.5.1"], None, Some(DOWNGRADE_REFUSED)),
            ("v8.5.0", true, &["v8.5.1"], None, None),
            (
                "v8.5.0",
                false,
                &[],
                Some("[log]\nlevel = \"info\"\n"),
                None,
            ),
            (
                "v8.5.0",
                false,
                &[],
                Some("name = \"x\"\n"),
                Some(render::INVALID_CONFIG),
            ),
            (
                "v8.5.0",
                false,
                &[],
                Some("not toml ["),
                Some(render::INVALID_CONFIG),
            ),
            (
                "v8.5.0",
                false,
                &["v9.0.0"],
                Some("not toml ["),
                Some(DOWNGRADE_REFUSED),
            ),
        ];
        for (version, allow, running, config, want) in cases {
            let g = group(allow);
            let mut template = g.spec.template.spec.clone();
            template.version = version.to_owned();
            template.config = config.map(str::to_owned);
            let got = template_refusal::<TestPd>(&g, &template, running.iter().copied());
            assert_eq!(
                got.as_ref().map(|b| b.reason),
                want,
                "{version} {allow} {running:?} {config:?}: {got:?}"
            );
        }
    }

    #[test]
    fn tls_names_are_every_member_and_the_dialed_services() {
        assert_eq!(
            tls_names::<TestPd>("basic", "ns1", ["basic-pd-a", "basic-pd-b"]),
            [
                "basic-pd-a.basic-pd-peer.ns1.svc",
                "basic-pd-b.basic-pd-peer.ns1.svc",
                "basic-pd.ns1.svc",
                "basic-pd-peer.ns1.svc",
            ]
        );
    }

    /// The group's Secret (the template's name, else the default) is checked
    /// for every member; a member not covered is named with the wildcard
    /// that covers them all; the client Secret is told first.
    #[test]
    fn tls_refusals_name_the_secret_and_the_fix() {
        use crate::tls::tests::{ca, leaf, now, secret};
        let g = group(false);
        let mut template = g.spec.template.spec.clone();
        let ca = ca("ca");
        let services = ["basic-pd.ns1.svc", "basic-pd-peer.ns1.svc"];
        let (cert, key) = leaf(&ca, &services);
        let no_members = secret(&ca.pem(), &cert, &key);
        let b = tls_refusal::<TestPd>(
            "basic",
            "ns1",
            &template,
            Some(&no_members),
            ["basic-pd-a"],
            now(),
        )
        .unwrap();
        assert_eq!(b.reason, crate::tls::CERTIFICATE_MISSING_SAN);
        assert!(b.message.contains("ns1/basic-pd-tls"), "{}", b.message);
        assert!(
            b.message.contains("basic-pd-a.basic-pd-peer.ns1.svc"),
            "{}",
            b.message
        );
        assert!(
            b.message
                .contains("*.basic-pd-peer.ns1.svc covers them all"),
            "{}",
            b.message
        );
        // No member yet: only the Services count.
        assert_eq!(
            tls_refusal::<TestPd>("basic", "ns1", &template, Some(&no_members), [], now()),
            None
        );
        let (cert, key) = leaf(&ca, &["*.basic-pd-peer.ns1.svc", services[0], services[1]]);
        let good = secret(&ca.pem(), &cert, &key);
        assert_eq!(
            tls_refusal::<TestPd>(
                "basic",
                "ns1",
                &template,
                Some(&good),
                ["basic-pd-a"],
                now()
            ),
            None
        );
        template.tls_secret_name = Some("mine".into());
        let b = tls_refusal::<TestPd>("basic", "ns1", &template, None, [], now()).unwrap();
        assert_eq!(b.reason, crate::tls::SECRET_MISSING);
        assert!(b.message.contains("ns1/mine"), "{}", b.message);
        // The client Secret first, then the group's.
        let both = TlsSecrets {
            client: Some(("ns1/basic-client-tls".into(), None)),
            group: Some(good.clone()),
        };
        let b = both
            .refusal::<TestPd>("basic", "ns1", &g.spec.template.spec, ["basic-pd-a"], now())
            .unwrap();
        assert!(b.message.contains("ns1/basic-client-tls"), "{}", b.message);
        assert!(is_tls_refusal(b.reason));
        let (cert, key) = leaf(&ca, &["tikv-operator"]);
        let fixed = TlsSecrets {
            client: Some((
                "ns1/basic-client-tls".into(),
                Some(secret(&ca.pem(), &cert, &key)),
            )),
            group: Some(good),
        };
        assert_eq!(
            fixed.refusal::<TestPd>("basic", "ns1", &g.spec.template.spec, ["basic-pd-a"], now()),
            None
        );
        assert!(!is_tls_refusal(render::INVALID_CONFIG));
    }
}
