//! A daemon's configuration: its TOML file, with environment variables `PREFIX_KEY` overriding
//! the file's top-level keys (`BRINE_MASTER_LISTEN=0.0.0.0:4700` sets `listen`).
//!
//! Some variables with the prefix are not configuration keys but command-line defaults (the
//! data directory, which says where the file is); they are named when the overrides are
//! collected, and left out. Any other variable with the prefix must name a key: a typo is an
//! error that names the variable, not a setting silently ignored.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;

use brine_common::toml_span::ConfigFileError;
use serde::de::DeserializeOwned;

/// The environment variables that override a configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    prefix: String,
    /// By configuration key (lower case): the variable's name and value.
    by_key: BTreeMap<String, (String, String)>,
    /// Variables with the prefix whose value is not UTF-8.
    unreadable: Vec<String>,
}

impl Overrides {
    /// The overrides in this process's environment.
    pub fn from_environment(prefix: &str, not_config: &[&str]) -> Self {
        Self::from_variables(prefix, not_config, std::env::vars_os())
    }

    /// The overrides among `variables`: those named `PREFIX_KEY`, except `PREFIX_X` for each X
    /// in `not_config`.
    pub fn from_variables(
        prefix: &str,
        not_config: &[&str],
        variables: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Self {
        let mut overrides = Self {
            prefix: prefix.to_owned(),
            ..Self::default()
        };
        let start = format!("{prefix}_");
        for (name, value) in variables {
            let Some(name) = name.to_str() else { continue };
            let Some(key) = name.strip_prefix(&start) else {
                continue;
            };
            if key.is_empty() || not_config.contains(&key) {
                continue;
            }
            match value.into_string() {
                Ok(value) => {
                    overrides
                        .by_key
                        .insert(key.to_lowercase(), (name.to_owned(), value));
                }
                Err(_) => overrides.unreadable.push(name.to_owned()),
            }
        }
        overrides
    }

    /// The variable that sets `key`, if one does.
    pub fn variable_for(&self, key: &str) -> Option<&str> {
        let top = key.split('.').next().unwrap_or(key);
        self.by_key.get(top).map(|(name, _)| name.as_str())
    }

    /// The keys set by variables, with the variable that sets each.
    pub fn keys(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_key
            .iter()
            .map(|(key, (name, _))| (key.as_str(), name.as_str()))
    }
}

/// Reads configuration `T` from the file `file` (its text already read) and `overrides`.
/// Every error names where the bad value came from: the file's line and key, or the variable.
pub fn load<T: DeserializeOwned>(
    file: &str,
    text: &str,
    overrides: &Overrides,
) -> Result<T, ConfigFileError> {
    if let Some(err) = ConfigFileError::syntax(file, text) {
        return Err(err);
    }
    if let Some(name) = overrides.unreadable.first() {
        return Err(ConfigFileError {
            file: format!("environment variable {name}"),
            line: None,
            key: None,
            message: "its value is not valid UTF-8".to_owned(),
        });
    }
    let variables: HashMap<String, String> = overrides
        .by_key
        .values()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix(&overrides.prefix)
                .try_parsing(true)
                .source(Some(variables)),
        )
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|err| locate(file, text, overrides, err))
}

/// An invalid value of `key`, found after loading: located at its line in the file, or at the
/// variable that set it.
pub fn invalid(
    file: &str,
    text: &str,
    overrides: &Overrides,
    key: &str,
    message: String,
) -> ConfigFileError {
    attribute(
        ConfigFileError::locate(file, text, Some(key.to_owned()), message),
        overrides,
    )
}

/// Names the file, line and key of an error, or the variable it came from.
fn locate(
    file: &str,
    text: &str,
    overrides: &Overrides,
    err: config::ConfigError,
) -> ConfigFileError {
    let key = match &err {
        config::ConfigError::Type { key, .. } | config::ConfigError::At { key, .. } => key.clone(),
        config::ConfigError::NotFound(key) => Some(key.clone()),
        _ => None,
    };
    attribute(
        ConfigFileError::locate(file, text, key, err.to_string()),
        overrides,
    )
}

/// Blames the variable that set the error's key, if one did, instead of the file.
fn attribute(located: ConfigFileError, overrides: &Overrides) -> ConfigFileError {
    match located
        .key
        .as_deref()
        .and_then(|k| overrides.variable_for(k))
    {
        Some(variable) => ConfigFileError {
            file: format!("environment variable {variable}"),
            line: None,
            ..located
        },
        None => located,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        listen: std::net::SocketAddr,
        #[serde(default)]
        name: String,
        #[serde(default, with = "humantime_serde")]
        timeout: Option<Duration>,
        #[serde(default)]
        count: usize,
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn overrides(pairs: &[(&str, &str)]) -> Overrides {
        Overrides::from_variables("APP", &["DATA_DIR"], vars(pairs))
    }

    const FILE: &str = "listen = \"127.0.0.1:1\"\nname = \"file\"\n";

    #[test]
    fn variables_override_the_file_and_others_are_ignored() {
        let env = overrides(&[
            ("APP_LISTEN", "0.0.0.0:4700"),
            ("APP_TIMEOUT", "90s"),
            ("APP_COUNT", "5"),
            ("APP_DATA_DIR", "/var/lib/app"),
            ("OTHER_NAME", "x"),
            ("PATH", "/bin"),
        ]);
        let sample: Sample = load("app.toml", FILE, &env).unwrap();
        assert_eq!(
            sample,
            Sample {
                listen: "0.0.0.0:4700".parse().unwrap(),
                name: "file".into(),
                timeout: Some(Duration::from_secs(90)),
                count: 5,
            }
        );
        assert_eq!(env.variable_for("listen"), Some("APP_LISTEN"));
        assert_eq!(env.variable_for("data_dir"), None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err =
            load::<Sample>("app.toml", FILE, &overrides(&[("APP_LISTEN", "nowhere")])).unwrap_err();
        assert_eq!(err.file, "environment variable APP_LISTEN", "{err}");
        assert_eq!(err.key.as_deref(), Some("listen"), "{err}");
        assert_eq!(err.line, None);
    }

    #[test]
    fn an_unknown_variable_is_named_not_ignored() {
        let err = load::<Sample>("app.toml", FILE, &overrides(&[("APP_LISTN", "0.0.0.0:1")]))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable APP_LISTN: listn: "),
            "{err}"
        );
    }

    #[test]
    fn errors_in_the_file_still_name_its_line() {
        let err =
            load::<Sample>("app.toml", "name = \"x\"\nlisten = 3\n", &overrides(&[])).unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.line),
            ("app.toml", Some(2)),
            "{err}"
        );
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_by_name() {
        use std::os::unix::ffi::OsStringExt;
        let env = Overrides::from_variables(
            "APP",
            &[],
            vec![(OsString::from("APP_NAME"), OsString::from_vec(vec![0xff]))],
        );
        let err = load::<Sample>("app.toml", FILE, &env).unwrap_err();
        assert!(err.to_string().contains("APP_NAME"), "{err}");
    }
}
