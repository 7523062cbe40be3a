//! Which master a CLI command calls and with which certificates: the precedence of flags,
//! environment variables, contexts of the client configuration and the local data directory.
//! Pure: the caller reads the files.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::bail;

use super::client_config::ConfigFile;

/// How a value was given on the command line or in the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// A flag, e.g. `--cert`.
    Flag(&'static str),
    /// An environment variable, e.g. `BRINE_CERT`.
    Env(&'static str),
}

impl fmt::Display for Given {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Given::Flag(flag) => write!(f, "flag {flag}"),
            Given::Env(variable) => write!(f, "env {variable}"),
        }
    }
}

/// Where a setting of the connection came from, as `context show` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Given(Given),
    Context(String),
    DataDir(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Given(given) => given.fmt(f),
            Origin::Context(name) => write!(f, "context {name}"),
            Origin::DataDir(dir) => write!(f, "data dir {}", dir.display()),
        }
    }
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

/// What the command line and the environment say about the connection.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub data_dir: PathBuf,
    /// How `data_dir` was given; `None` for the default.
    pub data_dir_given: Option<Given>,
    pub context: Option<(String, Given)>,
    pub master: Option<(String, Given)>,
    pub ca: Option<(PathBuf, Given)>,
    pub cert: Option<(PathBuf, Given)>,
    pub key: Option<(PathBuf, Given)>,
}

/// The source the connection is taken from, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A context, picked by a flag or variable, or by `current_context` in the file.
    Context { name: String, picked_by: String },
    /// The master's data directory on this host.
    DataDir { dir: PathBuf, picked_by: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Context { name, picked_by } => write!(f, "context {name} ({picked_by})"),
            Source::DataDir { dir, picked_by } => {
                write!(f, "the data directory {} ({picked_by})", dir.display())
            }
        }
    }
}

/// The connection, less an address still to be read from the data directory's master.toml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub source: Source,
    /// `None`: the address is in the data directory's master.toml.
    pub address: Option<Setting<String>>,
    pub ca: Setting<PathBuf>,
    pub cert: Setting<PathBuf>,
    pub key: Setting<PathBuf>,
}

/// Picks the source and every setting. The source, most explicit first: `--context`; `--data-dir`
/// (on the command line: the master on this host); `BRINE_CONTEXT`; the file's
/// `current_context`; the data directory. Each of `--master`, `--ca`, `--cert`, `--key` (flag or
/// variable) overrides what the source says.
pub fn resolve(request: &Request, file: Option<&ConfigFile>) -> anyhow::Result<Resolved> {
    let source = pick_source(request, file)?;
    let (address, ca, cert, key) = match &source {
        Source::Context { name, .. } => {
            // `pick_source` only picks a context from a file.
            let Some(file) = file else {
                bail!("no client configuration file for context {name:?}")
            };
            let context = file.context(name)?;
            let from = |path: &Path| Setting {
                value: file.resolve(path),
                origin: Origin::Context(name.clone()),
            };
            (
                Some(Setting {
                    value: context.master.clone(),
                    origin: Origin::Context(name.clone()),
                }),
                from(&context.ca),
                from(&context.cert),
                from(&context.key),
            )
        }
        Source::DataDir { dir, .. } => {
            let data = crate::data_dir::DataDir::new(dir);
            let from = |path: PathBuf| Setting {
                value: path,
                origin: Origin::DataDir(dir.clone()),
            };
            (
                None,
                from(data.ca_cert()),
                from(data.admin_cert()),
                from(data.admin_key()),
            )
        }
    };
    Ok(Resolved {
        source,
        address: given(&request.master).or(address),
        ca: given(&request.ca).unwrap_or(ca),
        cert: given(&request.cert).unwrap_or(cert),
        key: given(&request.key).unwrap_or(key),
    })
}

