//! `udplock remove NODE_ID`: an operator retires a member that is gone for good (spec §4.10;
//! README, "Replacing a node"), with a REMOVE authenticated by the cluster key.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use udplock::client::{MemberState, RemoveReport};
use udplock::{json, Client, ClientConfig, LockError};
use udplock_protocol::{ClusterKey, RemoveOutcome};

use super::args::resolve;
use super::Failure;

#[derive(Args)]
pub struct RemoveArgs {
    /// The node id of the member to retire. It must be dead (or suspected): a node refuses
    /// to remove a member it holds alive (stop a live node first: a stop announces no
    /// leave unless the node runs with --leave-on-stop).
    node_id: u64,
    /// The node(s) to ask, comma-separated: the first that answers removes the member and
    /// gossips it to the others.
    #[arg(
        long,
        visible_alias = "server",
        env = "UDPLOCK_SERVERS",
        default_value = "127.0.0.1:7100",
        value_delimiter = ','
    )]
    servers: Vec<String>,
    /// The cluster's key file (the nodes' --cluster-key-file): a removal is authenticated
    /// with its first key (spec §4.10). A node that does not accept that key does not answer.
    #[arg(long, visible_alias = "key-file", env = "UDPLOCK_CLUSTER_KEY_FILE")]
    cluster_key_file: PathBuf,
    /// The member's incarnation the removal applies to, as `udplock status` shows it.
    /// Omitted: the one the asked node holds (read with MEMBERS first). A node removes the
    /// member only at exactly this incarnation, so a removal never applies to a later life of
    /// the node (one restarted since).
    #[arg(long)]
    incarnation: Option<u64>,
    /// How long to wait for each node's answer, retransmitting meanwhile: 2s, 500ms (a bare
    /// number is ms). Old spelling: --timeout-ms.
    #[arg(long, alias = "timeout-ms", value_name = "DURATION", default_value = "2s",
          value_parser = super::duration::ms::<0, { udplock::client::WAIT_MS_MAX }>)]
    timeout: std::time::Duration,
    /// Print one JSON object on stdout instead of a sentence.
    #[arg(long)]
    json: bool,
}

/// `udplock remove NODE_ID`: Ok if the member is removed (now or before) at the node that
/// answered; [`Failure::Refused`] (exit code 1) if it refused, Unavailable (6) if no node
/// answered.
pub fn run(a: RemoveArgs) -> Result<(), Failure> {
    let path = a.cluster_key_file.as_path();
    let keys = udplock::cluster::keys::read(path)
        .map_err(|e| LockError::InvalidArgument(format!("{}: {e}", path.display())))?;
    // The first key of the file: the one its nodes send with, unless the file starts with
    // `none` (turning keys on), when it is the key that follows.
    let key: &ClusterKey = keys.entries().iter().flatten().next().ok_or_else(|| {
        LockError::InvalidArgument(format!(
            "{} holds no key (only `none`): a removal must be authenticated with the cluster key",
            path.display()
        ))
    })?;
    let servers = resolve(&a.servers)?;
    let mut config = ClientConfig::new(servers.clone());
    config.request_timeout_ms = super::duration::ms_u64(a.timeout);
    let client = Client::new(config)?;
    for &server in &servers {
        match remove_at(&client, server, key, a.node_id, a.incarnation) {
            Ok(report) => return a.report(server, &report),
            Err(LockError::Unavailable) => {
                eprintln!(
                    "udplock remove: no answer from {server}: unreachable, or it does not \
                     accept key {:08x}",
                    key.id()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(LockError::Unavailable.into())
}

/// Removes `member` at `server`: at `incarnation`, or at the one `server` holds.
fn remove_at(
    client: &Client,
    server: SocketAddr,
    key: &ClusterKey,
    member: u64,
    incarnation: Option<u64>,
) -> Result<RemoveReport, LockError> {
    let incarnation = match incarnation {
        Some(i) => i,
        None => {
            let table = client.members(server)?;
            match table.members.iter().find(|m| m.id == member) {
                // 0 never names an incarnation on the wire; 1 is below every incarnation a
                // node holds (start times), so the node answers OTHER_INCARNATION, or ALIVE.
                Some(m) => m.incarnation.max(1),
                None => {
                    return Ok(RemoveReport {
                        node_id: table.node_id,
                        outcome: RemoveOutcome::UnknownMember,
                        state: MemberState::Alive,
                        incarnation: 0,
                    })
                }
            }
        }
    };
    client.remove(server, key, member, incarnation)
}

impl RemoveArgs {
    /// Prints what `server` did; a refusal is a [`Failure::Refused`] that says the member
    /// was not removed and why (`main` prints it on stderr).
    fn report(&self, server: SocketAddr, r: &RemoveReport) -> Result<(), Failure> {
        let id = self.node_id;
        let state = match r.state {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Dead => "dead",
            MemberState::Left => "left",
        };
        let sentence = match r.outcome {
            RemoveOutcome::Removed => format!(
                "node {id} removed at incarnation {} by node {} ({server}); the others learn it by gossip",
                r.incarnation, r.node_id
            ),
            RemoveOutcome::AlreadyRemoved => format!(
                "node {id} already removed (left at incarnation {}, says node {})",
                r.incarnation, r.node_id
            ),
            RemoveOutcome::Alive => format!(
                "node {id} was not removed: node {} holds it alive (incarnation {}); stop it \
                 first and remove it once it is held dead, or stop it with --leave-on-stop",
                r.node_id, r.incarnation
            ),
            RemoveOutcome::UnknownMember => {
                format!("node {id} was not removed: node {} knows no node {id}", r.node_id)
            }
            RemoveOutcome::OtherIncarnation => format!(
                "node {id} was not removed: node {} holds it {state} at incarnation {}, not \
                 the one named; run again with --incarnation {} if that is the life to remove",
                r.node_id, r.incarnation, r.incarnation
            ),
        };
        if self.json {
            println!(
                "{}",
                json::to_line(&json::Removed {
                    node_id: id,
                    removed: r.outcome.is_removed(),
                    outcome: r.outcome.name(),
                    state,
                    incarnation: r.incarnation,
                    answered_by: r.node_id,
                    server: server.to_string(),
                })
            );
        } else if r.outcome.is_removed() {
            println!("{sentence}");
        }
        if r.outcome.is_removed() {
            Ok(())
        } else {
            Err(Failure::Refused(sentence))
        }
    }
}
