//! What makes a running Pod outdated, and what changes in place.
//!
//! | change                                   | effect on a running Pod                 |
//! |------------------------------------------|-----------------------------------------|
//! | instance spec that reaches the Pod spec (version/image, resources, ports, volume mounts, `overlay.pod.spec`, topology) | recreated (one member at a time) |
//! | `config` (and what the operator writes into it from the spec: TiKV store labels, the PD URL; PD's initial members), `updateStrategy.config` unset or `Restart` | recreated |
//! | the same, `updateStrategy.config: HotReload` | ConfigMap updated, Pod kept         |
//! | labels and annotations only              | patched in place, Pod kept              |
//! | volume size (`storage`), storage class, PVC overlay | PVC patched in place, Pod kept |
//! | `core.tikv.org/restarted-at` on the group| recreated (a requested rolling restart) |
//! | [`RENDERING_GENERATION`] bumped in a new operator version | recreated (one member at a time) |
//! | any other change of the operator's rendering | nothing now; the Pod gets it when it is recreated for another reason |
//!
//! # The revision
//!
//! A Pod's revision ([`labels::INSTANCE_REVISION`]) is computed from the
//! user's inputs ([`RevisionInputs`], gathered by each layer from the
//! instance) and [`RENDERING_GENERATION`], never from the rendered Pod: a
//! new operator version that renders Pods differently (a probe setting, an
//! environment variable, a changed default) therefore restarts nothing,
//! unless its developer bumped the generation on purpose. A running Pod whose
//! revision differs from the one of its instance is outdated.
//!
//! Format: `g<generation>-<inputs hash>`, followed by `-<config hash>` when
//! the configuration restarts the Pod (`updateStrategy.config` is not
//! `HotReload`). The generation and the parts can thus be read back from a
//! running Pod: under HotReload a Pod created under Restart stays current
//! when its inputs hash matches, and a Pod outdated only because the
//! generation was bumped is told apart (the groups name the generation in
//! `Progressing` and an Event before restarting it).
//!
//! # Pods from before the rendering generation
//!
//! Operator versions before the rendering generation stamped a bare 16-digit
//! hash of the rendered Pod spec ([`legacy_pod_revision`]). Such a Pod is
//! judged by comparing that hash with the legacy hash of today's rendering:
//! the first operator version with this scheme renders exactly what the
//! version before it rendered, so every such Pod is current, and its
//! instance re-stamps the new revision onto it in place (a metadata patch,
//! no restart). A legacy Pod whose rendering differs (an operator upgraded
//! across several versions at once) is outdated and restarted once, one
//! member at a time, as every operator upgrade did before.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tikv_operator_api::labels;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::conditions::{self, ConditionUpdate};
use crate::content_hash;

/// The rendering generation of this operator version.
///
/// It is part of every Pod revision. Bump it (by one) only when a change in
/// rendering must reach running Pods, e.g. a fix without which a Pod does not
/// work correctly; say so in the release notes. A bump restarts every PD and
/// TiKV Pod of every Cluster once, through the safe path (one member at a
/// time, PD leader last, TiKV within `maxUnavailable`), and the groups report
/// it in `Progressing` and an Event (`RenderingGenerationChanged`).
///
/// Any other rendering change (new defaults, probe settings, environment
/// variables, ...) needs no bump: running Pods keep their old rendering until
/// they are recreated for another reason (a template change, a restart
/// request, a lost Pod). The golden test
/// `crates/controller/tests/revision_golden.rs` fails when a change alters
/// the revision of the examples without a bump, or a bump without
/// regenerating the golden file.
///
/// History: 1, the first version computing revisions from the user's inputs.
pub const RENDERING_GENERATION: u32 = 1;

