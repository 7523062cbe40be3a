//! Sessions (`logs` and `exec`): the caller's requests, the master's `StartSession` to a
//! minion, the minion's answers, and what the caller is streamed. Separate because they are
//! the messages of one path, from the caller through the master to a host's container and back.

use brine_common::limits::{MAX_ERROR_TEXT, MAX_OUTPUT_CHUNK, truncate};
use brine_common::names::{ContainerName, MinionId, RoleName};
use brine_common::outcome::JobId;
use brine_common::session::{
    Command, DEFAULT_EXEC_TIMEOUT_MS, DEFAULT_TAIL_LINES, LogsOptions, MAX_EXEC_TIMEOUT_MS,
    MAX_TAIL_LINES, OutputStream, SessionEnd, SessionEvent, SessionId, SessionKind, SessionLimits,
    SessionMessage, SessionRequest, SessionsEvent, SessionsRequest,
};

use super::{InvalidField, field, optional_string, required};
use crate::{pb, time};

fn container_or_all(name: String) -> Result<Option<ContainerName>, InvalidField> {
    optional_string(name)
        .map(|name| field("container", ContainerName::new(name)))
        .transpose()
}

fn tail(tail: Option<u32>) -> Result<u32, InvalidField> {
    match tail {
        None => Ok(DEFAULT_TAIL_LINES),
        Some(lines) if lines > MAX_TAIL_LINES => Err(InvalidField::new(
            "tail",
            format!("{lines} lines; at most {MAX_TAIL_LINES} are accepted"),
        )),
        Some(lines) => Ok(lines),
    }
}

impl TryFrom<pb::ContainerLogsRequest> for SessionsRequest {
    type Error = InvalidField;

    fn try_from(request: pb::ContainerLogsRequest) -> Result<Self, InvalidField> {
        Ok(SessionsRequest {
            role: field("role", RoleName::new(request.role))?,
            container: container_or_all(request.container)?,
            target: request.target,
            kind: SessionKind::Logs(LogsOptions {
                since_unix_ms: time::unix_ms("since", request.since)?,
                tail: tail(request.tail)?,
                follow: request.follow,
            }),
            timeout_ms: 0,
        })
    }
}

impl TryFrom<pb::ExecRequest> for SessionsRequest {
    type Error = InvalidField;

    fn try_from(request: pb::ExecRequest) -> Result<Self, InvalidField> {
        let timeout_ms = time::ms("timeout", request.timeout)?.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_EXEC_TIMEOUT_MS {
            return Err(InvalidField::new("timeout", "from 1 ms to 1 hour"));
        }
        Ok(SessionsRequest {
            role: field("role", RoleName::new(request.role))?,
            container: container_or_all(request.container)?,
            target: request.target,
            kind: SessionKind::Exec(field("command", Command::new(request.command))?),
            timeout_ms,
        })
    }
}

impl From<SessionsRequest> for pb::ContainerLogsRequest {
    /// The logs part of `request`; an exec request gives the defaults.
    fn from(request: SessionsRequest) -> Self {
        let options = match request.kind {
            SessionKind::Logs(options) => options,
            SessionKind::Exec(_) => LogsOptions {
                since_unix_ms: None,
                tail: DEFAULT_TAIL_LINES,
                follow: false,
            },
        };
        pb::ContainerLogsRequest {
            role: request.role.to_string(),
            container: request.container.map(|c| c.to_string()).unwrap_or_default(),
            target: request.target,
            follow: options.follow,
            since: options.since_unix_ms.map(time::timestamp),
            tail: Some(options.tail),
        }
    }
}

impl From<SessionsRequest> for pb::ExecRequest {
    /// The exec part of `request`; a logs request gives no command.
    fn from(request: SessionsRequest) -> Self {
        let command = match request.kind {
            SessionKind::Exec(command) => command.into_argv(),
            SessionKind::Logs(_) => vec![],
        };
        pb::ExecRequest {
            role: request.role.to_string(),
            container: request.container.map(|c| c.to_string()).unwrap_or_default(),
            target: request.target,
            command,
            timeout: Some(time::duration_of_ms(request.timeout_ms)),
        }
    }
}

