//! The user's `config` (TOML) of a PD or TiKV template, checked once for both
//! components: it must parse, and it must not set a key the operator owns.
//! The group checks its template with it before any instance sees the
//! template (a broken config stops the rollout; the last good one keeps
//! running), and each instance renders from it.

use tikv_operator_api::rules::OwnedKeys;

/// What is wrong with a `config`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML; the message names the line and column.
    #[error("config is not valid TOML: {0}")]
    Toml(String),
    /// It sets keys the operator owns.
    #[error("config sets keys the operator owns: {}", .0.join(", "))]
    OwnedKeys(Vec<String>),
}

/// Parses `text` (none: empty) and refuses keys of `owned`. A value other
/// than a table where the operator puts its own table (`server = "x"`) counts
/// as setting that table.
pub fn user_table(text: Option<&str>, owned: &OwnedKeys) -> Result<toml::Table, ConfigError> {
    let table: toml::Table = match text {
        None => toml::Table::new(),
        Some(text) => text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml(describe(text, &e)))?,
    };
    let mut set: Vec<String> = owned
        .top
        .iter()
        .filter(|k| table.contains_key(**k))
        .map(|k| (*k).to_owned())
        .collect();
    for (t, keys) in owned.tables {
        match table.get(*t) {
            Some(toml::Value::Table(inner)) => set.extend(
                keys.iter()
                    .filter(|k| inner.contains_key(**k))
                    .map(|k| format!("{t}.{k}")),
            ),
            Some(_) if !keys.is_empty() => set.push((*t).to_owned()),
            _ => {}
        }
    }
    if set.is_empty() {
        Ok(table)
    } else {
        Err(ConfigError::OwnedKeys(set))
    }
}

/// `line L, column C: message` for a parse error of `text`.
fn describe(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tikv_operator_api::rules::{PD_OWNED_KEYS, TIKV_OWNED_KEYS};

    #[test]
    fn parse_errors_name_line_and_column() {
        let err = user_table(
            Some("[log]\nlevel = \"info\"\nbad line\n"),
            &TIKV_OWNED_KEYS,
        )
        .unwrap_err();
        let ConfigError::Toml(m) = err else {
            panic!("{err:?}")
        };
        assert!(m.starts_with("line 3, column "), "{m}");
    }

    #[test]
    fn owned_keys_are_refused_and_the_rest_is_kept() {
        assert_eq!(
            user_table(Some("[server]\naddr = \"x\"\n"), &TIKV_OWNED_KEYS),
            Err(ConfigError::OwnedKeys(vec!["server.addr".into()]))
        );
        assert_eq!(
            user_table(Some("server = 1\n"), &TIKV_OWNED_KEYS),
            Err(ConfigError::OwnedKeys(vec!["server".into()]))
        );
        assert_eq!(
            user_table(Some("name = \"x\"\n"), &PD_OWNED_KEYS),
            Err(ConfigError::OwnedKeys(vec!["name".into()]))
        );
        let t = user_table(Some("[log]\nlevel = \"warn\"\n"), &PD_OWNED_KEYS).unwrap();
        assert!(t.contains_key("log"));
        assert!(user_table(None, &PD_OWNED_KEYS).unwrap().is_empty());
    }
}