/// What the user controls about one instance's Pod: everything a Pod
/// revision is computed from besides [`RENDERING_GENERATION`]. Each layer
/// gathers it from the instance object (see its `render::revision_inputs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevisionInputs {
    /// The instance spec as far as it reaches the Pod spec (template without
    /// configuration, update strategy, PVC-only settings and Pod metadata;
    /// topology; subdomain). Any change restarts the Pod.
    pub spec: Value,
    /// What reaches the configuration file from the user (the `config` text,
    /// and the values from the spec or the Cluster the operator writes into
    /// it). A change restarts the Pod unless the config update strategy is
    /// `HotReload`.
    pub config: Value,
    /// The instance's restart request ([`labels::RESTARTED_AT`]).
    pub restarted_at: Option<String>,
}

impl RevisionInputs {
    fn spec_hash(&self, generation: u32) -> String {
        content_hash(&json!({
            "generation": generation,
            "spec": self.spec,
            "restartedAt": self.restarted_at,
        }))
    }

    fn config_hash(&self) -> String {
        content_hash(&self.config)
    }

    /// The revision of a Pod rendered from these inputs at `generation`;
    /// `config_restarts` is false when the config update strategy is
    /// `HotReload`.
    pub fn revision(&self, generation: u32, config_restarts: bool) -> String {
        let mut r = format!("g{generation}-{}", self.spec_hash(generation));
        if config_restarts {
            r.push('-');
            r.push_str(&self.config_hash());
        }
        r
    }
}

/// The part of a group template's `spec` (a PD or TiKV template, as JSON)
/// that reaches the Pod spec: without `config` (in
/// [`RevisionInputs::config`]), `updateStrategy` (it decides whether the
/// config counts), what only reaches PVCs (`volumes[].storage`,
/// `storageClassName`, `volumeAttributesClassName`, `overlay.volumeClaims`)
/// and the Pod overlay's metadata (patched in place). Every other field, and
/// every field added to the API later, counts: a change restarts the Pod.
pub fn template_inputs(mut template: Value) -> Value {
    if let Some(t) = template.as_object_mut() {
        t.remove("config");
        t.remove("updateStrategy");
        if let Some(volumes) = t.get_mut("volumes").and_then(Value::as_array_mut) {
            for v in volumes.iter_mut().filter_map(Value::as_object_mut) {
                v.remove("storage");
                v.remove("storageClassName");
                v.remove("volumeAttributesClassName");
            }
        }
        if let Some(overlay) = t.get_mut("overlay").and_then(Value::as_object_mut) {
            overlay.remove("volumeClaims");
            if let Some(pod) = overlay.get_mut("pod").and_then(Value::as_object_mut) {
                pod.remove("metadata");
            }
            remove_if_empty(overlay, "pod");
        }
        remove_if_empty(t, "overlay");
        remove_if_empty(t, "server");
    }
    template
}

/// An instance's spec inputs (see [`RevisionInputs::spec`]) with
/// `"tlsCluster": true` when the instance speaks TLS, unchanged otherwise:
/// a plaintext instance keeps the revision it had before TLS existed, so an
/// operator upgrade restarts none of its Pods. (`tlsCluster` is immutable;
/// the TLS Secret's contents are never an input: a rotation restarts
/// nothing.)
pub fn with_tls(mut spec: Value, tls: bool) -> Value {
    if tls && let Some(o) = spec.as_object_mut() {
        o.insert("tlsCluster".to_owned(), Value::Bool(true));
    }
    spec
}

/// Removes `key` from `object` when it holds an empty object (or null): what
/// is left of it after removing fields that do not count says nothing, and
/// its absence must hash the same.
pub fn remove_if_empty(object: &mut serde_json::Map<String, Value>, key: &str) {
    if object
        .get(key)
        .is_some_and(|v| v.is_null() || v.as_object().is_some_and(serde_json::Map::is_empty))
    {
        object.remove(key);
    }
}

/// A revision read back: its generation, inputs hash and config hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parsed<'a> {
    generation: u32,
    spec: &'a str,
    config: Option<&'a str>,
}

