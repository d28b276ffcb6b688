//! Why the target Secret's data could not be made from the values read.

/// Why the values read could not become the target Secret's data. Messages name keys, templates, positions and
/// rules — never a value (nor a piece of one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// A template did not compile or did not render.
    #[error("target.template.data[{key}]: {position}: {what}")]
    Template {
        /// The template's key in `target.template.data`.
        key: String,
        /// `line L, column C` (1-based), or `line L` when the engine gave no column.
        position: String,
        /// The kind of error, as the engine names it (e.g. `undefined value`), with the syntax error's detail
        /// (which quotes the template, never a value).
        what: String,
    },
    /// The data does not have the shape the Secret's type requires.
    #[error("Secret type {secret_type}: {why}")]
    Type { secret_type: String, why: String },
    /// The data is larger than a Secret may hold.
    #[error("the data takes {size} bytes, more than a Secret holds ({max} bytes)")]
    TooLarge { size: usize, max: usize },
}

impl RenderError {
    /// A bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            RenderError::Template { .. } => "template",
            RenderError::Type { .. } => "type",
            RenderError::TooLarge { .. } => "too_large",
        }
    }

    /// The condition reason this error becomes.
    pub fn reason(&self) -> &'static str {
        match self {
            RenderError::Template { .. } => "TemplateFailed",
            RenderError::Type { .. } => "InvalidSecretData",
            RenderError::TooLarge { .. } => "TooLarge",
        }
    }
}
