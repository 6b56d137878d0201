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
}
