//! What a PD or TiKV group does the same way with its template: refuse one
//! that must not roll out, and roll it out to the group's Services and
//! revision history.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Service;
use kube::Resource;

use super::render::{self, RenderError};
use super::{Blocked, Component, InstanceTemplate};
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
}
