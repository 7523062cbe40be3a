//! Times and durations on the wire: `google.protobuf.Timestamp` and `Duration`, converted to and
//! from the milliseconds the domain model counts in. From the wire, a value that is malformed
//! (nanoseconds out of range, a negative duration where none makes sense) or that does not fit
//! is an [`InvalidField`] naming the field.

use prost_types::{Duration, Timestamp};

use crate::InvalidField;

const NANOS_PER_MS: i64 = 1_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

/// Milliseconds since the Unix epoch as a timestamp.
pub fn timestamp(unix_ms: i64) -> Timestamp {
    Timestamp {
        seconds: unix_ms.div_euclid(1000),
        // Below 1e9, so it fits.
        nanos: (unix_ms.rem_euclid(1000) * NANOS_PER_MS) as i32,
    }
}

/// A time the domain keeps as 0 for "never" or "unknown": unset on the wire then.
pub fn timestamp_if_known(unix_ms: i64) -> Option<Timestamp> {
    (unix_ms != 0).then(|| timestamp(unix_ms))
}

/// A timestamp from the wire as milliseconds since the Unix epoch; unset is `None`.
pub fn unix_ms(field: &str, value: Option<Timestamp>) -> Result<Option<i64>, InvalidField> {
    let Some(value) = value else {
        return Ok(None);
    };
    if !(0..NANOS_PER_SECOND).contains(&i64::from(value.nanos)) {
        return Err(InvalidField::new(
            field,
            "nanos must be from 0 to 999,999,999",
        ));
    }
    value
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(value.nanos) / NANOS_PER_MS))
        .map(Some)
        .ok_or_else(|| InvalidField::new(field, "is out of range"))
}

/// A timestamp from the wire, 0 when unset (the domain's "unknown").
pub fn unix_ms_or_zero(field: &str, value: Option<Timestamp>) -> Result<i64, InvalidField> {
    Ok(unix_ms(field, value)?.unwrap_or(0))
}

/// Milliseconds, possibly negative, as a duration.
pub fn duration_of_signed_ms(ms: i64) -> Duration {
    // Division truncates toward zero, so seconds and nanos share the sign, as the type requires.
    Duration {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * NANOS_PER_MS) as i32,
    }
}

/// Milliseconds as a duration.
pub fn duration_of_ms(ms: u64) -> Duration {
    duration_of_signed_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A `std::time::Duration` as a protobuf one (to the millisecond).
pub fn duration(value: std::time::Duration) -> Duration {
    duration_of_ms(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
}

/// A duration from the wire as signed milliseconds; unset is `None`.
pub fn signed_ms(field: &str, value: Option<Duration>) -> Result<Option<i64>, InvalidField> {
    let Some(value) = value else {
        return Ok(None);
    };
    let nanos = i64::from(value.nanos);
    let same_sign = (value.seconds >= 0 && nanos >= 0) || (value.seconds <= 0 && nanos <= 0);
    if nanos.abs() >= NANOS_PER_SECOND || !same_sign {
        return Err(InvalidField::new(
            field,
            "nanos must be below one second and share the sign of seconds",
        ));
    }
    value
        .seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(nanos / NANOS_PER_MS))
        .map(Some)
        .ok_or_else(|| InvalidField::new(field, "is out of range"))
}

/// A duration from the wire as milliseconds, refusing a negative one; unset is `None`.
pub fn ms(field: &str, value: Option<Duration>) -> Result<Option<u64>, InvalidField> {
    signed_ms(field, value)?
        .map(|ms| u64::try_from(ms).map_err(|_| InvalidField::new(field, "must not be negative")))
        .transpose()
}

/// A duration from the wire as milliseconds, 0 when unset.
pub fn ms_or_zero(field: &str, value: Option<Duration>) -> Result<u64, InvalidField> {
    Ok(ms(field, value)?.unwrap_or(0))
}

/// A duration from the wire as a `std::time::Duration` (to the millisecond); unset is `None`.
pub fn std_duration(
    field: &str,
    value: Option<Duration>,
) -> Result<Option<std::time::Duration>, InvalidField> {
    Ok(ms(field, value)?.map(std::time::Duration::from_millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_and_after_the_epoch_go_there_and_back() {
        for unix_ms in [
            0,
            1,
            999,
            1000,
            1_764_000_123_456,
            -1,
            -1001,
            i64::MIN / 1000,
        ] {
            let wire = timestamp(unix_ms);
            assert!((0..1_000_000_000).contains(&wire.nanos), "{wire:?}");
            assert_eq!(unix_ms_or_zero("t", Some(wire)).unwrap(), unix_ms);
        }
        assert_eq!(timestamp_if_known(0), None);
        assert_eq!(unix_ms("t", None).unwrap(), None);
    }

    #[test]
    fn durations_keep_their_sign() {
        for ms in [0, 1, 1500, -1, -1500, i64::MAX / 1000, i64::MIN / 1000] {
            assert_eq!(
                signed_ms("d", Some(duration_of_signed_ms(ms))).unwrap(),
                Some(ms)
            );
        }
        assert_eq!(
            ms_or_zero("d", Some(duration_of_ms(90_061))).unwrap(),
            90_061
        );
        assert_eq!(
            std_duration("d", Some(duration(std::time::Duration::from_secs(3)))).unwrap(),
            Some(std::time::Duration::from_secs(3))
        );
    }

    #[test]
    fn malformed_values_name_their_field() {
        let bad_nanos = Timestamp {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(unix_ms("at", Some(bad_nanos)).unwrap_err().field, "at");
        let overflow = Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(unix_ms("at", Some(overflow)).is_err());
        let mixed_signs = Duration {
            seconds: 1,
            nanos: -5,
        };
        assert!(signed_ms("wait", Some(mixed_signs)).is_err());
        let negative = Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(
            ms("wait", Some(negative)).unwrap_err().to_string(),
            "wait: must not be negative"
        );
    }
}
