//! Loading TOML config files with `CALLBOX_...` environment overrides, shared by the server
//! and the device. Unknown keys and wrong types are rejected with the key (and line, or the
//! environment variable) named.

use std::path::Path;

/// A config file problem, naming the file or variable and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The file (with overrides) does not match the schema.
    #[error("invalid config {origin}: {message}")]
    Invalid {
        /// File path, or "environment".
        origin: String,
        /// What is wrong, with the key.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("invalid config: key `{key}`: {message}")]
    Value {
        /// Dotted key, e.g. `session.grace_secs`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// Builds a value error for `key`.
    pub fn value(key: &str, message: impl Into<String>) -> Self {
        ConfigError::Value { key: key.into(), message: message.into() }
    }
}

/// Reads `path` (or an empty document when `None`), applies environment overrides and
/// deserializes. `CALLBOX_SESSION__GRACE_SECS=5` sets `session.grace_secs`; values are parsed
/// as TOML (numbers, booleans, arrays) and fall back to strings.
pub fn load<T: serde::de::DeserializeOwned>(path: Option<&Path>, env: &[(String, String)]) -> Result<T, ConfigError> {
    let (text, origin) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.display().to_string(), source })?,
            p.display().to_string(),
        ),
        None => (String::new(), "(defaults)".to_string()),
    };
    let mut doc: toml::Table =
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { origin: origin.clone(), message: e.to_string() })?;
    let mut applied = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("CALLBOX_") else {
            continue;
        };
        let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
        if keys.iter().any(String::is_empty) {
            continue;
        }
        set_path(&mut doc, &keys, parse_env_value(value));
        applied.push(name.clone());
    }
    if applied.is_empty() {
        // Straight from the text, so the error carries the line and column.
        return toml::from_str(&text).map_err(|e| ConfigError::Invalid { origin, message: e.to_string() });
    }
    let origin = format!("{origin} with environment {}", applied.join(", "));
    T::deserialize(toml::Value::Table(doc)).map_err(|e| ConfigError::Invalid { origin, message: e.to_string() })
}

/// The process environment's `CALLBOX_` variables, except the ones the CLI itself reads.
pub fn callbox_env() -> Vec<(String, String)> {
    std::env::vars().filter(|(k, _)| k.starts_with("CALLBOX_") && !NOT_KEYS.contains(&k.as_str())).collect()
}

/// `CALLBOX_...` variables that are not config keys: the config paths, the control socket,
/// the log target and `callbox token`'s secret.
pub const NOT_KEYS: [&str; 5] =
    ["CALLBOX_CONFIG", "CALLBOX_DEVICE_CONFIG", "CALLBOX_SOCKET", "CALLBOX_LOG", "CALLBOX_APP_SECRET"];

fn parse_env_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(doc: &mut toml::Table, keys: &[String], value: toml::Value) {
    let (last, parents) = keys.split_last().expect("non-empty");
    let mut table = doc;
    for k in parents {
        let entry = table.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        table = entry.as_table_mut().expect("table");
    }
    table.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        listen: String,
        #[serde(default)]
        session: Sess,
    }
    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    struct Sess {
        #[serde(default)]
        grace_secs: u64,
    }

    #[test]
    fn env_overrides_and_unknown_keys() {
        let dir = std::env::temp_dir().join(format!("cbx-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.toml");
        std::fs::write(&f, "listen = \"1.2.3.4:5\"\n[session]\ngrace_secs = 9\n").unwrap();
        let env = vec![("CALLBOX_SESSION__GRACE_SECS".to_string(), "3".to_string())];
        let d: Demo = load(Some(&f), &env).unwrap();
        assert_eq!((d.listen.as_str(), d.session.grace_secs), ("1.2.3.4:5", 3));
        std::fs::write(&f, "listen = \"x\"\n[session]\ngrace_sec = 9\n").unwrap();
        let e = load::<Demo>(Some(&f), &[]).unwrap_err().to_string();
        assert!(e.contains("grace_sec") && e.contains("line 3"), "{e}");
        let env = vec![("CALLBOX_SESSION__GRACE_SECS".to_string(), "soon".to_string())];
        std::fs::write(&f, "listen = \"x\"\n").unwrap();
        let e = load::<Demo>(Some(&f), &env).unwrap_err().to_string();
        assert!(e.contains("CALLBOX_SESSION__GRACE_SECS"), "{e}");
    }
}
