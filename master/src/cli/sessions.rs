//! `brine-master logs` and `exec`: a role's containers' logs, and a command run in them, on
//! every host that runs the role. Each line is prefixed with its host (and container, when the
//! role has several); what a container wrote is shown escaped, as a host may write anything.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::session::{
    Command, LogsOptions, OutputStream, SessionEnd, SessionKind, SessionsEvent, SessionsRequest,
};
use brine_proto::pb;
use futures::{Stream, StreamExt};
use serde::Serialize;

use super::client::ClientArgs;
use super::exit;

/// How `exec` shows what happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecFormat {
    /// Each host's lines as they come, prefixed with the host, then its exit status.
    Text,
    /// One JSON document at the end: every host's output, exit status and error.
    Json,
}

/// `ROLE` or `ROLE/CONTAINER`.
pub fn parse_role_and_container(text: &str) -> anyhow::Result<(RoleName, Option<ContainerName>)> {
    let (role, container) = match text.split_once('/') {
        Some((role, container)) => (role, Some(container)),
        None => (text, None),
    };
    let role = RoleName::new(role).with_context(|| format!("role {role:?}"))?;
    let container = container
        .map(|c| ContainerName::new(c).with_context(|| format!("container {c:?}")))
        .transpose()?;
    Ok((role, container))
}

