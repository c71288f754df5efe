//! The configuration file through the real binary: `paycore config check` reports each
//! setting's value and source with flag > env > file > default; unknown keys and bad values
//! name the file's line; docs/configuration.md's table is `paycore config table`; and
//! `--log-format json` writes JSON lines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary with an environment of `env` only (no PAYCORE_* of the caller's).
fn paycore(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paycore"));
    command.env_clear().args(args);
    if let Ok(path) = std::env::var("PATH") {
        command.env("PATH", path);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

/// `config check`'s rows: key → (value, source).
fn check(args: &[&str], env: &[(&str, &str)]) -> HashMap<String, (String, String)> {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    let output = paycore(&all, env);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next().map(|l| l.split_whitespace().collect::<Vec<_>>()), Some(vec!["KEY", "VALUE", "SOURCE"]));
    lines
        .map(|line| {
            let mut words = line.split_whitespace();
            let key = words.next().unwrap().to_owned();
            let value = words.next().unwrap().to_owned();
            (key, (value, words.collect::<Vec<_>>().join(" ")))
        })
        .collect()
}

fn write(dir: &Path, text: &str) -> String {
    let path = dir.join("paycore.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn row(value: &str, source: &str) -> (String, String) {
    (value.to_owned(), source.to_owned())
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file_which_wins_over_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "# paycore.toml\nmax-body-bytes = 111\nmax-batch-lines = 222\nqueue-capacity = 333\n\
         listen = \"127.0.0.1:9999\"\nprefer-partitions = [1, 2]\nlog-format = \"json\"\n",
    );
    let env = [("PAYCORE_MAX_BATCH_LINES", "444"), ("PAYCORE_QUEUE_CAPACITY", "555")];
    let rows = check(&["--config", &file, "--queue-capacity", "666"], &env);
    assert_eq!(rows["max-body-bytes"], row("111", &format!("file {file}:2")));
    assert_eq!(rows["max-batch-lines"], row("444", "env PAYCORE_MAX_BATCH_LINES"));
    assert_eq!(rows["queue-capacity"], row("666", "flag"));
    assert_eq!(rows["listen"], row("127.0.0.1:9999", &format!("file {file}:5")));
    assert_eq!(rows["prefer-partitions"], row("1,2", &format!("file {file}:6")));
    assert_eq!(rows["log-format"], row("json", &format!("file {file}:7")));
    assert_eq!(rows["max-batch-bytes"], row("1073741824", "default"));
    assert_eq!(rows["http-threads"], row("-", "default (not set)"));
    assert_eq!(rows["config"], row(&file, "flag"));

    // The file named by PAYCORE_CONFIG; without any file, the defaults.
    let rows = check(&[], &[("PAYCORE_CONFIG", &file)]);
    assert_eq!(rows["queue-capacity"], row("333", &format!("file {file}:4")));
    assert_eq!(rows["config"], row(&file, "env PAYCORE_CONFIG"));
    let rows = check(&[], &[]);
    assert_eq!(rows["queue-capacity"], row("16384", "default"));
    assert_eq!(rows["listen"], row("127.0.0.1:8080", "default"));
}

#[test]
fn every_flag_of_serve_is_a_row_and_secrets_are_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file =
        write(dir.path(), "api-key = \"sk_test_very_secret_value\"\nstore = \"postgres://pay:hunter2@db/pay\"\n");
    let output = paycore(&["config", "check", "--config", &file], &[]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(!stdout.contains("sk_test_very_secret_value") && !stdout.contains("hunter2"), "{stdout}");
    let rows = check(&["--config", &file], &[]);
    assert_eq!(rows["api-key"], row("(hidden)", &format!("file {file}:1")));
    assert_eq!(rows["store"], row("postgres://pay:***@db/pay", &format!("file {file}:2")));
    let help = String::from_utf8(paycore(&["serve", "--help"], &[]).stdout).unwrap();
    let flags = help.split_whitespace().filter(|w| w.starts_with("--") && *w != "--help").count();
    assert!(flags >= 20, "{help}");
    // Every flag of `serve --help` has a row (help and version are not settings).
    for word in help.split_whitespace().filter(|w| w.starts_with("--") && *w != "--help" && *w != "--version") {
        let key = word.trim_start_matches("--").trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
        assert!(rows.contains_key(key), "no row for {key}");
    }
}

#[test]
fn unknown_keys_and_bad_values_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let refused = |text: &str| {
        let file = write(dir.path(), text);
        let output = paycore(&["config", "check", "--config", &file], &[]);
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        stderr.replace(&file, "paycore.toml")
    };
    let error = refused("listen = \"127.0.0.1:1\"\n\nmax-body-byte = 1\n");
    assert!(error.contains("paycore.toml:3: unknown key `max-body-byte`"), "{error}");
    let error = refused("max-body-bytes = \"lots\"\n");
    assert!(error.contains("paycore.toml:1: `max-body-bytes`: invalid value 'lots'"), "{error}");
    let error = refused("[serve]\nlisten = \"127.0.0.1:1\"\n");
    assert!(error.contains("paycore.toml:1: `serve`"), "{error}");
    let error = refused("max-body-bytes = 1.5\n");
    assert!(error.contains("paycore.toml:1: `max-body-bytes`: must be"), "{error}");
    let error = refused("config = \"other.toml\"\n");
    assert!(error.contains("unknown key `config`"), "{error}");
    let error = refused("listen = \n");
    assert!(error.contains("paycore.toml") && error.to_lowercase().contains("line 1"), "{error}");
    // The flag of `serve` fails the same way as `config check`.
    let file = write(dir.path(), "queue-capacity = -1\n");
    let output = paycore(&["serve", "--config", &file], &[]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!output.status.success() && stderr.contains(":1: `queue-capacity`: invalid value '-1'"), "{stderr}");
}

#[test]
fn check_says_when_serve_would_refuse_the_settings() {
    let output = paycore(&["config", "check"], &[("PAYCORE_ROLE", "api")]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.contains("serve would refuse this configuration: --role api and --role engine are cluster mode"),
        "{stdout}"
    );
}

/// The table in docs/configuration.md is the one clap's definition gives: a flag added
/// without its documentation row fails here.
#[test]
fn the_documented_table_is_the_one_config_table_prints() {
    let output = paycore(&["config", "table"], &[]);
    assert!(output.status.success());
    let table = String::from_utf8(output.stdout).unwrap();
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md")).unwrap();
    let start = doc.find("<!-- table:start -->\n").expect("docs/configuration.md marks its table") + 21;
    let end = doc.find("<!-- table:end -->").unwrap();
    assert_eq!(
        &doc[start..end],
        table,
        "docs/configuration.md's table is out of date: regenerate it with `paycore config table`"
    );
    for key in ["max-body-bytes", "rate-limit-per-second", "log-format", "log-filter", "api-key", "config"] {
        assert!(table.contains(&format!("`--{key}`")), "{key}");
    }
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_paycore"))
        .env_clear()
        .env("PAYCORE_LOG_FORMAT", "json")
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let object: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
        if object["fields"]["message"].as_str().is_some_and(|m| m.contains("first API key generated")) {
            seen = Some(object);
            break;
        }
        assert!(Instant::now() < deadline);
    }
    let _ = child.kill();
    let _ = child.wait();
    let object = seen.expect("the first key's log line");
    assert_eq!(object["level"], "INFO");
    assert!(object["timestamp"].is_string());
}
