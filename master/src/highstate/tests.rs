//! Job ids, as a prepared job gets them: sorted by time, never the same twice, and valid.

use super::prepare::new_job_id;

#[test]
fn job_ids_sort_by_time_and_are_valid() {
    let a = new_job_id();
    let b = new_job_id();
    assert_ne!(a, b);
    assert_eq!(a.as_str().len(), "20261126T183000-0123abcd".len());
}
