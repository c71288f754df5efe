//! The configuration file (`paycore.toml`) and `paycore config check|table`.
//!
//! The file's keys are the long flags of `paycore serve` (`max-body-bytes = 1048576`), found
//! through clap's own command definition, so a flag added to `ServeArgs` has its key at once
//! without code here. Precedence is flag > env > file > default for every setting: the command
//! line is parsed once, each file key whose setting came from neither the command line nor the
//! environment (clap's `ArgMatches::value_source`) is appended as `--key=value`, and the
//! command line is parsed again. The file is read only when named (`--config FILE` or
//! `PAYCORE_CONFIG`): a stray `./paycore.toml` in the working folder never changes a server.

use anyhow::{bail, Context};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The argument (and key) that names the file; it cannot be set in the file itself.
pub const CONFIG_ARG: &str = "config";

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File {
        path: PathBuf,
        line: usize,
    },
    Default,
    /// Not set anywhere, and without a default.
    Unset,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File { path, line } => write!(f, "file {}:{line}", path.display()),
            Source::Default => f.write_str("default"),
            Source::Unset => f.write_str("default (not set)"),
        }
    }
}

/// One key of the file: its values as flag arguments, and its line.
struct Entry {
    key: String,
    line: usize,
    value: FileValue,
}

enum FileValue {
    /// A string, an integer or a boolean given to an option that takes a value; an array gives
    /// one value per element.
    Values(Vec<String>),
    /// A boolean given to a switch (`--wait`-like flag without a value).
    Bool(bool),
}

/// The settings of a command that reads the file (`serve`, `config check`), with the source of
/// each, keyed by clap's argument id.
pub struct Resolved {
    pub matches: ArgMatches,
    pub sources: HashMap<String, Source>,
}

/// Parses `args` for `command` (`Cli::command()`), applying the configuration file to the
/// subcommand at `path` (e.g. `["serve"]`) when it is the one invoked. Returns the final
/// matches and, for that subcommand, each setting's source.
pub fn parse(
    mut command: Command,
    args: Vec<OsString>,
    paths: &[&[&str]],
) -> anyhow::Result<(ArgMatches, Option<Resolved>)> {
    command.build();
    let first = command.clone().try_get_matches_from(&args).unwrap_or_else(|error| error.exit());
    let Some((path, sub_command, sub_matches)) = paths.iter().find_map(|path| {
        let (cmd, matches) = descend(&command, &first, path)?;
        Some((*path, cmd, matches))
    }) else {
        return Ok((first, None));
    };
    let (extra, from_file) = file_args(sub_command, sub_matches)?;
    let matches = if extra.is_empty() {
        first
    } else {
        let mut all = args;
        all.extend(extra);
        command.clone().try_get_matches_from(all).unwrap_or_else(|error| error.exit())
    };
    let (sub_command, sub_matches) = descend(&command, &matches, path).context("the subcommand vanished")?;
    let mut sources = HashMap::new();
    for arg in sub_command.get_arguments() {
        let id = arg.get_id().as_str();
        let source = match sub_matches.value_source(id) {
            Some(ValueSource::CommandLine) => match from_file.get(id) {
                Some((path, line)) => Source::File { path: path.clone(), line: *line },
                None => Source::Flag,
            },
            Some(ValueSource::EnvVariable) => {
                Source::Env(arg.get_env().map(|env| env.to_string_lossy().into_owned()).unwrap_or_default())
            }
            Some(ValueSource::DefaultValue) => Source::Default,
            _ => Source::Unset,
        };
        sources.insert(id.to_owned(), source);
    }
    let resolved = Resolved { matches: sub_matches.clone(), sources };
    Ok((matches, Some(resolved)))
}