/// `--since`: a duration back from `now` (`10m`, `2h`) or a time (`2026-12-03T10:00:00Z`).
pub fn since_unix_ms(text: &str, now: SystemTime) -> anyhow::Result<i64> {
    let at = match humantime::parse_duration(text) {
        Ok(ago) => now.checked_sub(ago).unwrap_or(UNIX_EPOCH),
        Err(_) => humantime::parse_rfc3339_weak(text).with_context(|| {
            format!("--since {text:?}: give a duration (10m, 2h) or a time (2026-12-03T10:00:00Z)")
        })?,
    };
    let ms = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    Ok(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Streams the logs; exits 0 when every host's log was read to its end (or followed until
/// interrupted), 1 when any host failed or was unreachable.
pub async fn logs(
    client: &ClientArgs,
    what: &str,
    target: Option<String>,
    options: LogsOptions,
) -> anyhow::Result<u8> {
    let (role, container) = parse_role_and_container(what)?;
    let request = SessionsRequest {
        role,
        container,
        target: target.unwrap_or_default(),
        kind: SessionKind::Logs(options),
        timeout_ms: 0,
    };
    let stream = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .container_logs(pb::ContainerLogsRequest::from(request))
        .await
        .map_err(super::status_error)
        .context("read the logs")?
        .into_inner()
        .map(|piece| piece.map(SessionsEvent::try_from));
    let mut lines = Lines::default();
    let failed = lines.show(stream).await?;
    Ok(if failed {
        exit::HOSTS_FAILED
    } else {
        exit::SUCCESS
    })
}

/// Runs the command; exits 0 when it exited 0 on every host, 1 when any host exited otherwise,
/// failed, timed out or was unreachable.
pub async fn exec(
    client: &ClientArgs,
    what: &str,
    target: Option<String>,
    command: Vec<String>,
    timeout: Duration,
    format: ExecFormat,
) -> anyhow::Result<u8> {
    let (role, container) = parse_role_and_container(what)?;
    let command = Command::new(command).context("the command (after --)")?;
    let request = SessionsRequest {
        role,
        container,
        target: target.unwrap_or_default(),
        kind: SessionKind::Exec(command),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
    };
    let stream = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .exec(pb::ExecRequest::from(request))
        .await
        .map_err(super::status_error)
        .context("run the command")?
        .into_inner()
        .map(|piece| piece.map(SessionsEvent::try_from));
    let failed = match format {
        ExecFormat::Text => Lines::default().show(stream).await?,
        ExecFormat::Json => {
            let document = collect(stream).await?;
            println!("{}", serde_json::to_string_pretty(&document)?);
            !document.success
        }
    };
    Ok(if failed {
        exit::HOSTS_FAILED
    } else {
        exit::SUCCESS
    })
}

/// Prints sessions' output as prefixed lines, live.
#[derive(Default)]
struct Lines {
    /// Whether lines name their container too (the role has several).
    name_containers: bool,
    /// The widest prefix, so lines align.
    width: usize,
    /// What was written after the last newline, per host, container and stream.
    partial: HashMap<(MinionId, ContainerName, bool), Vec<u8>>,
}

impl Lines {
    /// Shows `stream` to its end; whether any host failed.
    async fn show<E: std::error::Error + Send + Sync + 'static>(
        &mut self,
        stream: impl Stream<Item = Result<Result<SessionsEvent, E>, tonic::Status>>,
    ) -> anyhow::Result<bool> {
        let mut stream = std::pin::pin!(stream);
        let mut failed = false;
        let mut job = None;
        while let Some(piece) = stream.next().await {
            let event = piece
                .map_err(super::status_error)
                .context("the master's stream ended")?
                .context("the master sent an invalid message")?;
            match event {
                SessionsEvent::Started { job_id, targets } => {
                    self.started(&targets);
                    job = Some(job_id);
                }
                SessionsEvent::Output {
                    minion_id,
                    container,
                    stream,
                    data,
                    dropped_bytes,
                } => {
                    if dropped_bytes > 0 {
                        let note = format!(
                            "… {dropped_bytes} bytes left out here (over the rate limit, or not \
                             read as fast as written)"
                        );
                        self.print(&minion_id, Some(&container), true, &note);
                    }
                    let stderr = stream == OutputStream::Stderr;
                    let key = (minion_id.clone(), container.clone(), stderr);
                    let partial = self.partial.entry(key).or_default();
                    partial.extend_from_slice(&data);
                    // Whole lines only; the rest waits for its newline (or the end).
                    let Some(end) = partial.iter().rposition(|b| *b == b'\n') else {
                        continue;
                    };
                    let complete: Vec<u8> = partial.drain(..=end).collect();
                    for line in complete[..end].split(|b| *b == b'\n') {
                        self.print(&minion_id, Some(&container), stderr, &line_text(line));
                    }
                }
                SessionsEvent::Ended {
                    minion_id,
                    container,
                    end,
                } => {
                    if let Some(container) = &container {
                        for stderr in [false, true] {
                            let key = (minion_id.clone(), container.clone(), stderr);
                            if let Some(rest) = self.partial.remove(&key)
                                && !rest.is_empty()
                            {
                                self.print(&minion_id, Some(container), stderr, &line_text(&rest));
                            }
                        }
                    }
                    failed |= self.ended(&minion_id, container.as_ref(), &end);
                }
            }
        }
        if let Some(job) = job {
            eprintln!("recorded as job {job} (brine-master jobs show {job})");
        }
        Ok(failed)
    }

    /// Lines name their container when the call reaches several, and align on the widest
    /// prefix.
    fn started(&mut self, targets: &[(MinionId, Option<ContainerName>)]) {
        let containers: std::collections::BTreeSet<_> =
            targets.iter().filter_map(|(_, c)| c.as_ref()).collect();
        self.name_containers = containers.len() > 1;
        self.width = targets
            .iter()
            .map(|(host, container)| self.prefix(host, container.as_ref()).len())
            .max()
            .unwrap_or(0);
    }

    /// Says how a host's session ended, if there is something to say; whether it failed.
    fn ended(&self, host: &MinionId, container: Option<&ContainerName>, end: &SessionEnd) -> bool {
        if end.truncated {
            self.print(host, container, true, "… output over the cap left out");
        }
        if let Some(error) = &end.error {
            self.print(
                host,
                container,
                true,
                &format!("error: {}", super::printable(error)),
            );
        }
        if let Some(code) = end.exit_code {
            self.print(host, container, false, &format!("exit {code}"));
        }
        end.error.is_some() || end.exit_code.is_some_and(|code| code != 0)
    }

    fn prefix(&self, host: &MinionId, container: Option<&ContainerName>) -> String {
        match container {
            Some(container) if self.name_containers => format!("{host} {container}"),
            _ => host.to_string(),
        }
    }

    fn print(&self, host: &MinionId, container: Option<&ContainerName>, stderr: bool, text: &str) {
        let line = format!(
            "{:<width$} | {text}\n",
            self.prefix(host, container),
            width = self.width
        );
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = if stderr {
            std::io::stderr().lock().write_all(line.as_bytes())
        } else {
            std::io::stdout().lock().write_all(line.as_bytes())
        };
    }
}

/// A line a container wrote, safe for a terminal: control characters but tabs shown escaped,
/// a trailing carriage return dropped.
fn line_text(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let text = text.strip_suffix('\r').unwrap_or(&text);
    text.split('\t')
        .map(|part| super::printable(part).into_owned())
        .collect::<Vec<_>>()
        .join("\t")
}

/// `exec --output json`: what every host's command did.
#[derive(Debug, Serialize)]
struct ExecDocument {
    job_id: String,
    /// Every host exited 0.
    success: bool,
    hosts: Vec<HostExec>,
}

#[derive(Debug, Default, Serialize)]
struct HostExec {
    minion_id: String,
    container: Option<String>,
    exit_code: Option<i64>,
    error: Option<String>,
    /// Output over the cap was left out.
    truncated: bool,
    stdout: String,
    stderr: String,
}

async fn collect<E: std::error::Error + Send + Sync + 'static>(
    stream: impl Stream<Item = Result<Result<SessionsEvent, E>, tonic::Status>>,
) -> anyhow::Result<ExecDocument> {
    let mut stream = std::pin::pin!(stream);
    let mut job_id = String::new();
    let mut hosts: BTreeMap<(String, Option<String>), HostExec> = BTreeMap::new();
    let mut output: HashMap<(String, String, bool), Vec<u8>> = HashMap::new();
    while let Some(piece) = stream.next().await {
        let event = piece
            .map_err(super::status_error)
            .context("the master's stream ended")?
            .context("the master sent an invalid message")?;
        match event {
            SessionsEvent::Started { job_id: id, .. } => job_id = id.to_string(),
            SessionsEvent::Output {
                minion_id,
                container,
                stream,
                data,
                ..
            } => {
                let key = (
                    minion_id.to_string(),
                    container.to_string(),
                    stream == OutputStream::Stderr,
                );
                output.entry(key).or_default().extend_from_slice(&data);
            }
            SessionsEvent::Ended {
                minion_id,
                container,
                end,
            } => {
                let host = minion_id.to_string();
                let name = container.map(|c| c.to_string());
                let mut text = |stderr| {
                    let key = (host.clone(), name.clone().unwrap_or_default(), stderr);
                    String::from_utf8_lossy(&output.remove(&key).unwrap_or_default()).into_owned()
                };
                let exec = HostExec {
                    stdout: text(false),
                    stderr: text(true),
                    minion_id: host.clone(),
                    container: name.clone(),
                    exit_code: end.exit_code,
                    error: end.error,
                    truncated: end.truncated,
                };
                hosts.insert((host, name), exec);
            }
        }
    }
    let hosts: Vec<HostExec> = hosts.into_values().collect();
    let success = !hosts.is_empty()
        && hosts
            .iter()
            .all(|h| h.error.is_none() && h.exit_code == Some(0));
    Ok(ExecDocument {
        job_id,
        success,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_and_container_are_read_from_one_word() {
        let (role, container) = parse_role_and_container("web/app").unwrap();
        assert_eq!((role.as_str(), container.unwrap().as_str()), ("web", "app"));
        let (role, container) = parse_role_and_container("web").unwrap();
        assert_eq!((role.as_str(), container), ("web", None));
        assert!(parse_role_and_container("web/a.b").is_err());
        assert!(parse_role_and_container("").is_err());
    }

    #[test]
    fn since_is_a_duration_back_or_a_time() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(
            since_unix_ms("10m", now).unwrap(),
            1_800_000_000_000 - 600_000
        );
        assert_eq!(
            since_unix_ms("2027-01-15T08:00:00Z", now).unwrap(),
            1_800_000_000_000
        );
        assert!(since_unix_ms("yesterday", now).is_err());
    }

    #[test]
    fn lines_name_their_container_only_when_the_call_reaches_several() {
        let host = |id: &str| MinionId::new(id).unwrap();
        let name = |n: &str| Some(ContainerName::new(n).unwrap());
        let mut lines = Lines::default();
        lines.started(&[(host("web-1"), name("app")), (host("web-12"), name("app"))]);
        assert_eq!(lines.prefix(&host("web-1"), name("app").as_ref()), "web-1");
        assert_eq!(lines.width, "web-12".len());
        lines.started(&[
            (host("web-1"), name("app")),
            (host("web-1"), name("sidecar")),
            (host("web-2"), None),
        ]);
        assert_eq!(
            lines.prefix(&host("web-1"), name("app").as_ref()),
            "web-1 app"
        );
        assert_eq!(lines.prefix(&host("web-2"), None), "web-2");
        assert_eq!(lines.width, "web-1 sidecar".len());
    }

    #[test]
    fn a_containers_line_cannot_act_on_the_terminal() {
        assert_eq!(line_text(b"a\tb\x1b[2J\r"), "a\tb\\u{1b}[2J");
        assert_eq!(line_text(&[0xff, b'x']), "\u{fffd}x");
    }
}
