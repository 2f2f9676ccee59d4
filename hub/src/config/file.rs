//! The TOML file named by `--config`: read, parsed, and flattened into
//! `key = value` entries with the line each came from.
//!
//! This module knows TOML, not the settings: which keys exist and what their
//! values may be is decided by the clap definition of `hub serve` (`load.rs`),
//! so the file cannot accept a setting the flags do not have. The line numbers
//! are kept so that every later complaint about a key can point at it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// A configuration file that cannot be used, with the path and, where there
/// is one, the key and line to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file named by `--config` / `HUB_CONFIG` could not be read.
    #[error("cannot read the configuration file {}: {error}", path.display())]
    Read {
        /// The path as given.
        path: PathBuf,
        /// Why (not found, permission denied, ...); in the message, not a
        /// `source`, so it is not printed twice.
        error: std::io::Error,
    },
    /// The file is not valid TOML (or not a table of keys).
    #[error("configuration file {}: {error}", path.display())]
    Parse {
        /// The path as given.
        path: PathBuf,
        /// toml's message, with line and column.
        error: toml::de::Error,
    },
    /// A key that is not a setting of `hub serve` (typo, or a flag that does not exist).
    #[error(
        "configuration file {}, line {line}: unknown setting `{key}` (keys are the `hub serve` flags in snake_case, see docs/CONFIGURATION.md)",
        path.display()
    )]
    UnknownKey {
        /// The path as given.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// Its line, from 1.
        line: usize,
    },
    /// A value of a TOML type no setting takes (array, table, float, date).
    #[error(
        "configuration file {}, line {line}: `{key}` must be a string, a whole number or a boolean, not {found}",
        path.display()
    )]
    WrongType {
        /// The path as given.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// Its line, from 1.
        line: usize,
        /// The TOML type found.
        found: &'static str,
    },
    /// A value the setting does not accept (a word for a number, a bad address, ...).
    #[error(
        "configuration file {}, line {line}: invalid value {value} for `{key}`: {reason}",
        path.display()
    )]
    BadValue {
        /// The path as given.
        path: PathBuf,
        /// The key as written.
        key: String,
        /// Its line, from 1.
        line: usize,
        /// The value as TOML (secrets masked).
        value: String,
        /// What the setting expects.
        reason: String,
    },
}

/// One `key = value` of the file.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key, as written.
    pub key: String,
    /// Line of the key, from 1, for messages.
    pub line: usize,
    /// The value.
    pub value: toml::Value,
}

/// A parsed configuration file.
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    /// The path as given (for messages and `hub config print`).
    pub path: PathBuf,
    /// Its entries, in key order.
    pub entries: Vec<Entry>,
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|error| FileError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text`, the contents of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|error| FileError::Parse {
                path: path.to_owned(),
                error,
            })?;
        let entries = table
            .into_iter()
            .map(|(key, value)| Entry {
                line: line_of(text, key.span().start),
                key: key.into_inner(),
                value: value.into_inner(),
            })
            .collect();
        Ok(ConfigFile {
            path: path.to_owned(),
            entries,
        })
    }

    /// The entry for `key`, if the file has one.
    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }
}

impl Entry {
    /// The value as the text clap would get from a flag; a TOML type that
    /// no setting takes is an error naming the key.
    pub fn as_arg(&self, path: &Path) -> Result<String, FileError> {
        let found = match &self.value {
            toml::Value::String(s) => return Ok(s.clone()),
            toml::Value::Integer(i) => return Ok(i.to_string()),
            toml::Value::Boolean(b) => return Ok(b.to_string()),
            toml::Value::Float(_) => "a number with a fraction",
            toml::Value::Datetime(_) => "a date",
            toml::Value::Array(_) => "an array",
            toml::Value::Table(_) => "a table",
        };
        Err(FileError::WrongType {
            path: path.to_owned(),
            key: self.key.clone(),
            line: self.line,
            found,
        })
    }
}

/// Line (from 1) of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_keep_their_lines() {
        let text = "# hub\nlisten = \"0.0.0.0:8080\"\n\nretention_days = 30\n";
        let file = ConfigFile::parse(Path::new("hub.toml"), text).expect("valid TOML");
        let days = file.get("retention_days").expect("key present");
        assert_eq!(days.line, 4);
        assert_eq!(
            days.as_arg(Path::new("hub.toml")).ok().as_deref(),
            Some("30")
        );
        assert_eq!(file.get("listen").map(|e| e.line), Some(2));
    }

    #[test]
    fn tables_are_refused_by_key() {
        let text = "[mqtt]\nurl = \"mqtt://x\"\n";
        let file = ConfigFile::parse(Path::new("hub.toml"), text).expect("valid TOML");
        let err = file.entries[0]
            .as_arg(Path::new("hub.toml"))
            .expect_err("a table is no setting");
        let message = err.to_string();
        assert!(
            message.contains("`mqtt`") && message.contains("line 1"),
            "{message}"
        );
    }

    #[test]
    fn invalid_toml_names_the_line() {
        let err = ConfigFile::parse(Path::new("hub.toml"), "listen = \n").expect_err("bad TOML");
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
