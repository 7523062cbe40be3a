//! `brine-master context`: the named masters of the client configuration (list, use, show,
//! import, remove), and the `context.toml` that `cert issue --out` writes for `context import`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use brine_common::names::MinionId;
use brine_daemon::files::replace;
use brine_proto::tls::{ClientIdentity, certs_from_pem};

use super::client::ClientArgs;
use super::client_config::{
    CONTEXT_FILE, ClientConfig, ConfigFile, ContextEntry, create_private_dir,
};
use crate::data_dir::read;

/// Where `context import` keeps a context's certificates, beside the configuration file.
const CONTEXTS_DIR: &str = "contexts";

/// Lists the contexts, marking the current one, with their masters.
pub fn list() -> anyhow::Result<()> {
    let file = ConfigFile::load_from_environment()?;
    let contexts = &file.config.contexts;
    if contexts.is_empty() {
        println!(
            "no contexts in {}; add one with `brine-master context import DIR`",
            file.path().display()
        );
        return Ok(());
    }
    let width = contexts.keys().map(String::len).max().unwrap_or(0).max(4);
    println!("  {:width$}  MASTER", "NAME");
    for (name, context) in contexts {
        let mark = if file.config.current_context.as_ref() == Some(name) {
            '*'
        } else {
            ' '
        };
        println!(
            "{mark} {:width$}  {}",
            super::printable(name),
            super::printable(&context.master)
        );
    }
    Ok(())
}

/// Makes `name` the current context.
pub fn use_context(name: &str) -> anyhow::Result<()> {
    let mut file = ConfigFile::load_from_environment()?;
    file.context(name)?;
    file.config.current_context = Some(name.to_owned());
    file.save()?;
    println!("now using context {name}");
    Ok(())
}

/// Shows the connection in effect and where each of its settings came from.
pub fn show(client: &ClientArgs) -> anyhow::Result<()> {
    let connection = client.connection()?;
    let resolved = &connection.resolved;
    if let Some(file) = &connection.file {
        println!("config file: {}", file.display());
    }
    println!("using:       {}", connection.source());
    let rows = [
        (
            "address",
            connection.address.value.clone(),
            &connection.address.origin,
        ),
        (
            "ca",
            resolved.ca.value.display().to_string(),
            &resolved.ca.origin,
        ),
        (
            "cert",
            resolved.cert.value.display().to_string(),
            &resolved.cert.origin,
        ),
        (
            "key",
            resolved.key.value.display().to_string(),
            &resolved.key.origin,
        ),
    ];
    let width = rows
        .iter()
        .map(|(_, value, _)| value.len())
        .max()
        .unwrap_or(0);
    for (what, value, origin) in rows {
        println!(
            "{what:8} {:width$}  from {origin}",
            super::printable(&value)
        );
    }
    Ok(())
}