fn parse(revision: &str) -> Option<Parsed<'_>> {
    let mut parts = revision.strip_prefix('g')?.split('-');
    let generation = parts.next()?.parse().ok()?;
    let spec = parts.next()?;
    let config = parts.next();
    parts.next().is_none().then_some(Parsed {
        generation,
        spec,
        config,
    })
}

/// Whether `revision` was stamped by an operator version before the
/// rendering generation (a bare 16-digit hash).
pub fn is_legacy(revision: &str) -> bool {
    revision.len() == 16 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The revision operator versions before [`RENDERING_GENERATION`] stamped: a
/// hash of the rendered Pod spec, its restart request and (unless
/// `config_restarts` is false) its config hash. Only used to judge Pods that
/// still carry such a revision (see the module docs).
pub fn legacy_pod_revision(pod: &Pod, config_restarts: bool) -> String {
    let annotation = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map_or(Value::Null, |v| Value::String(v.clone()))
    };
    let spec = pod
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    content_hash(&json!({
        "spec": spec,
        "restartedAt": annotation(labels::RESTARTED_AT),
        "config": if config_restarts { annotation(labels::CONFIG_HASH) } else { Value::Null },
    }))
}

fn running_revision(running: Option<&Pod>) -> Option<&String> {
    running
        .and_then(|p| p.metadata.annotations.as_ref())
        .and_then(|a| a.get(labels::INSTANCE_REVISION))
}

/// The revision a rendered Pod carries, and which running Pods count as
/// running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRevision {
    /// The revision of the instance's inputs at [`RENDERING_GENERATION`].
    pub revision: String,
    /// Another revision a running Pod may carry and still be current: under
    /// `HotReload`, a Pod created under `Restart` (its revision counted its
    /// config) whose everything-but-config matches. Switching to HotReload,
    /// even together with a config change, restarts nothing; switching back
    /// to Restart restarts once, so every member surely runs the
    /// configuration it shows.
    pub also_current: Option<String>,
    /// Legacy revisions (see [`is_legacy`]) a running Pod may carry and still
    /// be current: those of today's rendering.
    pub legacy: Vec<String>,
    inputs: RevisionInputs,
    hot_reload: bool,
}

impl PodRevision {
    /// Computes the revision of `inputs`, stamps it into the rendered `pod`'s
    /// [`labels::INSTANCE_REVISION`] annotation and returns it. `hot_reload`:
    /// the component's `updateStrategy.config` is `HotReload`; `running` is
    /// the Pod running now, if any.
    pub fn stamp(
        pod: &mut Pod,
        inputs: &RevisionInputs,
        hot_reload: bool,
        running: Option<&Pod>,
    ) -> Self {
        let revision = inputs.revision(RENDERING_GENERATION, !hot_reload);
        let running_rev = running_revision(running);
        let also_current = running_rev
            .and_then(|r| parse(r))
            .filter(|p| hot_reload && p.generation == RENDERING_GENERATION)
            .and_then(|p| p.config)
            .map(|config| format!("{revision}-{config}"));
        let legacy = if running_rev.is_some_and(|r| is_legacy(r)) {
            legacy_revisions(pod, hot_reload, running)
        } else {
            Vec::new()
        };
        let rendered_spec = rendered_spec_hash(pod);
        let annotations = pod.metadata.annotations.get_or_insert_default();
        annotations.insert(labels::INSTANCE_REVISION.to_owned(), revision.clone());
        annotations.insert(labels::RENDERED_SPEC.to_owned(), rendered_spec);
        Self {
            revision,
            also_current,
            legacy,
            inputs: inputs.clone(),
            hot_reload,
        }
    }

    /// Whether `running` runs this revision (only labels, annotations, what
    /// the operator renders beyond the user's inputs or, under HotReload,
    /// the configuration may differ).
    pub fn runs(&self, running: Option<&Pod>) -> bool {
        running_revision(running).is_some_and(|r| {
            *r == self.revision
                || self.also_current.as_ref() == Some(r)
                || (is_legacy(r) && self.legacy.contains(r))
        })
    }

