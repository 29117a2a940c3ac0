//! The TOML data files the probe's tests read (`test-lists/apps.toml`, `test-lists/resolvers.toml`,
//! or the files given with `--apps-file` and `--resolvers-file`): one error type and one reader,
//! so that a bad file names itself and its field the same way whichever test reads it. Files are
//! read and checked into a plan before any network I/O.

use serde::de::DeserializeOwned;

/// Why a data file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    /// Not TOML, or a field of the wrong type or unknown (toml's message names the line).
    #[error("{source_name}: {message}")]
    Syntax {
        /// The file.
        source_name: String,
        /// toml's message, with the line and column.
        message: String,
    },
    /// A field whose value cannot be used.
    #[error("{source_name}: {field}: {reason}")]
    Field {
        /// The file.
        source_name: String,
        /// The field, e.g. `telegram.access_points[2]` or `resolver[2].url`.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

/// Reads `text` as TOML into `T`; `source_name` names the file in the error.
pub fn parse_toml<T: DeserializeOwned>(text: &str, source_name: &str) -> Result<T, DataFileError> {
    toml::from_str(text).map_err(|e| DataFileError::Syntax {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[allow(dead_code)]
        name: String,
    }

    #[test]
    fn a_broken_file_is_named_with_its_line() {
        let e = parse_toml::<File>("name = \"a\"\nnope = 1\n", "x.toml").expect_err("unknown");
        let text = e.to_string();
        assert!(text.starts_with("x.toml: "), "{text}");
        assert!(text.contains("line 2"), "{text}");
        assert!(parse_toml::<File>("name = \"a\"\n", "x.toml").is_ok());
    }
}
