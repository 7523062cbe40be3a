//! How much a host may tell the master: bounds on every text and list a minion sends, so a
//! broken or hostile host cannot fill the master's memory, its store or an operator's screen.
//! The master refuses a message past these bounds; a minion cuts what it sends to fit them.

/// A fact (host name, OS, kernel, Docker version).
pub const MAX_FACT_TEXT: usize = 256;
/// Labels a host reports.
pub const MAX_LABELS: usize = 64;
/// An image reference or digest as a host reports it.
pub const MAX_IMAGE_TEXT: usize = 512;
/// A short word: a container's state, its id, the agent's version, a progress subject.
pub const MAX_SHORT_TEXT: usize = 256;
/// An error a host reports for a job or a container.
pub const MAX_ERROR_TEXT: usize = 8 * 1024;
/// Containers a host reports (running, or in one job's result).
pub const MAX_CONTAINERS: usize = 1024;
/// One chunk of a session's output (a container's logs, a command's output).
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// How far a host's clock may be from the master's (in milliseconds) before the master and
/// the minion both warn about it; commands are timed by the master's clock either way. Compared
/// with `unsigned_abs`, as a host may send any number.
pub const CLOCK_SKEW_WARNING_MS: u64 = 5_000;

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn truncate(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = '…';
    let mut end = max.saturating_sub(marker.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push(marker);
    text
}

/// Refuses `text` longer than `max` bytes.
pub fn check_len(text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!(
            "is {} bytes long; at most {max} are accepted",
            text.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole_and_marks_the_cut() {
        assert_eq!(truncate("short".into(), 10), "short");
        let cut = truncate("ééééé".into(), 7);
        assert!(cut.len() <= 7, "{cut}");
        assert_eq!(cut, "éé…");
        assert!(check_len(&cut, 7).is_ok());
        assert!(check_len("12345678", 7).is_err());
    }
}