impl From<OutputStream> for pb::OutputStream {
    fn from(stream: OutputStream) -> Self {
        match stream {
            OutputStream::Stdout => pb::OutputStream::Stdout,
            OutputStream::Stderr => pb::OutputStream::Stderr,
        }
    }
}

fn stream_from_wire(name: &str, value: i32) -> Result<OutputStream, InvalidField> {
    match pb::OutputStream::try_from(value) {
        Ok(pb::OutputStream::Stdout) => Ok(OutputStream::Stdout),
        Ok(pb::OutputStream::Stderr) => Ok(OutputStream::Stderr),
        _ => Err(InvalidField::new(name, "must be STDOUT or STDERR")),
    }
}

/// Output bytes from a host, if they fit one chunk.
fn chunk(name: &str, data: Vec<u8>) -> Result<Vec<u8>, InvalidField> {
    if data.len() > MAX_OUTPUT_CHUNK {
        return Err(InvalidField::new(
            name,
            format!(
                "{} bytes; at most {MAX_OUTPUT_CHUNK} are accepted",
                data.len()
            ),
        ));
    }
    Ok(data)
}

impl From<SessionRequest> for pb::StartSession {
    /// The request without its `minion_id`, which the sender sets.
    fn from(request: SessionRequest) -> Self {
        let kind = match request.kind {
            SessionKind::Logs(options) => pb::start_session::Kind::Logs(pb::LogsSession {
                since: options.since_unix_ms.map(time::timestamp),
                tail: options.tail,
                follow: options.follow,
            }),
            SessionKind::Exec(command) => pb::start_session::Kind::Exec(pb::ExecSession {
                command: command.into_argv(),
            }),
        };
        pb::StartSession {
            session_id: request.session_id.to_string(),
            minion_id: String::new(),
            role: request.role.to_string(),
            container: request.container.to_string(),
            ends_at: request.ends_at_unix_ms.map(time::timestamp),
            limits: Some(pb::SessionLimits {
                max_bytes: request.limits.max_bytes,
                bytes_per_second: request.limits.bytes_per_second,
                burst_bytes: request.limits.burst_bytes,
            }),
            kind: Some(kind),
        }
    }
}

impl TryFrom<pb::StartSession> for SessionRequest {
    type Error = InvalidField;

    /// The request as a minion takes it; whether it is addressed to this host is the minion's
    /// to check.
    fn try_from(start: pb::StartSession) -> Result<Self, InvalidField> {
        let kind = match required("kind", start.kind)? {
            pb::start_session::Kind::Logs(logs) => SessionKind::Logs(LogsOptions {
                since_unix_ms: time::unix_ms("logs.since", logs.since)?,
                tail: tail(Some(logs.tail)).map_err(|e| e.within("logs"))?,
                follow: logs.follow,
            }),
            pb::start_session::Kind::Exec(exec) => {
                SessionKind::Exec(field("exec.command", Command::new(exec.command))?)
            }
        };
        let limits = start.limits.unwrap_or_default();
        Ok(SessionRequest {
            session_id: field("session_id", SessionId::new(start.session_id))?,
            role: field("role", RoleName::new(start.role))?,
            container: field("container", ContainerName::new(start.container))?,
            kind,
            limits: SessionLimits {
                max_bytes: limits.max_bytes,
                bytes_per_second: limits.bytes_per_second,
                burst_bytes: limits.burst_bytes,
            },
            ends_at_unix_ms: time::unix_ms("ends_at", start.ends_at)?,
        })
    }
}

impl From<SessionMessage> for pb::connect_request::Kind {
    fn from(message: SessionMessage) -> Self {
        let session_id = message.session_id.to_string();
        match message.event {
            SessionEvent::Accepted => {
                pb::connect_request::Kind::SessionAccepted(pb::SessionAccepted { session_id })
            }
            SessionEvent::Output {
                stream,
                data,
                dropped_bytes,
            } => pb::connect_request::Kind::SessionOutput(pb::SessionOutput {
                session_id,
                stream: pb::OutputStream::from(stream).into(),
                data,
                dropped_bytes,
            }),
            SessionEvent::Ended(end) => pb::connect_request::Kind::SessionEnded(pb::SessionEnded {
                session_id,
                exit_code: end.exit_code,
                error: end.error.unwrap_or_default(),
                truncated: end.truncated,
                timed_out: end.timed_out,
            }),
        }
    }
}

