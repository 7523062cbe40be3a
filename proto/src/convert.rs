//! `TryFrom<pb::X> for X` (validation at the edge) and `From<X> for pb::X`.
//!
//! This file holds what every conversion shares: [`InvalidField`], which names the offending
//! field, and the helpers that check presence and bounds. The conversions themselves are per
//! message family: `spec.rs` (desired state), `host.rs` (facts, running containers, host
//! events), `outcome.rs` (results and reports), `events.rs` (progress and highstate events) and
//! `session.rs` (`logs` and `exec`: requests, sessions on a host, what the caller is streamed).
//! `fleet_events.rs` (the fleet's events and failed hook deliveries).

use std::fmt::Display;

use brine_common::limits::check_len;

mod events;
mod fleet_events;
mod host;
mod outcome;
mod session;
mod spec;
#[cfg(test)]
mod tests;

/// A field of a message from the wire that does not hold a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidField {
    pub field: String,
    pub message: String,
}

impl InvalidField {
    pub fn new(field: impl Into<String>, message: impl Display) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Prefixes the field with the name of the message that holds it.
    fn within(self, parent: impl Display) -> Self {
        Self {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

fn field<T, E: Display>(name: &str, result: Result<T, E>) -> Result<T, InvalidField> {
    result.map_err(|err| InvalidField::new(name, err))
}

fn required<T>(name: &str, value: Option<T>) -> Result<T, InvalidField> {
    value.ok_or_else(|| InvalidField::new(name, "is required"))
}

fn optional_string(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// `text` from the wire, if it fits `max` bytes.
fn bounded(name: &str, text: String, max: usize) -> Result<String, InvalidField> {
    check_len(&text, max).map_err(|err| InvalidField::new(name, err))?;
    Ok(text)
}

/// A list from the wire, if it holds at most `max` items.
fn bounded_list<T>(name: &str, items: Vec<T>, max: usize) -> Result<Vec<T>, InvalidField> {
    if items.len() > max {
        return Err(InvalidField::new(
            name,
            format!("holds {} items; at most {max} are accepted", items.len()),
        ));
    }
    Ok(items)
}

pub use fleet_events::{fleet_event_kind, watchable_kinds};
