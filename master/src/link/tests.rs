//! The limit on what one link may send: a flooding peer is cut, and each window starts afresh.

use super::*;

#[test]
fn a_flooding_link_is_cut_and_a_new_window_starts_afresh() {
    let mut rate = MessageRate::default();
    let start = tokio::time::Instant::now();
    for _ in 0..MAX_MESSAGES_PER_WINDOW {
        assert!(rate.allow(start));
    }
    assert!(!rate.allow(start));
    assert!(rate.allow(start + MESSAGE_WINDOW));
}
