//! The client configuration file, `~/.config/brine/config.toml`: named contexts, each a master's
//! address and the certificates to call it with, so that a laptop or a CI runner reaches a
//! master without flags. The same format, with one context, is what `cert issue --out` writes
//! as `context.toml` for `context import`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Points to another client configuration file than the default one.
pub const CONFIG_ENV: &str = "BRINE_CONFIG";

/// The file of a context written by `cert issue --out`.
pub const CONTEXT_FILE: &str = "context.toml";

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when neither `--context` nor `BRINE_CONTEXT` picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, ContextEntry>,
}

/// One master and the certificates to call it with. Relative paths are relative to the
/// directory of the file that holds the context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextEntry {
    /// `HOST:PORT`.
    pub master: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A configuration and the file it is (or will be) kept in.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    path: PathBuf,
    pub config: ClientConfig,
}

/// Where the client configuration is: `BRINE_CONFIG`, else `$XDG_CONFIG_HOME/brine/config.toml`,
/// else `$HOME/.config/brine/config.toml`; `None` when the environment has none of them (a
/// service's bare environment), as if no file existed. `var` looks up an environment variable.
pub fn locate(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(path) = set(CONFIG_ENV) {
        let path = PathBuf::from(path);
        // Relative paths in the file are relative to its directory, which must not move with
        // the working directory of a later command.
        return Some(std::path::absolute(&path).unwrap_or(path));
    }
    // The XDG base directory specification: a relative XDG_CONFIG_HOME is to be ignored.
    let config_home = set("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| set("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(config_home.join("brine").join("config.toml"))
}

/// [`locate`] in this process's environment.
pub fn locate_from_environment() -> Option<PathBuf> {
    locate(|name| std::env::var_os(name))
}

impl ConfigFile {
    /// An empty configuration that would be written to `path`.
    pub fn empty(path: PathBuf) -> Self {
        Self {
            path,
            config: ClientConfig::default(),
        }
    }

    /// Reads `path`; a file that does not exist is an empty configuration.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self::empty(path.to_owned()));
            }
            Err(err) => return Err(err).with_context(|| format!("read {}", path.display())),
        };
        Ok(Self {
            path: path.to_owned(),
            config: parse(path, &text)?,
        })
    }

    /// The file at [`locate_from_environment`], or an error saying how to give one.
    pub fn load_from_environment() -> anyhow::Result<Self> {
        let path = locate_from_environment().with_context(|| {
            format!(
                "no client configuration file: set HOME, XDG_CONFIG_HOME or {CONFIG_ENV} (a file)"
            )
        })?;
        Self::load(&path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory relative paths are relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new(""))
    }

    /// `path` from the file, made absolute against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.dir().join(path)
    }

    /// The context called `name`, or an error that lists the known ones.
    pub fn context(&self, name: &str) -> anyhow::Result<&ContextEntry> {
        self.config.contexts.get(name).with_context(|| {
            format!(
                "no context {name:?} in {}; known contexts: {}",
                self.path.display(),
                self.known()
            )
        })
    }

    /// The names of the contexts, for messages: `prod, staging`, or what to do without any.
    pub fn known(&self) -> String {
        if self.config.contexts.is_empty() {
            "none configured; see `brine-master context import`".to_owned()
        } else {
            self.config
                .contexts
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Writes the file atomically, readable by its owner only (it says where the keys are), in
    /// a directory created private if it is missing. Comments in the file are not kept.
    pub fn save(&self) -> anyhow::Result<()> {
        create_private_dir(self.dir())?;
        brine_daemon::files::replace(&self.path, &self.to_text()?, 0o600)
    }

    /// The file's text: a comment saying what it is, then the TOML.
    fn to_text(&self) -> anyhow::Result<String> {
        let toml = toml::to_string(&self.config).context("write the client configuration")?;
        Ok(format!(
            "# brine-master's contexts: the masters this machine calls and the certificates to\n\
             # call them with. `brine-master context` rewrites this file.\n\n{toml}"
        ))
    }
}

/// Creates `dir` and its missing parents, readable by their owner only.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}

/// Parses a configuration; errors name the file, the line and column, and the key.
pub fn parse(path: &Path, text: &str) -> anyhow::Result<ClientConfig> {
    toml::from_str(text).map_err(|err| anyhow::anyhow!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn the_file_is_found_by_brine_config_then_xdg_then_home() {
        let home = [("HOME", "/home/a")];
        assert_eq!(
            locate(env(&home)),
            Some(PathBuf::from("/home/a/.config/brine/config.toml"))
        );
        let xdg = [("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/cfg")];
        assert_eq!(
            locate(env(&xdg)),
            Some(PathBuf::from("/cfg/brine/config.toml"))
        );
        let relative_xdg = [("HOME", "/home/a"), ("XDG_CONFIG_HOME", "cfg")];
        assert_eq!(
            locate(env(&relative_xdg)),
            Some(PathBuf::from("/home/a/.config/brine/config.toml"))
        );
        let explicit = [("HOME", "/home/a"), (CONFIG_ENV, "/etc/brine.toml")];
        assert_eq!(
            locate(env(&explicit)),
            Some(PathBuf::from("/etc/brine.toml"))
        );
        assert_eq!(locate(env(&[])), None);
        assert_eq!(locate(env(&[("HOME", "")])), None);
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let file = ConfigFile::empty(PathBuf::from("/home/a/.config/brine/config.toml"));
        assert_eq!(
            file.resolve(Path::new("contexts/prod/ca.pem")),
            Path::new("/home/a/.config/brine/contexts/prod/ca.pem")
        );
        assert_eq!(
            file.resolve(Path::new("/etc/ca.pem")),
            Path::new("/etc/ca.pem")
        );
    }

    #[test]
    fn a_file_round_trips_and_unknown_keys_are_refused_with_their_line() {
        let text = "current_context = \"prod\"\n\n[contexts.prod]\nmaster = \"m:4700\"\n\
                    ca = \"ca.pem\"\ncert = \"a.pem\"\nkey = \"a.key\"\n";
        let config = parse(Path::new("c.toml"), text).expect("a valid file");
        assert_eq!(config.current_context.as_deref(), Some("prod"));
        let file = ConfigFile {
            path: PathBuf::from("c.toml"),
            config,
        };
        let written = file.to_text().expect("serializes");
        assert_eq!(
            parse(Path::new("c.toml"), &written).expect("reads back"),
            file.config
        );

        let typo = text.replace("cert =", "certificate =");
        let err = parse(Path::new("/x/c.toml"), &typo).expect_err("unknown key");
        let err = err.to_string();
        assert!(err.starts_with("/x/c.toml: "), "{err}");
        assert!(err.contains("line 6"), "{err}");
        assert!(err.contains("certificate"), "{err}");
    }

    #[test]
    fn unknown_contexts_are_listed() {
        let mut file = ConfigFile::empty(PathBuf::from("/c.toml"));
        let err = file.context("prod").expect_err("no contexts").to_string();
        assert!(err.contains("none configured"), "{err}");
        let entry = ContextEntry {
            master: "m:1".into(),
            ca: "ca".into(),
            cert: "c".into(),
            key: "k".into(),
        };
        file.config.contexts.insert("b".into(), entry.clone());
        file.config.contexts.insert("a".into(), entry);
        let err = file.context("prod").expect_err("unknown").to_string();
        assert!(err.ends_with("known contexts: a, b"), "{err}");
    }
}
