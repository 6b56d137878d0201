//! Overlays: partial objects the user merges into what the operator renders.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// `base` with the partial object `overlay` merged in (see [`merge_overlay`]);
/// the error says why the result is not a valid object.
pub fn overlaid<T: Serialize + DeserializeOwned>(base: &T, overlay: &Value) -> Result<T, String> {
    let mut v = serde_json::to_value(base).map_err(|e| e.to_string())?;
    merge_overlay(&mut v, overlay);
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// Merges `overlay` into `base`: objects merge key by key, `null` removes a
/// key, lists whose items all have a `name` merge item by item (new names are
/// appended), other lists and scalars are replaced.
pub fn merge_overlay(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, ov) in o {
                if ov.is_null() {
                    b.remove(k);
                } else if let Some(bv) = b.get_mut(k) {
                    merge_overlay(bv, ov);
                } else {
                    b.insert(k.clone(), ov.clone());
                }
            }
        }
        (Value::Array(b), Value::Array(o)) if all_named(b) && all_named(o) => {
            for item in o {
                let name = item.get("name");
                match b.iter_mut().find(|x| x.get("name") == name) {
                    Some(existing) => merge_overlay(existing, item),
                    None => b.push(item.clone()),
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn all_named(items: &[Value]) -> bool {
    items
        .iter()
        .all(|i| i.get("name").is_some_and(Value::is_string))
}