fn pick_source(request: &Request, file: Option<&ConfigFile>) -> anyhow::Result<Source> {
    let data_dir = |picked_by: String| Source::DataDir {
        dir: request.data_dir.clone(),
        picked_by,
    };
    let context = |name: &str, picked_by: String| -> anyhow::Result<Source> {
        match file {
            Some(file) => {
                file.context(name)?;
                Ok(Source::Context {
                    name: name.to_owned(),
                    picked_by,
                })
            }
            None => bail!(
                "context {name:?} ({picked_by}): there is no client configuration file \
                 (set HOME, XDG_CONFIG_HOME or BRINE_CONFIG)"
            ),
        }
    };
    match (&request.context, request.data_dir_given) {
        (Some((_, Given::Flag(_))), Some(Given::Flag(_))) => {
            bail!("give --context or --data-dir, not both")
        }
        (Some((name, given @ Given::Flag(_))), _) => context(name, given.to_string()),
        (_, Some(given @ Given::Flag(_))) => Ok(data_dir(given.to_string())),
        (Some((name, given)), _) => context(name, given.to_string()),
        (None, _) => match file.and_then(|f| Some((f, f.config.current_context.as_ref()?))) {
            Some((file, name)) => context(
                name,
                format!("current_context in {}", file.path().display()),
            ),
            None => Ok(data_dir(match request.data_dir_given {
                Some(given) => given.to_string(),
                None => "the default".to_owned(),
            })),
        },
    }
}

/// The flag's or variable's value, if one was given.
fn given<T: Clone>(given: &Option<(T, Given)>) -> Option<Setting<T>> {
    given.as_ref().map(|(value, given)| Setting {
        value: value.clone(),
        origin: Origin::Given(*given),
    })
}

