//! The routes kept across restarts: a JSON file replaced atomically after every change, read
//! back at start, so a proxy restarted by systemd (or after a crash) serves what it served.

use std::path::Path;

use brine_common::proxy_control::Route;
use serde::{Deserialize, Serialize};

use crate::ProxyError;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    routes: Vec<Route>,
}

/// The routes in `path`; none if it does not exist yet.
pub fn load(path: &Path) -> Result<Vec<Route>, ProxyError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(ProxyError::State {
                path: path.to_owned(),
                message: format!("cannot read it: {err}"),
            });
        }
    };
    let state: StateFile = serde_json::from_str(&text).map_err(|err| ProxyError::State {
        path: path.to_owned(),
        message: format!("{err} (move it away to start without routes)"),
    })?;
    Ok(state.routes)
}

/// Replaces `path` with `routes`, atomically, creating its directory if needed.
pub fn save(path: &Path, routes: &[Route]) -> Result<(), ProxyError> {
    let failed = |message: String| ProxyError::State {
        path: path.to_owned(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|err| failed(format!("cannot create {}: {err}", dir.display())))?;
    }
    let mut text = serde_json::to_string_pretty(&StateFile {
        routes: routes.to_vec(),
    })
    .map_err(|err| failed(err.to_string()))?;
    text.push('\n');
    brine_daemon::files::replace(path, &text, 0o600).map_err(|err| failed(format!("{err:#}")))
}

#[cfg(test)]
mod tests {
    use brine_common::proxy_control::ProxyMode;

    use super::*;

    #[test]
    fn routes_load_back_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join("routes.json");
        assert_eq!(load(&path).expect("missing"), Vec::new());
        let routes = vec![Route {
            listen: "0.0.0.0:80".parse().expect("address"),
            backend: "172.17.0.5:8000".parse().expect("address"),
            mode: ProxyMode::Http,
            owner: "prod/web".into(),
        }];
        save(&path, &routes).expect("saves");
        assert_eq!(load(&path).expect("loads"), routes);
        std::fs::write(&path, "{").expect("write");
        let err = load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("routes.json"), "{err}");
    }
}
