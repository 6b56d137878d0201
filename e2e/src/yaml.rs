//! Multi-document YAML.

use anyhow::Result;
use serde::Deserialize;

/// Parses every non-empty document of a multi-document YAML text.
pub fn documents(text: &str) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_json::Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_and_skips_empty_ones() -> Result<()> {
        let docs = documents("a: 1\n---\n---\nb: [x]\n")?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1]["b"][0], "x");
        Ok(())
    }
}
