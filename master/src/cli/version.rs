//! `brine-master version`: this program's version and the master's, so a mismatch between a
//! laptop's CLI and the master it calls is easy to see.

use anyhow::Context;
use brine_proto::pb;

use super::client::ClientArgs;

/// Prints the client's version and commit, then asks the master for its own; fails (after printing the
/// client's) when the master cannot be asked.
pub async fn show(client: &ClientArgs) -> anyhow::Result<()> {
    println!("client  {}", brine_daemon::VERSION);
    let master = pb::fleet_service_client::FleetServiceClient::new(client.connect().await?)
        .get_version(pb::GetVersionRequest {})
        .await
        .map_err(super::status_error)
        .context("ask the master for its version")?
        .into_inner();
    // A master older than the commit field says nothing of it.
    let commit = match master.commit.as_str() {
        "" => String::new(),
        commit => format!("commit {commit}, "),
    };
    println!("master  {} ({commit}API {})", master.version, master.api);
    Ok(())
}
