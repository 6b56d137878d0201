//! Version ordering for upgrades: a version is never downgraded silently.

/// Parses `v8.5.5` / `8.5.5` (semver, leading `v` optional).
pub fn parse(version: &str) -> Option<semver::Version> {
    semver::Version::parse(version.trim().trim_start_matches('v')).ok()
}

/// If moving instances that run `running` to `desired` lowers any of them,
/// the highest running version (the one that would be downgraded). Versions
/// that do not parse are not compared (the API accepts semver only).
pub fn downgrade_from<'a>(
    desired: &str,
    running: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let want = parse(desired)?;
    running
        .into_iter()
        .filter_map(|r| parse(r).map(|v| (v, r)))
        .filter(|(v, _)| *v > want)
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r)| r.to_owned())
}

/// Why moving instances that run `running` to `desired` is refused, or
/// `None` when it is not a downgrade or the owner's `annotations` carry
/// [`ALLOW_DOWNGRADE`](tikv_operator_api::labels::ALLOW_DOWNGRADE)` = "true"`.
pub fn downgrade_refusal<'a>(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    desired: &str,
    running: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    use tikv_operator_api::labels::ALLOW_DOWNGRADE;
    if annotations
        .and_then(|a| a.get(ALLOW_DOWNGRADE))
        .is_some_and(|v| v == "true")
    {
        return None;
    }
    let from = downgrade_from(desired, running)?;
    Some(format!(
        "version {desired} is lower than {from}, which members run; downgrades are refused \
         (set the annotation {ALLOW_DOWNGRADE}=\"true\" on the group to allow it)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lower_version_is_a_downgrade() {
        assert_eq!(downgrade_from("v8.5.5", ["v8.5.5", "v8.5.4"]), None);
        assert_eq!(downgrade_from("v8.5.5", ["8.1.0"]), None);
        assert_eq!(
            downgrade_from("v8.1.0", ["v8.5.5", "v8.5.4", "v8.1.0"]),
            Some("v8.5.5".to_owned())
        );
        // Pre-releases sort below their release.
        assert_eq!(
            downgrade_from("v8.5.5-rc.1", ["v8.5.5"]),
            Some("v8.5.5".to_owned())
        );
        assert_eq!(downgrade_from("nightly", ["v8.5.5"]), None);
        assert_eq!(downgrade_from("v8.5.5", ["nightly"]), None);
    }

    #[test]
    fn a_downgrade_is_refused_unless_allowed() {
        let msg = downgrade_refusal(None, "v8.1.0", ["v8.5.5"]).unwrap_or_default();
        assert!(
            msg.contains("v8.5.5") && msg.contains("allow-downgrade"),
            "{msg}"
        );
        let allowed: std::collections::BTreeMap<String, String> = [(
            tikv_operator_api::labels::ALLOW_DOWNGRADE.to_owned(),
            "true".to_owned(),
        )]
        .into();
        assert_eq!(
            downgrade_refusal(Some(&allowed), "v8.1.0", ["v8.5.5"]),
            None
        );
        assert_eq!(downgrade_refusal(None, "v8.5.6", ["v8.5.5"]), None);
    }
}