/// The error when no address can be found: every way to point the CLI at a master.
pub fn no_master_error(data_dir: &Path, file: Option<&ConfigFile>) -> anyhow::Error {
    let contexts = match file {
        Some(file) if !file.config.contexts.is_empty() => {
            format!(", one of {} in {}", file.known(), file.path().display())
        }
        _ => ": none configured; see `brine-master context import`".to_owned(),
    };
    anyhow::anyhow!(
        "no master to call: no --master, no context, and no master.toml in {}. \
         Point brine-master at a master in one of these ways:\n\
         \x20 --master HOST:PORT --ca CA.pem --cert NAME.pem --key NAME.key\n\
         \x20     (or BRINE_MASTER_ADDRESS, BRINE_CA, BRINE_CERT, BRINE_KEY)\n\
         \x20 --context NAME (or BRINE_CONTEXT){contexts}\n\
         \x20 on the master host: --data-dir DIR (or BRINE_MASTER_DATA_DIR), the master's data \
         directory",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::super::client_config::{ClientConfig, ContextEntry};
    use super::*;

    fn file(current: Option<&str>) -> ConfigFile {
        let mut file = ConfigFile::empty(PathBuf::from("/home/a/.config/brine/config.toml"));
        let entry = |master: &str| ContextEntry {
            master: master.to_owned(),
            ca: "contexts/x/ca.pem".into(),
            cert: "/abs/alice.pem".into(),
            key: "alice.key".into(),
        };
        file.config = ClientConfig {
            current_context: current.map(str::to_owned),
            contexts: [
                ("prod".to_owned(), entry("prod:4700")),
                ("staging".to_owned(), entry("staging:4700")),
            ]
            .into(),
        };
        file
    }

    fn request() -> Request {
        Request {
            data_dir: PathBuf::from("/var/lib/brine-master"),
            ..Request::default()
        }
    }

    fn source_of(request: &Request, file: Option<&ConfigFile>) -> String {
        match resolve(request, file) {
            Ok(resolved) => resolved.source.to_string(),
            Err(err) => format!("error: {err}"),
        }
    }

    #[test]
    fn a_context_is_picked_by_flag_then_command_line_data_dir_then_variable_then_file() {
        let file = file(Some("prod"));
        let mut request = request();
        assert_eq!(
            source_of(&request, None),
            "the data directory /var/lib/brine-master (the default)"
        );
        assert_eq!(
            source_of(&request, Some(&file)),
            "context prod (current_context in /home/a/.config/brine/config.toml)"
        );
        // The environment's data directory (a service's) does not outrank the file.
        request.data_dir_given = Some(Given::Env("BRINE_MASTER_DATA_DIR"));
        assert!(source_of(&request, Some(&file)).starts_with("context prod"));
        request.context = Some(("staging".into(), Given::Env("BRINE_CONTEXT")));
        assert_eq!(
            source_of(&request, Some(&file)),
            "context staging (env BRINE_CONTEXT)"
        );
        // The command line outranks the environment.
        request.data_dir_given = Some(Given::Flag("--data-dir"));
        assert_eq!(
            source_of(&request, Some(&file)),
            "the data directory /var/lib/brine-master (flag --data-dir)"
        );
        request.data_dir_given = None;
        request.context = Some(("staging".into(), Given::Flag("--context")));
        assert_eq!(
            source_of(&request, Some(&file)),
            "context staging (flag --context)"
        );
        request.data_dir_given = Some(Given::Flag("--data-dir"));
        assert_eq!(
            source_of(&request, Some(&file)),
            "error: give --context or --data-dir, not both"
        );
    }

    #[test]
    fn unknown_contexts_are_errors_wherever_they_are_named() {
        let mut request = request();
        request.context = Some(("qa".into(), Given::Flag("--context")));
        let err = source_of(&request, Some(&file(None)));
        assert!(err.ends_with("known contexts: prod, staging"), "{err}");
        assert!(source_of(&request, None).contains("no client configuration file"));
        let err = source_of(&Request::default(), Some(&file(Some("gone"))));
        assert!(err.contains("no context \"gone\""), "{err}");
    }

    #[test]
    fn flags_override_the_context_field_by_field_and_paths_are_the_files() {
        let mut request = request();
        request.master = Some(("elsewhere:1".into(), Given::Flag("--master")));
        request.key = Some(("/k".into(), Given::Env("BRINE_KEY")));
        let resolved = resolve(&request, Some(&file(Some("prod")))).expect("resolves");
        let context = Origin::Context("prod".into());
        assert_eq!(
            resolved.address,
            Some(Setting {
                value: "elsewhere:1".into(),
                origin: Origin::Given(Given::Flag("--master"))
            })
        );
        assert_eq!(
            resolved.ca,
            Setting {
                value: "/home/a/.config/brine/contexts/x/ca.pem".into(),
                origin: context.clone()
            }
        );
        assert_eq!(
            resolved.cert,
            Setting {
                value: "/abs/alice.pem".into(),
                origin: context
            }
        );
        assert_eq!(
            resolved.key,
            Setting {
                value: "/k".into(),
                origin: Origin::Given(Given::Env("BRINE_KEY"))
            }
        );
    }

    #[test]
    fn the_data_directory_gives_the_admin_certificate_and_leaves_the_address_to_master_toml() {
        let resolved = resolve(&request(), None).expect("resolves");
        let dir = Origin::DataDir("/var/lib/brine-master".into());
        assert_eq!(resolved.address, None);
        assert_eq!(
            resolved.cert,
            Setting {
                value: "/var/lib/brine-master/admin.pem".into(),
                origin: dir
            }
        );
    }

    #[test]
    fn the_no_master_error_lists_every_way() {
        let err = no_master_error(Path::new("/d"), Some(&file(None))).to_string();
        for way in [
            "no master.toml in /d",
            "--master HOST:PORT --ca CA.pem --cert NAME.pem --key NAME.key",
            "BRINE_MASTER_ADDRESS, BRINE_CA, BRINE_CERT, BRINE_KEY",
            "--context NAME (or BRINE_CONTEXT), one of prod, staging in",
            "--data-dir DIR (or BRINE_MASTER_DATA_DIR)",
        ] {
            assert!(err.contains(way), "{way:?} missing in {err}");
        }
        let err = no_master_error(Path::new("/d"), None).to_string();
        assert!(
            err.contains("none configured; see `brine-master context import`"),
            "{err}"
        );
    }
}
