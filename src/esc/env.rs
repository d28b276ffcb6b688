//! ESC environments by name: `org/project/env`, or `org/env` meaning project `default` (ESC's own shorthand).

use super::error::EscError;

/// `org/project/env`, or `org/env` meaning project `default`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvRef {
    pub org: String,
    pub project: String,
    pub env: String,
}

impl EnvRef {
    pub fn parse(s: &str) -> Result<EnvRef, EscError> {
        let parts: Vec<&str> = s.split('/').collect();
        // A part of only dots would be resolved as `.` or `..` by URL parsers, even percent-encoded.
        let ok = |p: &&str| {
            !p.is_empty()
                && p.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
                && !p.bytes().all(|c| c == b'.')
        };
        match parts.as_slice() {
            [o, e] if ok(o) && ok(e) => Ok(EnvRef {
                org: o.to_string(),
                project: "default".into(),
                env: e.to_string(),
            }),
            [o, p, e] if ok(o) && ok(p) && ok(e) => Ok(EnvRef {
                org: o.to_string(),
                project: p.to_string(),
                env: e.to_string(),
            }),
            _ => Err(EscError::Invalid(format!(
                "environment {s:?} is not org/project/env or org/env"
            ))),
        }
    }
}

impl std::fmt::Display for EnvRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.org, self.project, self.env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_refs() {
        let e = EnvRef::parse("ai-cherry/sophia/lambda-labs-production").unwrap();
        assert_eq!(
            (e.org.as_str(), e.project.as_str(), e.env.as_str()),
            ("ai-cherry", "sophia", "lambda-labs-production")
        );
        assert_eq!(EnvRef::parse("acme/prod").unwrap().project, "default");
        for bad in [
            "acme",
            "a/b/c/d",
            "a//b",
            "a b/c",
            "acme/team-a/..",
            "acme/./prod",
            "../x",
            "a/.../b",
        ] {
            assert!(EnvRef::parse(bad).is_err(), "{bad}");
        }
    }
}