/// The file's settings as flag arguments (`--key=value`), skipping those the command line or
/// the environment set; and the file line of each setting they carry.
#[allow(clippy::type_complexity)]
fn file_args(
    sub_command: &Command,
    sub_matches: &ArgMatches,
) -> anyhow::Result<(Vec<OsString>, HashMap<String, (PathBuf, usize)>)> {
    let mut extra: Vec<OsString> = Vec::new();
    let mut from_file: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let Some(file) = sub_matches.get_one::<PathBuf>(CONFIG_ARG) else { return Ok((extra, from_file)) };
    for entry in read(file)? {
        let arg = sub_command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(entry.key.as_str()) && arg.get_id() != CONFIG_ARG);
        let Some(arg) = arg else {
            bail!(
                "{}:{}: unknown key `{}`: the keys are the long flags of `paycore serve` (see `paycore config table`)",
                file.display(),
                entry.line,
                entry.key
            );
        };
        let id = arg.get_id().as_str().to_owned();
        if matches!(sub_matches.value_source(&id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse);
        let values = match (entry.value, switch) {
            (FileValue::Bool(true), true) => {
                extra.push(format!("--{}", entry.key).into());
                from_file.insert(id, (file.clone(), entry.line));
                continue;
            }
            (FileValue::Bool(false), true) => continue,
            (FileValue::Bool(value), false) => vec![value.to_string()],
            (FileValue::Values(values), false) => values,
            (FileValue::Values(_), true) => {
                bail!("{}:{}: `{}` is a switch: give it `true` or `false`", file.display(), entry.line, entry.key)
            }
        };
        for value in values {
            // The flag's own value parser, so that a bad value names the file's line.
            let mut check = clap::Arg::new("value").long("value").value_parser(arg.get_value_parser().clone());
            if let Some(delimiter) = arg.get_value_delimiter() {
                check = check.value_delimiter(delimiter).action(ArgAction::Append);
            }
            let checked = Command::new("paycore.toml")
                .no_binary_name(true)
                .arg(check)
                .try_get_matches_from([format!("--value={value}")]);
            if let Err(error) = checked {
                let reason = error.to_string();
                let reason = reason.trim_start_matches("error: ").lines().next().unwrap_or_default().to_owned();
                bail!("{}:{}: `{}`: {reason}", file.display(), entry.line, entry.key);
            }
            extra.push(format!("--{}={value}", entry.key).into());
        }
        from_file.insert(id, (file.clone(), entry.line));
    }
    Ok((extra, from_file))
}

/// The subcommand at `path` and its matches, when that is the one invoked.
fn descend<'a>(command: &'a Command, matches: &'a ArgMatches, path: &[&str]) -> Option<(&'a Command, &'a ArgMatches)> {
    let mut command = command;
    let mut matches = matches;
    for name in path {
        let (invoked, sub_matches) = matches.subcommand()?;
        if invoked != *name {
            return None;
        }
        command = command.find_subcommand(name)?;
        matches = sub_matches;
    }
    Some((command, matches))
}

/// The file's keys, in order, with their lines.
fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    let document = toml_edit::Document::parse(text.as_str())
        .map_err(|error| anyhow::anyhow!("{}: {}", path.display(), error.to_string().trim_end()))?;
    let line_of = |offset: usize| text.get(..offset).map_or(1, |before| before.matches('\n').count() + 1);
    let mut entries = Vec::new();
    for (key, item) in document.iter() {
        let line = document.as_table().key(key).and_then(toml_edit::Key::span).map_or(1, |span| line_of(span.start));
        let wrong = |what: &str| anyhow::anyhow!("{}:{line}: `{key}`: {what}", path.display());
        let Some(value) = item.as_value() else {
            return Err(wrong("unknown key: the file has no tables; its keys are the long flags of `paycore serve`"));
        };
        let value = match value {
            toml_edit::Value::Boolean(flag) => FileValue::Bool(*flag.value()),
            toml_edit::Value::Array(array) => {
                let mut values = Vec::new();
                for element in array.iter() {
                    values.push(scalar(element).ok_or_else(|| wrong("an array holds strings or integers only"))?);
                }
                FileValue::Values(values)
            }
            other => FileValue::Values(vec![scalar(other).ok_or_else(|| {
                wrong("must be a string, an integer, a boolean or an array of them (no floats, no dates)")
            })?]),
        };
        entries.push(Entry { key: key.to_owned(), line, value });
    }
    Ok(entries)
}

