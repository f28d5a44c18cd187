//! A problem with one node of a JSON-LD file, as the reader (`expand`) and the importer
//! (`jsonld`) report it.

use std::fmt;

use serde::Serialize;

/// A problem with one node of a file: which node, which field, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The node's `@id` (or `document`, `@context`).
    pub node: String,
    /// The field, as the file spells it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    pub(crate) fn doc(field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            node: "document".into(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub(crate) fn field(
        node: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            node: node.into(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub(crate) fn node(node: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            node: node.into(),
            field: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "node {}, field {field}: {}", self.node, self.message),
            None => write!(f, "node {}: {}", self.node, self.message),
        }
    }
}
