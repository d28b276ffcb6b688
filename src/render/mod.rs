//! From the values read to the target Secret's data: `target.template` computes keys from them (`template`),
//! and the result must have the shape the Secret's type requires before anything is written (`typed`).

mod error;
mod template;
mod typed;

pub use error::RenderError;
pub use typed::check as check_type;

use crate::api::{ManagedSecretSpec, MergePolicy};
use crate::secret::{MAX_SECRET_DATA, SecretData};

/// The target Secret's data from the values read (`values`, by key): the values themselves, or with
/// `target.template` the template's keys (and, with `mergePolicy: Merge`, the values too; a template's key wins).
/// Then checked against `target.type` and the size limit.
///
/// Errors: [`RenderError::Template`] (naming the key, line and column), [`RenderError::Type`],
/// [`RenderError::TooLarge`]. None holds a value.
pub fn render(spec: &ManagedSecretSpec, values: SecretData) -> Result<SecretData, RenderError> {
    let data = match &spec.target.template {
        None => values,
        Some(t) => {
            let rendered = template::render_all(&t.data, &values)?;
            match t.merge_policy.unwrap_or_default() {
                MergePolicy::Replace => rendered,
                MergePolicy::Merge => {
                    let mut merged = values;
                    for (k, v) in rendered {
                        merged.insert(k, v);
                    }
                    merged
                }
            }
        }
    };
    let size = data.size();
    if size > MAX_SECRET_DATA {
        return Err(RenderError::TooLarge {
            size,
            max: MAX_SECRET_DATA,
        });
    }
    typed::check(spec.target.type_.as_deref().unwrap_or("Opaque"), &data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretBytes;

    fn spec(target: serde_json::Value) -> ManagedSecretSpec {
        serde_json::from_value(serde_json::json!({
            "source": {"esc": {"environment": "o/p/e", "data": [{"key": "user", "path": "u"}]}},
            "target": target
        }))
        .unwrap()
    }

    fn values(pairs: &[(&str, &str)]) -> SecretData {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretBytes::new(v.as_bytes().to_vec())))
            .collect()
    }

    fn text(d: &SecretData, k: &str) -> String {
        String::from_utf8(d.get(k).unwrap().expose().to_vec()).unwrap()
    }

    #[test]
    fn without_a_template_the_values_are_the_data() {
        let d = render(&spec(serde_json::json!({})), values(&[("user", "u1"), ("pw", "p")])).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["pw", "user"]);
    }

    #[test]
    fn a_template_replaces_its_inputs_unless_merged() {
        let t = serde_json::json!({"template": {"data": {
            "DATABASE_URL": "postgres://{{ user }}:{{ pw | urlencode }}@db:5432/app"
        }}});
        let d = render(&spec(t), values(&[("user", "app"), ("pw", "p@ss/w")])).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["DATABASE_URL"]);
        assert_eq!(text(&d, "DATABASE_URL"), "postgres://app:p%40ss%2Fw@db:5432/app");
        let merged = serde_json::json!({"template": {"mergePolicy": "Merge", "data": {"user": "{{ user | upper }}", "X": "{{ pw }}"}}});
        let d = render(&spec(merged), values(&[("user", "app"), ("pw", "p")])).unwrap();
        assert_eq!(d.keys().collect::<Vec<_>>(), ["X", "pw", "user"]);
        assert_eq!(text(&d, "user"), "APP", "the template's key wins");
    }

    #[test]
    fn too_large_data_is_refused_before_anything_is_written() {
        let big = "x".repeat(MAX_SECRET_DATA);
        let e = render(&spec(serde_json::json!({})), values(&[("k", &big)])).unwrap_err();
        assert_eq!(e.reason(), "TooLarge");
        assert!(!e.to_string().contains("xxxx"));
    }
}
