//! `brine-master secret`: values the master keeps sealed and sends only to the hosts whose
//! containers use them. Nothing here ever prints a value.

use std::io::{IsTerminal, Read};
use std::path::Path;

use anyhow::{Context, bail};
use brine_proto::pb;
use serde::Serialize;

use super::client::ClientArgs;
use super::minions::ListFormat;

/// One secret in `secret list --output json`.
#[derive(Debug, Serialize)]
struct SecretJson {
    name: String,
    fingerprint: String,
    updated_at_unix_ms: i64,
    updated_by: String,
    used_by: Vec<String>,
}

impl TryFrom<pb::Secret> for SecretJson {
    type Error = anyhow::Error;

    fn try_from(secret: pb::Secret) -> anyhow::Result<Self> {
        Ok(Self {
            updated_at_unix_ms: brine_proto::time::unix_ms_or_zero(
                "updated_at",
                secret.updated_at,
            )?,
            name: secret.name,
            fingerprint: secret.fingerprint,
            updated_by: secret.updated_by,
            used_by: secret.used_by,
        })
    }
}

async fn fleet(
    client: &ClientArgs,
) -> anyhow::Result<pb::fleet_service_client::FleetServiceClient<tonic::transport::Channel>> {
    Ok(pb::fleet_service_client::FleetServiceClient::new(
        client.connect().await?,
    ))
}

/// The value to set: from `file`, else typed at a terminal (not shown), else read from
/// standard input. One trailing newline is dropped, as `echo` and editors add one.
fn read_value(name: &str, file: Option<&Path>) -> anyhow::Result<String> {
    let mut value = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("read the value of secret {name} from {}", path.display()))?,
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("value of secret {name} (not shown): "))
                .context("read the value from the terminal")?
        }
        None => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .context("read the value from standard input (UTF-8 text)")?;
            value
        }
    };
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        bail!("the value of secret {name} is empty; nothing was set");
    }
    Ok(value)
}

/// A fingerprint short enough to compare by eye.
fn short(fingerprint: &str) -> &str {
    &fingerprint[..fingerprint.len().min(12)]
}

/// Sets secret `name`, and says what it changes.
pub async fn set(client: &ClientArgs, name: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let value = read_value(name, file)?;
    let response = fleet(client)
        .await?
        .set_secret(pb::SetSecretRequest {
            name: name.to_owned(),
            value,
        })
        .await
        .map_err(super::status_error)
        .with_context(|| format!("set secret {name}"))?
        .into_inner();
    let secret = response.secret.unwrap_or_default();
    let fingerprint = short(&secret.fingerprint);
    let users = if secret.used_by.is_empty() {
        "no container of the roles file uses it yet".to_owned()
    } else {
        format!("used by {}", secret.used_by.join(", "))
    };
    if response.created {
        println!("secret {name} created (fingerprint {fingerprint}); {users}");
    } else if response.changed {
        println!(
            "secret {name} changed (fingerprint {fingerprint}); {users}: the next highstate \
             replaces those containers"
        );
    } else {
        println!("secret {name} unchanged: it held this value already (fingerprint {fingerprint})");
    }
    Ok(())
}

/// Lists the secrets, without their values.
pub async fn list(client: &ClientArgs, format: ListFormat) -> anyhow::Result<()> {
    let secrets = fleet(client)
        .await?
        .list_secrets(pb::ListSecretsRequest {})
        .await
        .map_err(super::status_error)
        .context("list the secrets")?
        .into_inner()
        .secrets
        .into_iter()
        .map(SecretJson::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    match format {
        ListFormat::Json => println!("{}", serde_json::to_string_pretty(&secrets)?),
        ListFormat::Table if secrets.is_empty() => {
            println!("no secrets yet: brine-master secret set NAME");
        }
        ListFormat::Table => {
            println!(
                "{:<24} {:<12} {:<20} {:<16} USED BY",
                "NAME", "FINGERPRINT", "UPDATED", "BY"
            );
            for s in &secrets {
                println!(
                    "{:<24} {:<12} {:<20} {:<16} {}",
                    s.name,
                    short(&s.fingerprint),
                    super::time_of_ms(s.updated_at_unix_ms),
                    s.updated_by,
                    if s.used_by.is_empty() {
                        "-".to_owned()
                    } else {
                        s.used_by.join(", ")
                    }
                );
            }
        }
    }
    Ok(())
}

/// Deletes secret `name`; refused while the roles file uses it, unless `force`.
pub async fn delete(client: &ClientArgs, name: &str, force: bool) -> anyhow::Result<()> {
    fleet(client)
        .await?
        .delete_secret(pb::DeleteSecretRequest {
            name: name.to_owned(),
            force,
        })
        .await
        .map_err(super::status_error)
        .with_context(|| format!("delete secret {name}"))?;
    println!("secret {name} deleted");
    Ok(())
}