    /// When `running` is outdated only because [`RENDERING_GENERATION`] was
    /// bumped since it was created (its inputs are those of today): the
    /// generation it was rendered under.
    pub fn outdated_by_generation(&self, running: Option<&Pod>) -> Option<u32> {
        if self.runs(running) {
            return None;
        }
        let p = parse(running_revision(running)?)?;
        let config_ok = if self.hot_reload {
            true
        } else {
            p.config == Some(self.inputs.config_hash().as_str())
        };
        (p.generation < RENDERING_GENERATION
            && p.spec == self.inputs.spec_hash(p.generation)
            && config_ok)
            .then_some(p.generation)
    }
}

/// The legacy revisions of the rendered `pod` (before its revision is
/// stamped) that count as current for `running`, as operator versions before
/// the rendering generation computed them.
fn legacy_revisions(pod: &Pod, hot_reload: bool, running: Option<&Pod>) -> Vec<String> {
    let mut out = vec![legacy_pod_revision(pod, !hot_reload)];
    let running_config = running
        .and_then(|p| p.metadata.annotations.as_ref())
        .and_then(|a| a.get(labels::CONFIG_HASH));
    if let (true, Some(config)) = (hot_reload, running_config) {
        let mut as_running = pod.clone();
        as_running
            .metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::CONFIG_HASH.to_owned(), config.clone());
        out.push(legacy_pod_revision(&as_running, true));
    }
    out
}

fn rendered_spec_hash(pod: &Pod) -> String {
    content_hash(&serde_json::to_value(&pod.spec).unwrap_or(Value::Null))
}

/// The Pod to apply to `running`, which runs the revision of `rendered`.
/// When `running` was created from today's rendering of its spec
/// ([`labels::RENDERED_SPEC`]): `rendered` as it is. Otherwise (another
/// operator version rendered it, or it predates the annotation):
/// `rendered`'s labels and annotations with `running`'s spec, so only
/// metadata changes. A Pod spec cannot change in place, and a rendering
/// change that is not the user's (no [`RENDERING_GENERATION`] bump) waits
/// for the Pod's next recreation.
pub fn in_place(rendered: &Pod, running: &Pod) -> Pod {
    let annotation = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::RENDERED_SPEC))
            .cloned()
    };
    let running_rendering = annotation(running);
    if running_rendering.is_some() && running_rendering == annotation(rendered) {
        return rendered.clone();
    }
    let mut out = rendered.clone();
    out.spec.clone_from(&running.spec);
    let annotations = out.metadata.annotations.get_or_insert_default();
    match running_rendering {
        Some(h) => annotations.insert(labels::RENDERED_SPEC.to_owned(), h),
        None => annotations.remove(labels::RENDERED_SPEC),
    };
    out
}

/// What a group reports while outdated Pods wait for a restart, when every
/// one of them is outdated only because [`RENDERING_GENERATION`] was bumped:
/// `generations` holds, for each outdated Pod, the generation it was
/// rendered under when that is the only difference (`None` otherwise).
pub fn generation_notice(generations: &[Option<u32>]) -> Option<String> {
    if generations.is_empty() || generations.iter().any(Option::is_none) {
        return None;
    }
    let oldest = generations.iter().flatten().min()?;
    Some(format!(
        "the operator's rendering generation is {RENDERING_GENERATION} (these Pods were \
         rendered under generation {oldest}): {} Pod(s) are restarted once, one at a time, \
         only because the operator changed how it renders them",
        generations.len()
    ))
}

/// Reason of the group's `Progressing` condition and Event when Pods are
/// about to be restarted only because [`RENDERING_GENERATION`] was bumped.
pub const RENDERING_GENERATION_CHANGED: &str = "RenderingGenerationChanged";