impl TryFrom<pb::SessionAccepted> for SessionMessage {
    type Error = InvalidField;

    fn try_from(accepted: pb::SessionAccepted) -> Result<Self, InvalidField> {
        Ok(SessionMessage {
            session_id: field("session_id", SessionId::new(accepted.session_id))?,
            event: SessionEvent::Accepted,
        })
    }
}

impl TryFrom<pb::SessionOutput> for SessionMessage {
    type Error = InvalidField;

    fn try_from(output: pb::SessionOutput) -> Result<Self, InvalidField> {
        Ok(SessionMessage {
            session_id: field("session_id", SessionId::new(output.session_id))?,
            event: SessionEvent::Output {
                stream: stream_from_wire("stream", output.stream)?,
                data: chunk("data", output.data)?,
                dropped_bytes: output.dropped_bytes,
            },
        })
    }
}

impl TryFrom<pb::SessionEnded> for SessionMessage {
    type Error = InvalidField;

    /// A host's error text too long is cut, not refused: the session's end must arrive.
    fn try_from(ended: pb::SessionEnded) -> Result<Self, InvalidField> {
        Ok(SessionMessage {
            session_id: field("session_id", SessionId::new(ended.session_id))?,
            event: SessionEvent::Ended(SessionEnd {
                exit_code: ended.exit_code,
                error: optional_string(truncate(ended.error, MAX_ERROR_TEXT)),
                truncated: ended.truncated,
                timed_out: ended.timed_out,
            }),
        })
    }
}

fn targets_to_wire(targets: Vec<(MinionId, Option<ContainerName>)>) -> Vec<pb::SessionTarget> {
    targets
        .into_iter()
        .map(|(minion_id, container)| pb::SessionTarget {
            minion_id: minion_id.to_string(),
            container: container.map(|c| c.to_string()).unwrap_or_default(),
        })
        .collect()
}

/// The three pieces of a `ContainerLogs` or `Exec` stream, whichever response holds them.
enum Piece {
    Started(pb::SessionsStarted),
    Output(pb::HostOutput),
    Ended(pb::HostSessionEnded),
}

impl From<SessionsEvent> for Piece {
    fn from(event: SessionsEvent) -> Self {
        match event {
            SessionsEvent::Started { job_id, targets } => Piece::Started(pb::SessionsStarted {
                job_id: job_id.to_string(),
                targets: targets_to_wire(targets),
            }),
            SessionsEvent::Output {
                minion_id,
                container,
                stream,
                data,
                dropped_bytes,
            } => Piece::Output(pb::HostOutput {
                minion_id: minion_id.to_string(),
                container: container.to_string(),
                stream: pb::OutputStream::from(stream).into(),
                data,
                dropped_bytes,
            }),
            SessionsEvent::Ended {
                minion_id,
                container,
                end,
            } => Piece::Ended(pb::HostSessionEnded {
                minion_id: minion_id.to_string(),
                container: container.map(|c| c.to_string()).unwrap_or_default(),
                exit_code: end.exit_code,
                error: end.error.unwrap_or_default(),
                truncated: end.truncated,
            }),
        }
    }
}

impl TryFrom<Piece> for SessionsEvent {
    type Error = InvalidField;