/// Imports the context of `dir/context.toml` (as `cert issue --out` writes it) under `name`
/// (default its own): copies its certificates into the configuration's directory (the key
/// 0600) and adds it, as the current context if there is none.
pub fn import(dir: &Path, name: Option<String>) -> anyhow::Result<()> {
    let mut file = ConfigFile::load_from_environment()?;
    let exported_path = dir.join(CONTEXT_FILE);
    if !exported_path.exists() {
        bail!(
            "{} does not exist; `brine-master cert issue --out DIR` writes it",
            exported_path.display()
        );
    }
    let exported = ConfigFile::load(&exported_path)?;
    let mut contexts = exported.config.contexts.iter();
    let (Some((own_name, context)), None) = (contexts.next(), contexts.next()) else {
        bail!(
            "{} must describe exactly one context",
            exported.path().display()
        );
    };
    let name = name.unwrap_or_else(|| own_name.clone());
    // The name becomes a directory: the rules of host ids keep it one safe path component.
    MinionId::new(name.as_str()).with_context(|| format!("context name {name:?}"))?;
    if file.config.contexts.contains_key(&name) {
        bail!(
            "{} already has a context {name:?}: remove it first (`brine-master context remove \
             {name}`) or import under another name (--name NAME)",
            file.path().display()
        );
    }
    let sources = [&context.ca, &context.cert, &context.key].map(|p| exported.resolve(p));
    let [ca, cert, key] = sources.each_ref().map(|path| read(path));
    let (ca, cert, key) = (ca?, cert?, key?);
    // Refuse what would not work before anything is copied.
    certs_from_pem(&sources[0].display().to_string(), ca.as_bytes())?;
    ClientIdentity::from_pem(
        &sources[1].display().to_string(),
        cert.as_bytes(),
        &sources[2].display().to_string(),
        key.as_bytes(),
    )?;
    let names = sources
        .each_ref()
        .map(|path| path.file_name().map(PathBuf::from));
    let [Some(ca_name), Some(cert_name), Some(key_name)] = names else {
        bail!(
            "{}: ca, cert and key must name files",
            exported.path().display()
        );
    };
    if ca_name == cert_name || ca_name == key_name || cert_name == key_name {
        bail!(
            "{}: ca, cert and key must be files of different names",
            exported.path().display()
        );
    }
    let relative = Path::new(CONTEXTS_DIR).join(&name);
    let target = file.resolve(&relative);
    create_private_dir(&target)?;
    replace(&target.join(&ca_name), &ca, 0o644)?;
    replace(&target.join(&cert_name), &cert, 0o644)?;
    replace(&target.join(&key_name), &key, 0o600)?;
    let becomes_current = file.config.current_context.is_none();
    file.config.contexts.insert(
        name.clone(),
        ContextEntry {
            master: context.master.clone(),
            ca: relative.join(ca_name),
            cert: relative.join(cert_name),
            key: relative.join(key_name),
        },
    );
    if becomes_current {
        file.config.current_context = Some(name.clone());
    }
    file.save()?;
    println!(
        "imported context {name} (master {}) into {}",
        super::printable(&context.master),
        file.path().display()
    );
    if becomes_current {
        println!("it is the current context; try:\n  brine-master minions");
    } else {
        println!(
            "use it with --context {name}, or make it the current one:\n  brine-master context use {name}"
        );
    }
    Ok(())
}

/// Removes context `name`, and the certificates `import` copied for it.
pub fn remove(name: &str) -> anyhow::Result<()> {
    let mut file = ConfigFile::load_from_environment()?;
    file.context(name)?;
    file.config.contexts.remove(name);
    let was_current = file.config.current_context.as_deref() == Some(name);
    if was_current {
        file.config.current_context = None;
    }
    file.save()?;
    // Only a name `import` could have made has a directory of ours; no other is a path to touch.
    if MinionId::new(name).is_ok() {
        let copies = file.resolve(&Path::new(CONTEXTS_DIR).join(name));
        match std::fs::remove_dir_all(&copies) {
            Ok(()) => println!("removed {}", copies.display()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("remove {}", copies.display())),
        }
    }
    println!("removed context {name}");
    if was_current {
        println!("no context is current now; pick one with `brine-master context use NAME`");
    }
    Ok(())
}

/// Writes `out/context.toml`: context `name` for calling the master at `master` with the
/// certificate files `ca`, `cert`, `key` in `out`, named relative to it so the directory can be
/// copied anywhere. Returns its path.
pub fn export(out: &Path, name: &str, master: &str, files: [&Path; 3]) -> anyhow::Result<PathBuf> {
    MinionId::new(name).with_context(|| format!("context name {name:?}"))?;
    let [ca, cert, key] = files.map(|path| path.file_name().map(PathBuf::from));
    let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) else {
        bail!("the certificate files must be named");
    };
    let config = ClientConfig {
        current_context: None,
        contexts: [(
            name.to_owned(),
            ContextEntry {
                master: master.to_owned(),
                ca,
                cert,
                key,
            },
        )]
        .into(),
    };
    let path = out.join(CONTEXT_FILE);
    let text = format!(
        "# A context for calling the master from another machine: copy this directory there\n\
         # and run `brine-master context import DIR`.\n\n{}",
        toml::to_string(&config).context("write the context")?
    );
    replace(&path, &text, 0o644)?;
    Ok(path)
}
