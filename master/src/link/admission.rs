//! Links kept in line with changes other masters make: when masters share a store, a host
//! revoked, rejected, replaced or deleted through one master must lose its link to whichever
//! master holds it. Each master follows the hosts' records as they change and ends the links
//! they no longer admit.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::Links;
use crate::state::Master;
use crate::store::{CertificateCheck, HostChange, Store};

/// How long to wait before following the store again after it lost track.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Follows the store's host changes until `stopping`, ending each link the change no longer
/// admits. After every (re)start of the following, every link is checked, since changes made
/// meanwhile were missed.
pub async fn follow(master: Arc<Master>, stopping: CancellationToken) {
    let (store, links) = (master.store.as_ref(), &master.links);
    let mut failing = false;
    loop {
        let followed = tokio::select! {
            () = stopping.cancelled() => return,
            followed = store.follow_host_changes() => followed,
        };
        let mut changes = match followed {
            Ok(changes) => changes,
            Err(err) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(
                        "cannot follow the hosts' changes other masters make: {err}; trying again"
                    );
                }
                tokio::select! {
                    () = stopping.cancelled() => return,
                    () = tokio::time::sleep(RETRY_DELAY) => continue,
                }
            }
        };
        if std::mem::take(&mut failing) {
            tracing::info!("following the hosts' changes other masters make again");
        }
        check_every_link(store, links).await;
        loop {
            let change = tokio::select! {
                () = stopping.cancelled() => return,
                change = changes.next() => change,
            };
            match change {
                Some(Ok(change)) => apply(&change, links),
                Some(Err(err)) => {
                    tracing::warn!("lost track of the hosts' changes: {err}; following again");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Ends the link of the host `change` is about if the change no longer admits its certificate.
fn apply(change: &HostChange, links: &Links) {
    let (id, admitted) = match change {
        HostChange::Deleted(id) => (id, None),
        HostChange::Changed(record) => (&record.id, Some(record)),
    };
    let Some(certificate) = links.certificate_of(id) else {
        return;
    };
    if admitted.is_some_and(|record| record.admits(&certificate)) {
        return;
    }
    if links.disconnect_certificate(id, &certificate) {
        tracing::warn!(minion.id = %id, "link ended: the host is no longer admitted with its certificate (changed through another master)");
    }
}

/// Checks every link against the store, ending those it no longer admits.
async fn check_every_link(store: &dyn Store, links: &Links) {
    for (id, certificate) in links.linked() {
        match store
            .certificate_check(id.clone(), certificate.clone())
            .await
        {
            Ok(CertificateCheck::Recorded) => {}
            Ok(refused) => {
                if links.disconnect_certificate(&id, &certificate) {
                    tracing::warn!(minion.id = %id, ?refused, "link ended: the host is no longer admitted with its certificate");
                }
            }
            // Left linked: the next check (or the host's next connection) decides.
            Err(err) => tracing::warn!(minion.id = %id, "cannot check the link: {err}"),
        }
    }
}