    fn try_from(piece: Piece) -> Result<Self, InvalidField> {
        Ok(match piece {
            Piece::Started(started) => SessionsEvent::Started {
                job_id: field("started.job_id", JobId::new(started.job_id))?,
                targets: started
                    .targets
                    .into_iter()
                    .map(|target| {
                        Ok((
                            field("started.targets.minion_id", MinionId::new(target.minion_id))?,
                            container_or_all(target.container)
                                .map_err(|e| e.within("started.targets"))?,
                        ))
                    })
                    .collect::<Result<_, InvalidField>>()?,
            },
            Piece::Output(output) => SessionsEvent::Output {
                minion_id: field("output.minion_id", MinionId::new(output.minion_id))?,
                container: field("output.container", ContainerName::new(output.container))?,
                stream: stream_from_wire("output.stream", output.stream)?,
                data: chunk("output.data", output.data)?,
                dropped_bytes: output.dropped_bytes,
            },
            Piece::Ended(ended) => SessionsEvent::Ended {
                minion_id: field("ended.minion_id", MinionId::new(ended.minion_id))?,
                container: container_or_all(ended.container).map_err(|e| e.within("ended"))?,
                end: SessionEnd {
                    exit_code: ended.exit_code,
                    error: optional_string(truncate(ended.error, MAX_ERROR_TEXT)),
                    truncated: ended.truncated,
                    // The caller is told why in `error`.
                    timed_out: false,
                },
            },
        })
    }
}

impl From<SessionsEvent> for pb::ExecResponse {
    fn from(event: SessionsEvent) -> Self {
        use pb::exec_response::Kind;
        let kind = match Piece::from(event) {
            Piece::Started(started) => Kind::Started(started),
            Piece::Output(output) => Kind::Output(output),
            Piece::Ended(ended) => Kind::Ended(ended),
        };
        pb::ExecResponse { kind: Some(kind) }
    }
}

impl From<SessionsEvent> for pb::ContainerLogsResponse {
    fn from(event: SessionsEvent) -> Self {
        use pb::container_logs_response::Kind;
        let kind = match Piece::from(event) {
            Piece::Started(started) => Kind::Started(started),
            Piece::Output(output) => Kind::Output(output),
            Piece::Ended(ended) => Kind::Ended(ended),
        };
        pb::ContainerLogsResponse { kind: Some(kind) }
    }
}

impl TryFrom<pb::ExecResponse> for SessionsEvent {
    type Error = InvalidField;

    fn try_from(response: pb::ExecResponse) -> Result<Self, InvalidField> {
        use pb::exec_response::Kind;
        SessionsEvent::try_from(match required("kind", response.kind)? {
            Kind::Started(started) => Piece::Started(started),
            Kind::Output(output) => Piece::Output(output),
            Kind::Ended(ended) => Piece::Ended(ended),
        })
    }
}

impl TryFrom<pb::ContainerLogsResponse> for SessionsEvent {
    type Error = InvalidField;

