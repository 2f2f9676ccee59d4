//! Layering of the `hub serve` settings: flags > environment > file > defaults.
//!
//! Flags, environment variables and defaults are clap's job, declared once per
//! setting on [`ServeArgs`]. The file is slid in underneath without declaring
//! anything again: every argument of [`serve_command`] is visited through
//! `Command::get_arguments()`; the TOML key of an argument is its clap id (the
//! field name, i.e. the flag in snake_case). For each argument,
//! `ArgMatches::value_source` says whether the user set it by flag or by
//! environment; if neither, and the file has the key, the file's value is
//! used. The chosen values are then handed to clap again as a fresh command
//! line (`--flag=value`), so [`ServeArgs`] is built by clap's own parsers and
//! there is no hand-written list of settings to keep in step.
//!
//! Errors stay exact: before the re-parse, each file value is parsed alone by
//! clap (as its flag), so a wrong value or type is reported with the
//! key, the file and the line (not as if it were a flag). An unknown key is
//! one that matches no argument. After the re-parse, [`Loaded::config`] runs
//! [`ServeConfig::validate`] like any other source and says where the bad
//! value came from.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command, FromArgMatches};

use super::file::{ConfigFile, FileError};
use super::mask::mask_secrets;
use super::{ConfigError, LogFormat, ServeArgs, ServeConfig};

/// Clap id of `--config`: the one argument that cannot come from the file.
const CONFIG_ID: &str = "config";

/// Why the settings of `hub serve` could not be put together.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The configuration file is unreadable, not TOML, or has a bad key or value.
    #[error(transparent)]
    File(#[from] FileError),
    /// A setting has a value that cannot work (from any source).
    #[error("{error} (set {origin})")]
    Invalid {
        /// Which setting and why.
        error: ConfigError,
        /// Where its value came from, e.g. `by the file hub.toml, line 3`.
        origin: String,
    },
    /// Clap refused the merged command line; a bug, since every value was checked.
    #[error("cannot combine the settings: {0}")]
    Merge(#[source] clap::Error),
}

/// Where the value of a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The environment variable named.
    Env(String),
    /// The configuration file, at this line.
    File {
        /// Line of the key, from 1.
        line: usize,
    },
    /// The built-in default.
    Default,
    /// Nowhere: the setting has no default and is off.
    Unset,
}

/// One setting of `hub serve` with its effective value.
#[derive(Debug, Clone)]
pub struct Setting {
    /// Key in the TOML file (clap id).
    pub key: String,
    /// Long flag, without `--`.
    pub flag: String,
    /// Environment variable, if any.
    pub env: Option<String>,
    /// Effective value as text (None when unset), not masked.
    pub value: Option<String>,
    /// Where the value came from.
    pub source: Source,
}

/// The settings of `hub serve` after layering, not yet validated.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged flags.
    pub args: ServeArgs,
    /// Every setting, in `--help` order.
    pub settings: Vec<Setting>,
    /// The configuration file used, if any.
    pub file: Option<PathBuf>,
}

/// The clap command of `hub serve`'s settings, on its own: the single
/// definition that the file keys, `hub config print` and the documentation
/// test all read.
pub fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve"))
}

