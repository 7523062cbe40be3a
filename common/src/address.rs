//! Network addresses as brine writes them: `HOST:PORT`.

/// Whether `address` is `HOST:PORT`: a host that a name or an address (an IPv6 one bracketed)
/// could be, and a port from 1.
pub fn is_host_and_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        && port.parse::<u16>().is_ok_and(|port| port != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_with_a_port_are_host_and_port() {
        for good in [
            "m1.example:4700",
            "10.0.0.1:4700",
            "[fd00::1]:4700",
            "m_1:1",
        ] {
            assert!(is_host_and_port(good), "{good}");
        }
        for bad in [
            "", "m2", "m2:", "m2:0", "m2:99999", "m 2:1", "a/b:1", ":4700",
        ] {
            assert!(!is_host_and_port(bad), "{bad}");
        }
    }
}
