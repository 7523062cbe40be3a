//! Records as stored: JSON objects that say which format they are in.
//!
//! Every record is written with a `format` field beside its own, so that a later master can
//! tell an old shape from a new one and a master never misreads a shape it does not know.
//! Records written before the field existed have none and are format 1. A record in another
//! format, or that does not decode, is [`StoreError::Corrupt`] naming its table and key: the
//! store never guesses.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// The format records are written in, and the only one read.
const FORMAT: u64 = 1;

/// The format of records that carry none: written before records carried one.
const UNVERSIONED_FORMAT: u64 = 1;

/// A record as written: its fields and the format.
#[derive(Serialize)]
struct Versioned<'a, T> {
    format: u64,
    #[serde(flatten)]
    record: &'a T,
}

/// Only the format of a stored record; its other fields are skipped.
#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    format: Option<u64>,
}

/// The stored form of `record`, which serializes to a JSON object (a struct).
pub(super) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(&Versioned {
        format: FORMAT,
        record,
    })
    .expect("store records serialize to JSON objects")
}

/// The record stored under `key` of `table` (both named in errors).
pub(super) fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: impl std::fmt::Display,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let corrupt = |message: String| StoreError::Corrupt {
        table,
        key: key.to_string(),
        message,
    };
    let header: Header = serde_json::from_slice(bytes).map_err(|err| corrupt(err.to_string()))?;
    match header.format.unwrap_or(UNVERSIONED_FORMAT) {
        // The record's own type ignores the `format` field.
        FORMAT => serde_json::from_slice(bytes).map_err(|err| corrupt(err.to_string())),
        other => Err(corrupt(format!(
            "it is in format {other}, and this master reads format {FORMAT} only"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        at_unix_ms: i64,
    }

    fn sample() -> Sample {
        Sample {
            name: "web-1".into(),
            note: None,
            at_unix_ms: -5,
        }
    }

    fn corrupt_names(err: StoreError) -> (&'static str, String, String) {
        let text = err.to_string();
        match err {
            StoreError::Corrupt { table, key, .. } => (table, key, text),
            other => panic!("not Corrupt: {other:?}"),
        }
    }

    #[test]
    fn a_record_is_written_with_its_format_and_reads_back() {
        let bytes = encode(&sample());
        let stored: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(stored["format"], 1);
        assert_eq!(stored["name"], "web-1");
        assert_eq!(
            decode::<Sample>("samples", "web-1", &bytes).unwrap(),
            sample()
        );
    }

    #[test]
    fn a_record_without_a_format_is_format_1() {
        let bytes = br#"{"name":"web-1","at_unix_ms":-5}"#;
        assert_eq!(
            decode::<Sample>("samples", "web-1", bytes).unwrap(),
            sample()
        );
        let null = br#"{"format":null,"name":"web-1","at_unix_ms":-5}"#;
        assert_eq!(
            decode::<Sample>("samples", "web-1", null).unwrap(),
            sample()
        );
    }

    #[test]
    fn a_record_in_an_unknown_format_is_corrupt_naming_its_table_and_key() {
        for format in ["0", "2", "\"1\""] {
            let bytes = format!(r#"{{"format":{format},"name":"web-1","at_unix_ms":-5}}"#);
            let (table, key, text) =
                corrupt_names(decode::<Sample>("samples", "web-1", bytes.as_bytes()).unwrap_err());
            assert_eq!(
                (table, key.as_str()),
                ("samples", "web-1"),
                "format {format}"
            );
            assert!(
                text.contains("samples") && text.contains("\"web-1\""),
                "{text}"
            );
        }
        let (_, _, text) = corrupt_names(
            decode::<Sample>("samples", 7, br#"{"format":2,"name":"x","at_unix_ms":0}"#)
                .unwrap_err(),
        );
        assert!(text.contains("format 2"), "{text}");
    }

    #[test]
    fn a_record_that_does_not_decode_is_corrupt_naming_its_table_and_key() {
        for bytes in [
            &br#"{"format":1,"name":3,"at_unix_ms":0}"#[..],
            br#"{"name":"web-1"}"#,
            br#"[1,2]"#,
            br#"{"name":"#,
            b"\xff",
        ] {
            let (table, key, text) =
                corrupt_names(decode::<Sample>("samples", "web-1/3", bytes).unwrap_err());
            assert_eq!((table, key.as_str()), ("samples", "web-1/3"));
            assert!(text.contains("\"web-1/3\""), "{text}");
        }
    }
}
