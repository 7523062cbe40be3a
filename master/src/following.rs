//! Following what other masters write to a shared store: a follower runs until the store fails
//! it (a broken watch, etcd out of reach), then starts again after a pause, until the master
//! stops.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::StoreError;

/// How long a follower waits before it starts again after the store failed it.
pub const RETRY: Duration = Duration::from_secs(1);

/// Runs `follow` (which ends only with the store's error) until `stopping`, starting it again
/// [`RETRY`] after each failure; `what` says what it follows, in the log.
pub async fn keep_following<Follow, Following>(
    stopping: &CancellationToken,
    what: &str,
    mut follow: Follow,
) where
    Follow: FnMut() -> Following,
    Following: Future<Output = StoreError>,
{
    loop {
        let err = tokio::select! {
            () = stopping.cancelled() => return,
            err = follow() => err,
        };
        tracing::warn!("cannot follow {what}; following again in {RETRY:?}: {err}");
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}
