//! Pages of a long answer (the hosts, a job's host reports): their size, their tokens, and
//! the byte limit that keeps each message well under gRPC's. It is separate because hosts and
//! jobs page alike.

use brine_common::names::MinionId;
use brine_proto::errors::invalid;
use tonic::Status;

/// Hosts in a page of `ListMinions` unless the caller asks for fewer, and at most.
const DEFAULT_PAGE_SIZE: usize = 500;
const MAX_PAGE_SIZE: usize = 1000;

/// A page ends before it passes this, well under gRPC's default 4 MiB message limit.
pub(super) const MAX_PAGE_BYTES: usize = 3 * 1024 * 1024;

/// The first `items` that make one page: at most `size` of them, ending before
/// [`MAX_PAGE_BYTES`] (a first item larger than that still goes alone). The token of the next
/// page is the `key` of the last item sent, or empty when nothing is left.
pub(super) fn paged<T: prost::Message>(
    items: impl IntoIterator<Item = T>,
    size: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    let mut page = vec![];
    let mut bytes = 0;
    let mut more = false;
    for item in items {
        let item_bytes = item.encoded_len();
        if page.len() == size || (!page.is_empty() && bytes + item_bytes > MAX_PAGE_BYTES) {
            more = true;
            break;
        }
        bytes += item_bytes;
        page.push(item);
    }
    let token = match page.last() {
        Some(last) if more => key(last),
        _ => String::new(),
    };
    (page, token)
}

/// A page size from a request: 0 means the default; never more than the maximum.
pub(super) fn page_size(requested: u32) -> usize {
    match requested {
        0 => DEFAULT_PAGE_SIZE,
        n => usize::try_from(n)
            .unwrap_or(MAX_PAGE_SIZE)
            .min(MAX_PAGE_SIZE),
    }
}

/// The host id a page token names.
pub(super) fn page_token(token: &str) -> Result<Option<MinionId>, Status> {
    match token {
        "" => Ok(None),
        token => MinionId::new(token)
            .map(Some)
            .map_err(|err| invalid("page_token", format!("not one this master gave: {err}"))),
    }
}
