//! A throwaway Prometheus server on loopback (Debian's `prometheus`): scrapes the given targets
//! every second into a temp directory, answers queries through its HTTP API, and is stopped and
//! removed when the guard drops.

#![allow(dead_code)] // only the metrics tests start one

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{free_port, terminate, wait_for};

pub struct Prometheus {
    address: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts a server that scrapes `targets` (job name, `HOST:PORT`) at `/metrics`.
    pub fn start(targets: &[(&str, &str)]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("brine-e2e-prometheus-")
            .tempdir()
            .expect("a temp dir");
        let mut config = String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n");
        config.push_str("scrape_configs:\n");
        for (job, target) in targets {
            config.push_str(&format!(
                "  - job_name: {job:?}\n    static_configs:\n      - targets: [{target:?}]\n"
            ));
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let address = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (apt-get install prometheus; scripts/test-deps.sh does)");
        let prometheus = Self {
            address,
            child,
            dir,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            prometheus
                .get("/-/ready", &[])
                .map(|_| ())
                .map_err(|err| format!("{err}; log:\n{}", prometheus.log()))
        });
        prometheus
    }

    fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String, String> {
        let mut request = ureq::get(format!("http://{}{path}", self.address));
        for (key, value) in query {
            request = request.query(*key, *value);
        }
        request
            .call()
            .map_err(|err| err.to_string())?
            .body_mut()
            .read_to_string()
            .map_err(|err| err.to_string())
    }

    /// The instant vector `expression` evaluates to now: each series' labels and value.
    pub fn query(&self, expression: &str) -> Result<Vec<(Value, f64)>, String> {
        let text = self.get("/api/v1/query", &[("query", expression)])?;
        let answer: Value = serde_json::from_str(&text).map_err(|err| format!("{err}: {text}"))?;
        if answer["status"] != "success" {
            return Err(format!("{expression}: {answer}"));
        }
        Ok(answer["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("not a vector: {answer}"))?
            .iter()
            .map(|series| {
                let value = series["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN);
                (series["metric"].clone(), value)
            })
            .collect())
    }

    /// What the scrapes said of each metric family: `{NAME: [{"type", "help", "unit"}]}`.
    pub fn metadata(&self) -> Value {
        wait_for("Prometheus's metadata", Duration::from_secs(30), || {
            let text = self.get("/api/v1/metadata", &[])?;
            let answer: Value =
                serde_json::from_str(&text).map_err(|err| format!("{err}: {text}"))?;
            match &answer["data"] {
                data if data.as_object().is_some_and(|d| !d.is_empty()) => Ok(data.clone()),
                _ => Err(text),
            }
        })
    }

    /// Waits until `expression` evaluates to one series whose value satisfies `wanted`.
    pub fn wait_value(&self, expression: &str, wanted: impl Fn(f64) -> bool) -> f64 {
        wait_for(
            &format!("Prometheus to answer {expression}"),
            Duration::from_secs(30),
            || match self.query(expression)?.as_slice() {
                [(_, value)] if wanted(*value) => Ok(*value),
                other => Err(format!("{other:?}")),
            },
        )
    }

    fn log(&self) -> String {
        super::tail(&self.dir.path().join("prometheus.log"), 20)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}
