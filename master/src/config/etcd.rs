//! The `[etcd]` table of master.toml: keep the fleet in an etcd cluster that several masters
//! share, instead of the redb file in the data directory.

use std::path::{Path, PathBuf};

use brine_daemon::config::Overrides;
use serde::Deserialize;

use super::ConfigError;
use crate::store::{DEFAULT_ETCD_QUOTA_BYTES, EtcdSettings, EtcdTls};

/// Every key of the fleet starts with this unless the table says otherwise.
pub const DEFAULT_PREFIX: &str = "/brine/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    endpoints: Vec<String>,
    #[serde(default = "default_prefix")]
    prefix: String,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_quota_bytes")]
    quota_bytes: u64,
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.to_owned()
}

fn default_quota_bytes() -> u64 {
    DEFAULT_ETCD_QUOTA_BYTES
}

/// Where a file came from, to name it in errors.
pub(super) struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
    pub overrides: &'a Overrides,
}

impl Source<'_> {
    pub(super) fn invalid(&self, key: &str, message: String) -> ConfigError {
        brine_daemon::config::invalid(self.file, self.text, self.overrides, key, message)
    }
}

/// Checks the table and makes its file names absolute (relative ones are in `data_dir`).
pub(super) fn settings(
    raw: RawEtcd,
    data_dir: &Path,
    source: &Source<'_>,
) -> Result<EtcdSettings, ConfigError> {
    if raw.endpoints.is_empty() {
        return Err(source.invalid(
            "etcd.endpoints",
            "names no member; list the client URLs of the etcd cluster, e.g. \
             [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]"
                .into(),
        ));
    }
    let mut tls_endpoints = 0;
    for endpoint in &raw.endpoints {
        match endpoint_uses_tls(endpoint) {
            Some(true) => tls_endpoints += 1,
            Some(false) => {}
            None => {
                return Err(source.invalid(
                    "etcd.endpoints",
                    format!("{endpoint:?} is not a URL http://HOST:PORT or https://HOST:PORT"),
                ));
            }
        }
    }
    if !(raw.prefix.starts_with('/') && raw.prefix.len() > 1) {
        return Err(source.invalid(
            "etcd.prefix",
            format!(
                "{:?} must start with '/' and name something, e.g. \"/brine/\"",
                raw.prefix
            ),
        ));
    }
    let tls = match (raw.ca_file, raw.cert_file, raw.key_file) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => Some(EtcdTls {
            ca_file: data_dir.join(ca),
            cert_file: data_dir.join(cert),
            key_file: data_dir.join(key),
        }),
        _ => {
            return Err(source.invalid(
                "etcd.ca_file",
                "ca_file, cert_file and key_file go together: the CA that signed etcd's \
                 certificates, and the master's client certificate and key"
                    .into(),
            ));
        }
    };
    match (tls.is_some(), tls_endpoints) {
        (true, n) if n < raw.endpoints.len() => {
            return Err(source.invalid(
                "etcd.endpoints",
                "with ca_file, cert_file and key_file every endpoint must be https://".into(),
            ));
        }
        (false, n) if n > 0 => {
            return Err(source.invalid(
                "etcd.endpoints",
                "an https:// endpoint needs ca_file, cert_file and key_file in [etcd]".into(),
            ));
        }
        _ => {}
    }
    Ok(EtcdSettings {
        endpoints: raw.endpoints,
        prefix: raw.prefix,
        tls,
        quota_bytes: raw.quota_bytes,
    })
}

/// Whether `endpoint` is a URL `https://HOST[:PORT]` (true) or `http://HOST[:PORT]` (false);
/// `None` if it is neither.
pub fn endpoint_uses_tls(endpoint: &str) -> Option<bool> {
    let uri: http::Uri = endpoint.parse().ok()?;
    uri.host()?;
    match uri.scheme_str()? {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// The `[etcd]` table as master.toml holds it (file names as given).
pub fn table(settings: &EtcdSettings) -> String {
    let quoted = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let endpoints = settings
        .endpoints
        .iter()
        .map(|e| quoted(e))
        .collect::<Vec<_>>()
        .join(", ");
    let mut table = format!(
        "[etcd]\nendpoints = [{endpoints}]\nprefix = {}\n",
        quoted(&settings.prefix)
    );
    if let Some(tls) = &settings.tls {
        for (key, path) in [
            ("ca_file", &tls.ca_file),
            ("cert_file", &tls.cert_file),
            ("key_file", &tls.key_file),
        ] {
            table.push_str(&format!(
                "{key} = {}\n",
                quoted(&path.display().to_string())
            ));
        }
    }
    if settings.quota_bytes != DEFAULT_ETCD_QUOTA_BYTES {
        table.push_str(&format!("quota_bytes = {}\n", settings.quota_bytes));
    }
    table
}

/// The `[etcd]` table in effect, for `brine-master config`.
pub(super) fn described(settings: &EtcdSettings) -> toml::Value {
    let text = |value: &str| toml::Value::String(value.to_owned());
    let mut table = toml::Table::new();
    table.insert(
        "endpoints".into(),
        toml::Value::Array(settings.endpoints.iter().map(|e| text(e)).collect()),
    );
    table.insert("prefix".into(), text(&settings.prefix));
    if let Some(tls) = &settings.tls {
        table.insert("ca_file".into(), text(&tls.ca_file.display().to_string()));
        table.insert(
            "cert_file".into(),
            text(&tls.cert_file.display().to_string()),
        );
        table.insert("key_file".into(), text(&tls.key_file.display().to_string()));
    }
    table.insert(
        "quota_bytes".into(),
        toml::Value::Integer(i64::try_from(settings.quota_bytes).unwrap_or(i64::MAX)),
    );
    toml::Value::Table(table)
}

/// The commented `[etcd]` table of a master that keeps its store in its data directory.
pub const COMMENTED_TABLE: &str = "\
# Keep the fleet in an etcd cluster instead of state.redb in this directory, so that several
# masters can share it (`brine-master init --etcd URL,...` writes this table). Every key is
# under `prefix`. For https:// endpoints, ca_file is the CA that signed etcd's certificates and
# cert_file/key_file the master's client certificate (relative to this directory).
# [etcd]
# endpoints = [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]
# prefix = \"/brine/\"
# ca_file = \"etcd-ca.crt\"
# cert_file = \"etcd-client.crt\"
# key_file = \"etcd-client.key\"
# How much etcd's database may hold (its --quota-backend-bytes); no job starts near the end.
# quota_bytes = 2147483648
";