/// Whether the group has not reported `notice` yet: its `Progressing`
/// condition as last written does not carry it. The group then holds its
/// first restart for one reconcile (reason [`RENDERING_GENERATION_CHANGED`])
/// and publishes an Event, so the generation is visible before any Pod goes.
pub fn notice_is_new(notice: Option<&str>, progressing: Option<&Condition>) -> bool {
    notice.is_some_and(|n| progressing.is_none_or(|c| !c.message.contains(n)))
}

/// `progressing` with `notice` added to its message while it is `True`.
pub fn with_notice(mut progressing: ConditionUpdate, notice: Option<&str>) -> ConditionUpdate {
    if let Some(n) = notice
        && progressing.status == conditions::TRUE
        && !progressing.message.contains(n)
    {
        progressing.message = format!("{}; {n}", progressing.message);
    }
    progressing
}

/// Where a group's instances are against its template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revisions {
    /// The template's revision (`updateRevision`).
    pub update: String,
    /// Live instances rendered from it whose Pod runs it.
    pub updated: i32,
    /// Live instances.
    pub live: i32,
    /// Every one of `replicas` instances is updated.
    pub all_updated: bool,
}

impl Revisions {
    /// Counts `currency` (for every live instance: whether its running Pod
    /// runs its current rendering, `None` without a running Pod) against a
    /// group of `replicas` whose template revision is `update`.
    pub fn count<'a>(
        update: String,
        replicas: i32,
        currency: impl IntoIterator<Item = &'a Option<bool>>,
    ) -> Self {
        let (mut live, mut updated) = (0_i32, 0_i32);
        for c in currency {
            live = live.saturating_add(1);
            if *c == Some(true) {
                updated = updated.saturating_add(1);
            }
        }
        Self {
            all_updated: updated == live && live == replicas.max(0),
            update,
            updated,
            live,
        }
    }

    /// Instances still on `current` (`currentReplicas`): all updated ones
    /// when the update is complete or no revision was recorded yet, the
    /// others meanwhile.
    pub fn current_replicas(&self, current: Option<&str>) -> i32 {
        // No revision recorded yet (the group's first instances): there is
        // no older revision to count, only the instances created so far.
        if self.all_updated || current.is_none_or(|c| c == self.update) {
            self.updated
        } else {
            self.live - self.updated
        }
    }

    /// A group's `status` block (the part PD and TiKV groups share): the
    /// version every instance runs (the template's `version` once all are
    /// updated, the previous one meanwhile), the replica counts, the
    /// revisions and the selector; the rest kept from `previous`.
    pub fn group_status(
        &self,
        previous: Option<&tikv_operator_api::GroupStatus>,
        version: &str,
        replicas: i32,
        ready: i32,
        selector: String,
    ) -> tikv_operator_api::GroupStatus {
        let previous = previous.cloned().unwrap_or_default();
        tikv_operator_api::GroupStatus {
            version: if self.all_updated {
                Some(version.to_owned())
            } else {
                previous.version.clone()
            },
            replicas,
            ready_replicas: ready,
            updated_replicas: self.updated,
            current_replicas: self.current_replicas(previous.current_revision.as_deref()),
            update_revision: Some(self.update.clone()),
            current_revision: if self.all_updated {
                Some(self.update.clone())
            } else {
                previous.current_revision.clone()
            },
            selector: Some(selector),
            ..previous
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pod(labels_: &[(&str, &str)], annotations: &[(&str, &str)], image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "p",
                "labels": labels_.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<std::collections::BTreeMap<_, _>>(),
                "annotations": annotations.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<std::collections::BTreeMap<_, _>>(),
            },
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .unwrap()
    }

    fn inputs(version: &str, config: &str) -> RevisionInputs {
        RevisionInputs {
            spec: json!({"template": {"version": version}}),
            config: json!({"config": config}),
            restarted_at: None,
        }
    }

    /// A running Pod stamped with `inputs` (as the instance creates it).
    fn running(inputs: &RevisionInputs, hot_reload: bool, image: &str) -> Pod {
        let mut p = pod(&[], &[(labels::CONFIG_HASH, "c1")], image);
        PodRevision::stamp(&mut p, inputs, hot_reload, None);
        p
    }

    #[test]
    fn the_revision_follows_the_inputs_not_the_rendering() {
        let i = inputs("v1", "a");
        let r = PodRevision::stamp(&mut pod(&[], &[], "pd:v1"), &i, false, None);
        // Another rendering of the same inputs (here: an image the operator
        // renders differently) is the same revision.
        let other = PodRevision::stamp(&mut pod(&[("x", "y")], &[], "other"), &i, false, None);
        assert_eq!(r.revision, other.revision);
        assert!(r.revision.starts_with(&format!("g{RENDERING_GENERATION}-")));
        // A user input, the restart request and the config change it.
        assert_ne!(
            r.revision,
            inputs("v2", "a").revision(RENDERING_GENERATION, true)
        );
        assert_ne!(
            r.revision,
            inputs("v1", "b").revision(RENDERING_GENERATION, true)
        );
        let mut restarted = i.clone();
        restarted.restarted_at = Some("t".into());
        assert_ne!(r.revision, restarted.revision(RENDERING_GENERATION, true));
        // So does the generation.
        assert_ne!(
            i.revision(RENDERING_GENERATION, true),
            i.revision(RENDERING_GENERATION + 1, true)
        );
        // A running Pod rendered differently runs the revision of its inputs.
        let p = running(&i, false, "old-rendering");
        assert!(r.runs(Some(&p)));
        assert!(!r.runs(None));
        let stale = running(&inputs("v0", "a"), false, "pd:v1");
        assert!(!r.runs(Some(&stale)));
    }

    #[test]
    fn tls_counts_only_when_on() {
        let plain = inputs("v1", "a");
        let mut same = plain.clone();
        same.spec = with_tls(same.spec, false);
        assert_eq!(same, plain);
        let mut tls = plain.clone();
        tls.spec = with_tls(tls.spec, true);
        assert_eq!(tls.spec["tlsCluster"], json!(true));
        assert_ne!(
            tls.revision(RENDERING_GENERATION, true),
            plain.revision(RENDERING_GENERATION, true)
        );
    }

    #[test]
    fn a_config_change_restarts_unless_hot_reload() {
        assert_ne!(
            inputs("v1", "a").revision(1, true),
            inputs("v1", "b").revision(1, true)
        );
        assert_eq!(
            inputs("v1", "a").revision(1, false),
            inputs("v1", "b").revision(1, false)
        );
    }

    #[test]
    fn hot_reload_keeps_a_pod_created_under_restart_current() {
        let p = running(&inputs("v1", "a"), false, "pd:v1");
        let want = inputs("v1", "b");
        // Under Restart, the config change makes it outdated.
        assert!(
            !PodRevision::stamp(&mut pod(&[], &[], "x"), &want, false, Some(&p)).runs(Some(&p))
        );
        // Under HotReload it is current; with another version it is not.
        assert!(PodRevision::stamp(&mut pod(&[], &[], "x"), &want, true, Some(&p)).runs(Some(&p)));
        let other = inputs("v2", "b");
        assert!(
            !PodRevision::stamp(&mut pod(&[], &[], "x"), &other, true, Some(&p)).runs(Some(&p))
        );
        // Switching back to Restart restarts a Pod created under HotReload.
        let hot = running(&inputs("v1", "a"), true, "pd:v1");
        assert!(
            !PodRevision::stamp(
                &mut pod(&[], &[], "x"),
                &inputs("v1", "a"),
                false,
                Some(&hot)
            )
            .runs(Some(&hot))
        );
    }

    #[test]
    fn a_pod_with_a_legacy_revision_is_current_when_its_rendering_is_todays() {
        let i = inputs("v1", "a");
        // What an operator version before the rendering generation stamped.
        let mut old = pod(&[], &[(labels::CONFIG_HASH, "c1")], "pd:v1");
        let legacy = legacy_pod_revision(&old, true);
        assert!(is_legacy(&legacy));
        old.metadata
            .annotations
            .get_or_insert_default()
            .insert(labels::INSTANCE_REVISION.to_owned(), legacy);
        // Today's rendering of it is the same: current (and re-stamped).
        let mut same = pod(&[("new", "label")], &[(labels::CONFIG_HASH, "c1")], "pd:v1");
        let r = PodRevision::stamp(&mut same, &i, false, Some(&old));
        assert!(r.runs(Some(&old)));
        assert_eq!(
            same.metadata.annotations.as_ref().unwrap()[labels::INSTANCE_REVISION],
            r.revision
        );
        // Under HotReload with another config hash: still current.
        let mut hot = pod(&[], &[(labels::CONFIG_HASH, "c2")], "pd:v1");
        assert!(PodRevision::stamp(&mut hot, &i, true, Some(&old)).runs(Some(&old)));
        // Another rendering (another image, another config under Restart): outdated.
        let mut other = pod(&[], &[(labels::CONFIG_HASH, "c1")], "pd:v2");
        assert!(!PodRevision::stamp(&mut other, &i, false, Some(&old)).runs(Some(&old)));
        let mut config = pod(&[], &[(labels::CONFIG_HASH, "c2")], "pd:v1");
        assert!(!PodRevision::stamp(&mut config, &i, false, Some(&old)).runs(Some(&old)));
    }

    #[test]
    fn a_pod_outdated_only_by_the_generation_is_told_apart() {
        let i = inputs("v1", "a");
        let mut p = pod(&[], &[], "pd:v1");
        let revision_of = |generation: u32, inputs: &RevisionInputs, restarts: bool| {
            let mut p = pod(&[], &[], "pd:v1");
            p.metadata.annotations.get_or_insert_default().insert(
                labels::INSTANCE_REVISION.to_owned(),
                inputs.revision(generation, restarts),
            );
            p
        };
        let r = PodRevision::stamp(&mut p, &i, false, None);
        // Current: not outdated at all.
        let now = revision_of(RENDERING_GENERATION, &i, true);
        assert_eq!(r.outdated_by_generation(Some(&now)), None);
        // The same inputs at an older generation (simulated: a Pod of
        // generation 0 when this is 1).
        let old = revision_of(RENDERING_GENERATION - 1, &i, true);
        assert!(!r.runs(Some(&old)));
        assert_eq!(
            r.outdated_by_generation(Some(&old)),
            Some(RENDERING_GENERATION - 1)
        );
        // Other inputs at an older generation: outdated for another reason.
        let other = revision_of(RENDERING_GENERATION - 1, &inputs("v0", "a"), true);
        assert_eq!(r.outdated_by_generation(Some(&other)), None);
        assert_eq!(r.outdated_by_generation(None), None);

        assert!(
            generation_notice(&[Some(0), Some(0)])
                .unwrap()
                .contains(&format!("rendering generation is {RENDERING_GENERATION}"))
        );
        assert_eq!(generation_notice(&[Some(0), None]), None);
        assert_eq!(generation_notice(&[]), None);
    }

    #[test]
    fn in_place_patches_keep_the_running_spec_when_the_rendering_changed() {
        let i = inputs("v1", "a");
        let running = running(&i, false, "pd:v1");
        // Same rendering: the rendered Pod as is.
        let mut rendered = pod(&[("a", "2")], &[], "pd:v1");
        PodRevision::stamp(&mut rendered, &i, false, Some(&running));
        assert_eq!(in_place(&rendered, &running), rendered);
        // Another rendering (here: without an environment variable the
        // running Pod has): metadata from the rendering, spec as running.
        let mut old = running.clone();
        old.spec.as_mut().unwrap().containers[0].env =
            Some(vec![k8s_openapi::api::core::v1::EnvVar {
                name: "OLD".into(),
                value: Some("1".into()),
                ..Default::default()
            }]);
        let annotations = old.metadata.annotations.as_mut().unwrap();
        annotations.insert(labels::RENDERED_SPEC.to_owned(), "other".into());
        let patch = in_place(&rendered, &old);
        assert_eq!(patch.spec, old.spec);
        assert_eq!(patch.metadata.labels, rendered.metadata.labels);
        let a = patch.metadata.annotations.unwrap();
        assert_eq!(a[labels::RENDERED_SPEC], "other");
        assert_eq!(
            a[labels::INSTANCE_REVISION],
            running_revision(Some(&rendered)).unwrap().as_str()
        );
        // A Pod without the annotation (older operator): spec as running.
        let mut legacy = old.clone();
        legacy
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(labels::RENDERED_SPEC);
        let patch = in_place(&rendered, &legacy);
        assert_eq!(patch.spec, legacy.spec);
        assert!(
            !patch
                .metadata
                .annotations
                .unwrap()
                .contains_key(labels::RENDERED_SPEC)
        );
    }

    #[test]
    fn revisions_count_updated_and_current_replicas() {
        let r = Revisions::count("new".into(), 3, &[Some(true), Some(false), None]);
        assert_eq!((r.live, r.updated, r.all_updated), (3, 1, false));
        assert_eq!(r.current_replicas(Some("old")), 2);
        // The group's first instances (no revision recorded): none runs an
        // older revision.
        assert_eq!(r.current_replicas(None), 1);
        let done = Revisions::count("new".into(), 3, &[Some(true); 3]);
        assert!(done.all_updated);
        assert_eq!(done.current_replicas(Some("old")), 3);
        // Fewer live instances than replicas: not done.
        assert!(!Revisions::count("new".into(), 3, &[Some(true); 2]).all_updated);
    }
    /// The group status block: the template's version and revision become
    /// current once every instance runs them; meanwhile the previous ones
    /// stay, and fields the planner does not own are kept.
    #[test]
    fn group_status_moves_to_the_template_once_all_are_updated() {
        let previous = tikv_operator_api::GroupStatus {
            version: Some("v1".into()),
            current_revision: Some("old".into()),
            collision_count: Some(2),
            ..Default::default()
        };
        let all = [Some(true), Some(true)];
        let half = [Some(true), Some(false)];
        // (currency, version, current revision, current replicas)
        type Case<'a> = (&'a [Option<bool>], Option<&'a str>, Option<&'a str>, i32);
        let cases: [Case<'_>; 3] = [
            (&all, Some("v2"), Some("new"), 2),
            (&half, Some("v1"), Some("old"), 1),
            (&[], Some("v1"), Some("old"), 0),
        ];
        for (currency, version, current, current_replicas) in cases {
            let r = Revisions::count("new".into(), 2, currency.iter());
            let st = r.group_status(Some(&previous), "v2", 2, 1, "a=b".into());
            assert_eq!(st.version.as_deref(), version, "{currency:?}");
            assert_eq!(st.current_revision.as_deref(), current, "{currency:?}");
            assert_eq!(st.update_revision.as_deref(), Some("new"));
            assert_eq!(st.current_replicas, current_replicas, "{currency:?}");
            assert_eq!((st.replicas, st.ready_replicas), (2, 1));
            assert_eq!(st.selector.as_deref(), Some("a=b"));
            assert_eq!(st.collision_count, Some(2));
        }
        let fresh = Revisions::count("new".into(), 1, [Some(true)].iter());
        assert_eq!(
            fresh
                .group_status(None, "v2", 1, 1, String::new())
                .version
                .as_deref(),
            Some("v2")
        );
    }
}