fn scalar(value: &toml_edit::Value) -> Option<String> {
    match value {
        toml_edit::Value::String(text) => Some(text.value().clone()),
        toml_edit::Value::Integer(number) => Some(number.value().to_string()),
        _ => None,
    }
}

/// `paycore config check`: every setting of `serve`, its value and its source, one a line.
pub fn report(command: &Command, resolved: &Resolved) -> String {
    let mut rows = vec![("KEY".to_owned(), "VALUE".to_owned(), "SOURCE".to_owned())];
    for arg in settings(command) {
        let id = arg.get_id().as_str();
        let source = resolved.sources.get(id).cloned().unwrap_or(Source::Unset);
        let value = match resolved.matches.get_raw(id) {
            _ if source == Source::Unset => "-".to_owned(),
            _ if arg.is_hide_env_values_set() => "(hidden)".to_owned(),
            Some(values) => values.map(|v| mask_password(&v.to_string_lossy())).collect::<Vec<_>>().join(","),
            None => "-".to_owned(),
        };
        let value = if value.is_empty() { "\"\"".to_owned() } else { value };
        rows.push((key_of(arg), value, source.to_string()));
    }
    let key_width = rows.iter().map(|row| row.0.len()).max().unwrap_or(0);
    let value_width = rows.iter().map(|row| row.1.len()).max().unwrap_or(0);
    rows.iter().map(|(key, value, source)| format!("{key:key_width$}  {value:value_width$}  {source}\n")).collect()
}

/// A URL's password, as `***`: `config check` prints no secrets.
fn mask_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_owned() };
    let Some((userinfo, host)) = rest.split_once('@') else { return value.to_owned() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => value.to_owned(),
    }
}

/// The arguments of `serve` that are settings (not `--help`/`--version`), in definition order.
fn settings(command: &Command) -> impl Iterator<Item = &clap::Arg> {
    command.get_arguments().filter(|arg| {
        let id = arg.get_id().as_str();
        id != "help" && id != "version" && !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version)
    })
}

fn key_of(arg: &clap::Arg) -> String {
    arg.get_long().unwrap_or(arg.get_id().as_str()).to_owned()
}

/// `paycore config table`: the Markdown table of every setting — key, flag, environment
/// variable, default, meaning — as docs/configuration.md carries it.
pub fn table(command: &Command) -> String {
    let mut out = String::from("| key | flag | env | default | meaning |\n|---|---|---|---|---|\n");
    for arg in settings(command) {
        let key = key_of(arg);
        let file_key = if arg.get_id() == CONFIG_ARG { "—".to_owned() } else { format!("`{key}`") };
        let flag = arg.get_long().map_or_else(String::new, |long| format!("`--{long}`"));
        let env = arg.get_env().map_or_else(String::new, |env| format!("`{}`", env.to_string_lossy()));
        let defaults: Vec<String> =
            arg.get_default_values().iter().map(|value| value.to_string_lossy().into_owned()).collect();
        let default = if defaults.is_empty() { String::new() } else { format!("`{}`", defaults.join(",")) };
        let help = arg.get_long_help().or(arg.get_help()).map(ToString::to_string).unwrap_or_default();
        let mut meaning = help.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "\\|");
        let possible: Vec<String> = arg.get_possible_values().iter().map(|value| value.get_name().to_owned()).collect();
        if !possible.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse) {
            meaning.push_str(&format!(" One of: {}.", possible.join(", ")));
        }
        out.push_str(&format!("| {file_key} | {flag} | {env} | {default} | {meaning} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::mask_password;

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(mask_password("postgres://pay:s3cret@db:5432/pay"), "postgres://pay:***@db:5432/pay");
        assert_eq!(mask_password("postgres://pay@db/pay"), "postgres://pay@db/pay");
        assert_eq!(mask_password("127.0.0.1:8080"), "127.0.0.1:8080");
    }
}
