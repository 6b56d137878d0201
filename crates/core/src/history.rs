//! A bounded history of a group's template revisions, kept as ControllerRevision objects
//! (one per revision: the template and the restart request it was computed from), so that
//! users can see, compare and re-apply earlier templates. Pure planning; the group
//! reconcilers apply the plan.
//!
//! The revision the group updates to (`updateRevision`) and the one all members last ran
//! (`currentRevision`) are always kept; of the others, the `limit` newest (by
//! `ControllerRevision.revision`, a number that grows with every new revision) stay and
//! older ones are deleted. The Cluster's `revisionHistoryLimit` (default 10) is the limit.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::Value;
use tikv_operator_api::labels;

/// Default of `Cluster.spec.revisionHistoryLimit`.
pub const DEFAULT_LIMIT: usize = 10;

/// What the history of one group is planned from.
#[derive(Debug, Clone)]
pub struct HistoryInput<'a> {
    /// Group name.
    pub group: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Labels every revision object of the group carries (managed-by, component, cluster,
    /// group): the watch cache selects them by these.
    pub labels: BTreeMap<String, String>,
    /// Owner reference to the group (the revisions go with it).
    pub owner: Option<OwnerReference>,
    /// The group's `updateRevision` and what it was computed from.
    pub update: &'a str,
    /// The template and restart request of `update`.
    pub data: Value,
    /// The group's `currentRevision`, if any.
    pub current: Option<&'a str>,
    /// Old revisions to keep besides `update` and `current`.
    pub limit: usize,
    /// The group's revision objects, as cached.
    pub existing: &'a [ControllerRevision],
}

/// What to change.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPlan {
    /// A revision object to create (for `update`, when none exists).
    pub create: Option<ControllerRevision>,
    /// Names of revision objects to delete (the oldest beyond the limit).
    pub delete: Vec<String>,
}

/// The object name of a group's revision.
pub fn revision_name(group: &str, revision: &str) -> String {
    format!("{group}-{revision}")
}

fn revision_of(cr: &ControllerRevision) -> Option<&str> {
    cr.metadata
        .labels
        .as_ref()?
        .get(labels::TEMPLATE_REVISION)
        .map(String::as_str)
}

/// Plans the history of one group; see the module docs.
pub fn plan_history(input: &HistoryInput<'_>) -> HistoryPlan {
    let has_update = input
        .existing
        .iter()
        .any(|cr| revision_of(cr) == Some(input.update));
    let create = (!has_update).then(|| {
        let next = input
            .existing
            .iter()
            .map(|cr| cr.revision)
            .max()
            .unwrap_or(0)
            .saturating_add(1);
        let mut labels_ = input.labels.clone();
        labels_.insert(
            labels::TEMPLATE_REVISION.to_owned(),
            input.update.to_owned(),
        );
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name(input.group, input.update)),
                namespace: Some(input.namespace.to_owned()),
                labels: Some(labels_),
                owner_references: input.owner.clone().map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            data: Some(RawExtension(input.data.clone())),
            revision: next,
        }
    });
    let mut old: Vec<&ControllerRevision> = input
        .existing
        .iter()
        .filter(|cr| cr.metadata.deletion_timestamp.is_none())
        .filter(|cr| {
            let r = revision_of(cr);
            r != Some(input.update) && (input.current.is_none() || r != input.current)
        })
        .collect();
    // Newest first; everything past the limit goes.
    old.sort_by_key(|cr| std::cmp::Reverse(cr.revision));
    let delete = old
        .iter()
        .skip(input.limit)
        .filter_map(|cr| cr.metadata.name.clone())
        .collect();
    HistoryPlan { create, delete }
}

/// Applies a [`HistoryPlan`] in `namespace`.
pub async fn apply_history(
    ctx: &crate::Ctx,
    namespace: Option<&str>,
    plan: &HistoryPlan,
) -> crate::Result<()> {
    if let Some(cr) = &plan.create {
        ctx.kube
            .apply_if_changed(&crate::Desired::from_typed(cr)?, None)
            .await?;
    }
    for name in &plan.delete {
        ctx.kube
            .delete(&crate::ObjectKey::new::<ControllerRevision>(
                namespace, name,
            ))
            .await?;
    }
    Ok(())
}

/// `Cluster.spec.revisionHistoryLimit`, defaulted (negative counts as 0; the API rejects it).
pub fn limit_of(cluster_limit: Option<i32>) -> usize {
    cluster_limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(l.max(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn cr(rev: &str, n: i64) -> ControllerRevision {
        ControllerRevision {
            metadata: ObjectMeta {
                name: Some(revision_name("kv", rev)),
                labels: Some([(labels::TEMPLATE_REVISION.to_owned(), rev.to_owned())].into()),
                ..ObjectMeta::default()
            },
            data: None,
            revision: n,
        }
    }

    fn input<'a>(
        existing: &'a [ControllerRevision],
        update: &'a str,
        current: Option<&'a str>,
        limit: usize,
    ) -> HistoryInput<'a> {
        HistoryInput {
            group: "kv",
            namespace: "ns",
            labels: BTreeMap::new(),
            owner: None,
            update,
            data: json!({"template": {"spec": {"version": "v8.5.6"}}}),
            current,
            limit,
            existing,
        }
    }

    #[test]
    fn a_new_revision_is_recorded_with_the_next_number() {
        let existing = [cr("a", 1), cr("b", 2)];
        let plan = plan_history(&input(&existing, "c", Some("b"), 10));
        let created = plan.create.unwrap();
        assert_eq!(created.revision, 3);
        assert_eq!(created.metadata.name.as_deref(), Some("kv-c"));
        assert_eq!(
            created.metadata.labels.unwrap()[labels::TEMPLATE_REVISION],
            "c"
        );
        assert!(plan.delete.is_empty());
        // Known already (a revert): nothing new.
        assert_eq!(
            plan_history(&input(&existing, "a", Some("b"), 10)).create,
            None
        );
    }

    #[test]
    fn the_oldest_beyond_the_limit_go_but_never_update_or_current() {
        let existing = [cr("a", 1), cr("b", 2), cr("c", 3), cr("d", 4), cr("e", 5)];
        // update e, current a (an update still rolling from an old revision): keep both,
        // plus the 2 newest others (d, c); b goes.
        let plan = plan_history(&input(&existing, "e", Some("a"), 2));
        assert_eq!(plan.delete, vec!["kv-b".to_owned()]);
        // Limit 0: only update and current stay.
        let plan = plan_history(&input(&existing, "e", Some("d"), 0));
        assert_eq!(
            plan.delete,
            vec!["kv-c".to_owned(), "kv-b".to_owned(), "kv-a".to_owned()]
        );
    }
}