/// Layers the file named by `--config` / `HUB_CONFIG` under the flags and
/// environment of `matches` (the matches of a command that flattens
/// [`ServeArgs`], such as `hub serve` or `hub config print`).
pub fn load(matches: &ArgMatches) -> Result<Loaded, LoadError> {
    let command = serve_command();
    let file_path = matches
        .try_get_one::<PathBuf>(CONFIG_ID)
        .ok()
        .flatten()
        .cloned();
    let file = file_path.as_deref().map(ConfigFile::read).transpose()?;

    // Every file entry must be a setting with a value its parser accepts,
    // even when a flag overrides it: a broken file is broken.
    let mut from_file = Vec::new();
    if let Some(file) = &file {
        for entry in &file.entries {
            let arg = command
                .get_arguments()
                .find(|arg| arg.get_id() == entry.key.as_str() && entry.key != CONFIG_ID)
                .ok_or_else(|| FileError::UnknownKey {
                    path: file.path.clone(),
                    key: entry.key.clone(),
                    line: entry.line,
                })?;
            let text = entry.as_arg(&file.path)?;
            // The value alone, through clap, so the argument's own parser judges it.
            let alone = match arg.get_long() {
                Some(long) if arg.get_action().takes_values() => vec![format!("--{long}={text}")],
                Some(long) if text == "true" => vec![format!("--{long}")],
                _ => Vec::new(),
            };
            if let Err(err) = command
                .clone()
                .no_binary_name(true)
                .try_get_matches_from(alone)
            {
                return Err(FileError::BadValue {
                    path: file.path.clone(),
                    key: entry.key.clone(),
                    line: entry.line,
                    value: toml::Value::String(mask_secrets(&entry.key, &text)).to_string(),
                    reason: parse_failure(&err),
                }
                .into());
            }
            from_file.push((entry.key.clone(), entry.line, text));
        }
    }

    let mut argv: Vec<OsString> = Vec::new();
    let mut sources = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else {
            continue;
        };
        let (source, values): (Source, Vec<OsString>) = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => (Source::Flag, raw_values(matches, id)),
            Some(ValueSource::EnvVariable) => (
                Source::Env(env_name(arg).unwrap_or_default()),
                raw_values(matches, id),
            ),
            _ => match from_file.iter().find(|(key, _, _)| key == id) {
                Some((_, line, text)) => (Source::File { line: *line }, vec![text.into()]),
                None if arg.get_default_values().is_empty() => (Source::Unset, Vec::new()),
                None => (Source::Default, Vec::new()),
            },
        };
        for value in values {
            if arg.get_action().takes_values() {
                let mut flag = OsString::from(format!("--{long}="));
                flag.push(value);
                argv.push(flag);
            } else if value == "true" {
                argv.push(format!("--{long}").into());
            }
        }
        sources.push((id.to_owned(), long.to_owned(), env_name(arg), source));
    }

    let merged = command
        .clone()
        .no_binary_name(true)
        .try_get_matches_from(argv)
        .map_err(LoadError::Merge)?;
    let args = ServeArgs::from_arg_matches(&merged).map_err(LoadError::Merge)?;
    let settings = sources
        .into_iter()
        .map(|(key, flag, env, source)| Setting {
            value: (source != Source::Unset).then(|| {
                raw_values(&merged, &key)
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            key,
            flag,
            env,
            source,
        })
        .collect();
    Ok(Loaded {
        args,
        settings,
        file: file.map(|file| file.path),
    })
}

impl Loaded {
    /// The log format to use.
    pub fn log_format(&self) -> LogFormat {
        self.args.log_format
    }

    /// The validated server settings; a bad one is named with where it came from.
    pub fn config(&self) -> Result<ServeConfig, LoadError> {
        ServeConfig::try_from(self.args.clone()).map_err(|error| {
            let origin = self.origin_of(error.setting);
            LoadError::Invalid { error, origin }
        })
    }

    /// `by the file F, line N` / `by HUB_X` / `by flag` / `by default` for
    /// the flag(s) named in a [`ConfigError`] (`--a` or `--a/--b`).
    fn origin_of(&self, flags: &str) -> String {
        let origins: Vec<String> = flags
            .split('/')
            .filter_map(|flag| {
                let flag = flag.trim_start_matches('-');
                let setting = self.settings.iter().find(|s| s.flag == flag)?;
                let value = setting
                    .value
                    .as_deref()
                    .map(|v| mask_secrets(&setting.key, v))
                    .unwrap_or_default();
                let by = match &setting.source {
                    Source::Flag => "by flag".to_owned(),
                    Source::Env(name) => format!("by {name}"),
                    Source::File { line } => format!(
                        "by `{}` in {}, line {line}",
                        setting.key,
                        self.file
                            .as_deref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                    Source::Default | Source::Unset => "by default".to_owned(),
                };
                Some(format!("--{flag}={value} {by}"))
            })
            .collect();
        origins.join("; ")
    }

    /// The effective configuration as a TOML file: every setting, secrets
    /// masked, each line ending with where its value came from.
    pub fn to_toml(&self) -> String {
        let lines: Vec<(String, String)> = self
            .settings
            .iter()
            .filter(|s| s.key != CONFIG_ID)
            .map(|s| {
                let assignment = match &s.value {
                    Some(value) => {
                        format!("{} = {}", s.key, toml_value(&mask_secrets(&s.key, value)))
                    }
                    None => format!("# {} (not set)", s.key),
                };
                let source = match &s.source {
                    Source::Flag => format!("flag --{}", s.flag),
                    Source::Env(name) => format!("env {name}"),
                    Source::File { line } => format!("file, line {line}"),
                    Source::Default | Source::Unset => "default".to_owned(),
                };
                (assignment, source)
            })
            .collect();
        let width = lines
            .iter()
            .map(|(a, _)| a.chars().count())
            .max()
            .unwrap_or(0);
        let mut out = String::from("# Effective configuration of `hub serve` (secrets masked).\n");
        match &self.file {
            Some(path) => out.push_str(&format!("# Configuration file: {}\n", path.display())),
            None => out.push_str("# Configuration file: none\n"),
        }
        for (assignment, source) in lines {
            let pad = width - assignment.chars().count();
            out.push_str(&format!("{assignment}{}  # {source}\n", " ".repeat(pad)));
        }
        out
    }
}

/// A setting's text as a TOML value: a whole number when it reads back as the
/// same text, `true`/`false` as booleans, anything else as a string.
fn toml_value(text: &str) -> String {
    if let Ok(n) = text.parse::<i64>()
        && n.to_string() == text
    {
        return text.to_owned();
    }
    if text == "true" || text == "false" {
        return text.to_owned();
    }
    toml::Value::String(text.to_owned()).to_string()
}

fn raw_values(matches: &ArgMatches, id: &str) -> Vec<OsString> {
    matches
        .try_get_raw(id)
        .ok()
        .flatten()
        .map(|values| values.map(OsStr::to_owned).collect())
        .unwrap_or_default()
}

fn env_name(arg: &clap::Arg) -> Option<String> {
    arg.get_env()
        .map(|name| name.to_string_lossy().into_owned())
}

/// The reason a value parser gave, without clap's command-line framing.
fn parse_failure(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    if let Some(source) = std::error::Error::source(err) {
        return source.to_string();
    }
    if let Some(ContextValue::Strings(valid)) = err.get(ContextKind::ValidValue) {
        return format!("expected one of: {}", valid.join(", "));
    }
    err.kind().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_values_keep_their_type() {
        assert_eq!(toml_value("30"), "30");
        assert_eq!(toml_value("007"), "\"007\"");
        assert_eq!(toml_value("127.0.0.1:8080"), "\"127.0.0.1:8080\"");
        assert_eq!(toml_value("false"), "false");
    }

    #[test]
    fn every_setting_has_a_long_flag_and_an_env_variable() {
        for arg in serve_command().get_arguments() {
            let id = arg.get_id().as_str();
            assert!(arg.get_long().is_some(), "{id} has no long flag");
            let env = env_name(arg).unwrap_or_default();
            assert_eq!(
                env,
                format!("HUB_{}", id.to_uppercase()),
                "{id}: the variable is HUB_ + the key in capitals"
            );
        }
    }
}