    fn try_from(response: pb::ContainerLogsResponse) -> Result<Self, InvalidField> {
        use pb::container_logs_response::Kind;
        SessionsEvent::try_from(match required("kind", response.kind)? {
            Kind::Started(started) => Piece::Started(started),
            Kind::Output(output) => Piece::Output(output),
            Kind::Ended(ended) => Piece::Ended(ended),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_request(command: &[&str]) -> pb::ExecRequest {
        pb::ExecRequest {
            role: "web".into(),
            container: String::new(),
            target: String::new(),
            command: command.iter().map(|a| (*a).to_owned()).collect(),
            timeout: None,
        }
    }

    #[test]
    fn exec_requests_are_checked_naming_the_field() {
        let request = SessionsRequest::try_from(exec_request(&["sh", "-c", "echo hi"])).unwrap();
        assert_eq!(request.timeout_ms, DEFAULT_EXEC_TIMEOUT_MS);
        assert_eq!(request.container, None);
        assert_eq!(request.describe(), "web -- sh -c 'echo hi'");
        let err = SessionsRequest::try_from(exec_request(&[])).unwrap_err();
        assert_eq!(err.field, "command");
        let mut long = exec_request(&["true"]);
        long.timeout = Some(time::duration(std::time::Duration::from_secs(7200)));
        assert_eq!(
            SessionsRequest::try_from(long).unwrap_err().field,
            "timeout"
        );
        let mut bad = exec_request(&["true"]);
        bad.container = "a.b".into();
        assert_eq!(
            SessionsRequest::try_from(bad).unwrap_err().field,
            "container"
        );
    }

    #[test]
    fn logs_requests_default_and_cap_the_tail() {
        let request = |tail| pb::ContainerLogsRequest {
            role: "web".into(),
            container: "app".into(),
            target: "web-*".into(),
            follow: true,
            since: None,
            tail,
        };
        let taken = SessionsRequest::try_from(request(None)).unwrap();
        assert_eq!(
            taken.kind,
            SessionKind::Logs(LogsOptions {
                since_unix_ms: None,
                tail: DEFAULT_TAIL_LINES,
                follow: true
            })
        );
        assert_eq!(taken.describe(), "web/app --tail 100 --follow");
        let err = SessionsRequest::try_from(request(Some(MAX_TAIL_LINES + 1))).unwrap_err();
        assert_eq!(err.field, "tail");
    }

    #[test]
    fn a_session_request_goes_to_the_minion_and_back_unchanged() {
        let request = SessionRequest {
            session_id: SessionId::new("job-1-0").unwrap(),
            role: RoleName::new("web").unwrap(),
            container: ContainerName::new("app").unwrap(),
            kind: SessionKind::Exec(Command::new(vec!["ls".into(), "-l".into()]).unwrap()),
            limits: SessionLimits {
                max_bytes: 1024,
                bytes_per_second: 0,
                burst_bytes: 0,
            },
            ends_at_unix_ms: Some(1_800_000_000_000),
        };
        let wire = pb::StartSession::from(request.clone());
        assert_eq!(SessionRequest::try_from(wire).unwrap(), request);
    }

    #[test]
    fn what_a_host_sends_is_bounded_where_it_arrives() {
        let output = |data: Vec<u8>, stream| pb::SessionOutput {
            session_id: "job-1-0".into(),
            stream,
            data,
            dropped_bytes: 0,
        };
        let fits = output(
            vec![b'x'; MAX_OUTPUT_CHUNK],
            pb::OutputStream::Stdout.into(),
        );
        assert!(SessionMessage::try_from(fits).is_ok());
        let over = output(
            vec![b'x'; MAX_OUTPUT_CHUNK + 1],
            pb::OutputStream::Stdout.into(),
        );
        assert_eq!(SessionMessage::try_from(over).unwrap_err().field, "data");
        let unspecified = output(vec![], pb::OutputStream::Unspecified.into());
        assert_eq!(
            SessionMessage::try_from(unspecified).unwrap_err().field,
            "stream"
        );
        let ended = SessionMessage::try_from(pb::SessionEnded {
            session_id: "job-1-0".into(),
            exit_code: Some(3),
            error: "e".repeat(MAX_ERROR_TEXT * 2),
            truncated: false,
            timed_out: false,
        })
        .unwrap();
        let SessionEvent::Ended(end) = ended.event else {
            panic!("an end")
        };
        assert_eq!(end.exit_code, Some(3));
        assert!(end.error.unwrap().len() <= MAX_ERROR_TEXT);
    }

    #[test]
    fn what_the_caller_is_streamed_converts_both_ways() {
        let events = [
            SessionsEvent::Started {
                job_id: JobId::new("job-1").unwrap(),
                targets: vec![
                    (
                        MinionId::new("web-1").unwrap(),
                        Some(ContainerName::new("app").unwrap()),
                    ),
                    (MinionId::new("web-2").unwrap(), None),
                ],
            },
            SessionsEvent::Output {
                minion_id: MinionId::new("web-1").unwrap(),
                container: ContainerName::new("app").unwrap(),
                stream: OutputStream::Stderr,
                data: b"oops\n".to_vec(),
                dropped_bytes: 7,
            },
            SessionsEvent::Ended {
                minion_id: MinionId::new("web-2").unwrap(),
                container: None,
                end: SessionEnd {
                    exit_code: None,
                    error: Some("not linked".into()),
                    truncated: false,
                    timed_out: false,
                },
            },
        ];
        for event in events {
            let exec = pb::ExecResponse::from(event.clone());
            assert_eq!(SessionsEvent::try_from(exec).unwrap(), event);
            let logs = pb::ContainerLogsResponse::from(event.clone());
            assert_eq!(SessionsEvent::try_from(logs).unwrap(), event);
        }
    }
}
