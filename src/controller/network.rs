//! The quorum's RPCs: their messages (serde JSON in `io::controller_net` frames), openraft's
//! [`RaftNetworkFactory`] over them, a small pool of connections for the RPCs of our own
//! (forwarded proposals, learners joining, brokers' heartbeats), and the server that answers
//! them. All of it runs on the controller thread.
//!
//! Every request carries the sender's node id, its cluster id (None before it knows one) and
//! its voters list; every answer the receiver's cluster id. A request from another cluster, or
//! from a node configured with other voters, is refused rather than answered, and the sender is
//! told why ([`Refusal`]), so that a node started on the wrong data directory or with the wrong
//! list stops with a message instead of mixing two clusters (see `Shared::peer_differs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use super::lifecycle::{heartbeat_here, Heartbeat, HeartbeatReply};
use super::metadata::MetadataRecord;
use super::{ControllerStatus, Shared, TypeConfig};
use crate::io::controller_net::{FrameConn, FrameListener};

type Nid = u64;

/// Largest RPC frame accepted (a snapshot chunk is at most openraft's 3 MiB; an append of
/// entries is bounded by `ENTRY_MAX_BYTES`-sized entries in practice far smaller).
pub const FRAME_MAX_BYTES: usize = 80 * 1024 * 1024;
/// How long a server connection may stay idle before it is closed (the peer reconnects).
const SERVER_IDLE: Duration = Duration::from_secs(120);
/// How long a heartbeat's record (fencing, unfencing) may take to commit before the answer goes.
const HEARTBEAT_COMMIT_MS: u64 = 5_000;
/// How long writing an answer may take.
const SERVER_SEND: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
pub struct RequestFrame {
    pub from: Nid,
    pub cluster_id: Option<String>,
    /// The sender's `controller_quorum_voters`, normalised (`Shared::voters_text`).
    pub voters: String,
    pub body: Request,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<Nid>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A proposal forwarded to the leader; it waits at most `timeout_ms` for the commit.
    Propose { record: MetadataRecord, timeout_ms: u64 },
    /// A broker-only node asks the leader to add it as a learner at `addr`.
    Join { addr: String },
    /// A broker's heartbeat to the active controller (`lifecycle`).
    BrokerHeartbeat(Heartbeat),
    /// The receiver's view of the quorum (asked of the leader, which alone knows each voter's
    /// progress: DescribeQuorum).
    Status,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ResponseFrame {
    pub cluster_id: Option<String>,
    pub body: Response,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<Nid>, RaftError<Nid>>),
    Vote(Result<VoteResponse<Nid>, RaftError<Nid>>),
    InstallSnapshot(Result<InstallSnapshotResponse<Nid>, RaftError<Nid, InstallSnapshotError>>),
    Propose(ProposeReply),
    Join(JoinReply),
    BrokerHeartbeat(HeartbeatReply),
    Status(ControllerStatus),
    Refused(Refusal),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ProposeReply {
    Applied { index: u64 },
    Rejected { index: u64, reason: String },
    /// This node is not the leader (any more); `leader` is who it thinks is.
    NotLeader { leader: Option<Nid> },
    /// Not committed within the time asked: the outcome is unknown.
    TimedOut,
    Failed(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub enum JoinReply {
    Added,
    NotLeader { leader: Option<Nid> },
    /// Never: the node must not join (it is a voter).
    Refused(String),
    /// Not now (a membership change in progress, the leader stepping down): ask again.
    Failed(String),
}

/// Why a request was not answered.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Refusal {
    /// The receiver belongs to cluster `ours`, the sender to another.
    OtherCluster { ours: String },
    /// The receiver was started with other voters (`ours`).
    OtherVoters { ours: String },
}

/// Why an RPC got no answer.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be made: the request was not sent.
    Unreachable(std::io::Error),
    /// The connection failed after the request was (perhaps) sent.
    Network(std::io::Error),
    Refused(Refusal),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(e) => write!(f, "unreachable: {e}"),
            CallError::Network(e) => write!(f, "connection failed: {e}"),
            CallError::Refused(r) => write!(f, "refused: {r:?}"),
        }
    }
}

/// Sends `body` to `addr` over `conn` (connecting first if there is none) and waits for the
/// answer, all within `timeout`. A failed connection is dropped, so the next call reconnects.
pub async fn call(
    shared: &Shared,
    conn: &mut Option<FrameConn>,
    addr: &str,
    body: Request,
    timeout: Duration,
) -> Result<Response, CallError> {
    let frame = RequestFrame { from: shared.node_id, cluster_id: shared.known_cluster_id(), voters: shared.voters_text.clone(), body };
    let bytes = serde_json::to_vec(&frame).expect("RPC messages always serialise");
    // Taken out for the call and put back only after a whole answer: a call cancelled halfway
    // (openraft times its RPCs out by dropping them) drops the connection with it, so no later
    // call reads an answer meant for this one.
    // A kept connection the peer has closed meanwhile (it died or restarted) is replaced before
    // anything is sent: a request that fails on it would be of unknown outcome, one that cannot
    // connect at all is known not to have been sent.
    let mut c = match conn.take().filter(|c| !c.closed_by_peer()) {
        Some(c) => c,
        None => FrameConn::connect(addr, timeout).await.map_err(CallError::Unreachable)?,
    };
    let answer = match c.send(&bytes, timeout).await {
        Ok(()) => c.recv(FRAME_MAX_BYTES, timeout).await,
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(CallError::Network(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed by the peer")));
        }
        Err(e) => return Err(CallError::Network(e)),
    };
    let answer: ResponseFrame = serde_json::from_slice(&answer).map_err(|e| {
        CallError::Network(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("undecodable answer: {e}")))
    })?;
    *conn = Some(c);
    if let Response::Refused(r) = answer.body {
        shared.peer_differs(addr, &r);
        return Err(CallError::Refused(r));
    }
    if let (Some(theirs), Some(ours)) = (&answer.cluster_id, shared.known_cluster_id()) {
        if *theirs != ours {
            let r = Refusal::OtherCluster { ours: theirs.clone() };
            shared.peer_differs(addr, &r);
            return Err(CallError::Refused(r));
        }
    }
    shared.confirm(answer.cluster_id.as_deref());
    Ok(answer.body)
}

/// Connections for our own RPCs, one per peer address, reused; a call holds its peer's
/// connection for its duration, so calls to one peer take turns.
#[derive(Default)]
pub struct Pool {
    conns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<FrameConn>>>>>,
}

impl Pool {
    pub async fn call(&self, shared: &Shared, addr: &str, body: Request, timeout: Duration) -> Result<Response, CallError> {
        let slot = self.conns.lock().expect("never poisoned").entry(addr.to_string()).or_default().clone();
        let mut conn = slot.lock().await;
        call(shared, &mut conn, addr, body, timeout).await
    }
}

/// openraft's network: one [`PeerClient`] per replication stream or vote target.
pub struct Network {
    pub shared: Arc<Shared>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: Nid, node: &BasicNode) -> PeerClient {
        PeerClient { target, addr: node.addr.clone(), conn: None, shared: self.shared.clone() }
    }
}

/// The client side of one peer, with its own connection (reused from call to call).
pub struct PeerClient {
    target: Nid,
    addr: String,
    conn: Option<FrameConn>,
    shared: Arc<Shared>,
}

impl PeerClient {
    async fn rpc<E: std::error::Error>(&mut self, body: Request, option: &RPCOption) -> Result<Response, RPCError<Nid, BasicNode, E>> {
        call(&self.shared, &mut self.conn, &self.addr, body, option.hard_ttl()).await.map_err(|e| match e {
            CallError::Unreachable(e) => RPCError::Unreachable(Unreachable::new(&e)),
            CallError::Network(e) => RPCError::Network(NetworkError::new(&e)),
            // Refused: back off as from a node that is down; the node's own checks stop it.
            CallError::Refused(r) => RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!("{r:?}")))),
        })
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<Nid, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!("unexpected answer to {what}"))))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        match self.rpc(Request::AppendEntries(rpc), &option).await? {
            Response::AppendEntries(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected("AppendEntries")),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid, InstallSnapshotError>>> {
        match self.rpc(Request::InstallSnapshot(rpc), &option).await? {
            Response::InstallSnapshot(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected("InstallSnapshot")),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<Nid>,
        option: RPCOption,
    ) -> Result<VoteResponse<Nid>, RPCError<Nid, BasicNode, RaftError<Nid>>> {
        match self.rpc(Request::Vote(rpc), &option).await? {
            Response::Vote(r) => r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e))),
            _ => Err(unexpected("Vote")),
        }
    }
}

/// Accepts connections and answers each one's requests in order, until the controller's
/// runtime ends (which drops every connection task with it).
pub async fn serve(listener: FrameListener, raft: Raft<TypeConfig>, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                tokio::spawn(serve_conn(conn, peer, raft.clone(), shared.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "controller: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve_conn(mut conn: FrameConn, peer: std::net::SocketAddr, raft: Raft<TypeConfig>, shared: Arc<Shared>) {
    loop {
        let frame = match conn.recv(FRAME_MAX_BYTES, SERVER_IDLE).await {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "controller: connection closed");
                return;
            }
        };
        let request: RequestFrame = match serde_json::from_slice(&frame) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "controller: undecodable request; closing the connection");
                return;
            }
        };
        let body = answer(request, &raft, &shared).await;
        let frame = ResponseFrame { cluster_id: shared.known_cluster_id(), body };
        let bytes = serde_json::to_vec(&frame).expect("RPC messages always serialise");
        if let Err(e) = conn.send(&bytes, SERVER_SEND).await {
            tracing::debug!(%peer, error = %e, "controller: answer not sent");
            return;
        }
    }
}

async fn answer(request: RequestFrame, raft: &Raft<TypeConfig>, shared: &Shared) -> Response {
    if request.voters != shared.voters_text {
        tracing::warn!(
            from = request.from, theirs = %request.voters, ours = %shared.voters_text,
            "controller: refused a request from a node configured with other controller_quorum_voters"
        );
        return Response::Refused(Refusal::OtherVoters { ours: shared.voters_text.clone() });
    }
    if let (Some(theirs), Some(ours)) = (&request.cluster_id, shared.known_cluster_id()) {
        if *theirs != ours {
            tracing::warn!(from = request.from, theirs = %theirs, ours = %ours, "controller: refused a request from another cluster");
            shared.peer_differs(&format!("node {}", request.from), &Refusal::OtherCluster { ours: theirs.clone() });
            return Response::Refused(Refusal::OtherCluster { ours });
        }
    }
    shared.confirm(request.cluster_id.as_deref());
    match request.body {
        Request::AppendEntries(rpc) => Response::AppendEntries(raft.append_entries(rpc).await),
        Request::Vote(rpc) => Response::Vote(raft.vote(rpc).await),
        Request::InstallSnapshot(rpc) => Response::InstallSnapshot(raft.install_snapshot(rpc).await),
        Request::Propose { record, timeout_ms } => Response::Propose(propose_here(raft, record, timeout_ms).await),
        Request::Join { addr } => Response::Join(join_here(raft, shared, request.from, addr).await),
        Request::BrokerHeartbeat(hb) => Response::BrokerHeartbeat(heartbeat_here(raft, shared, hb, HEARTBEAT_COMMIT_MS).await),
        Request::Status => Response::Status(shared.status.lock().expect("never poisoned").clone()),
    }
}

/// Writes `record` through this node if it leads, waiting at most `timeout_ms` for its commit.
pub async fn propose_here(raft: &Raft<TypeConfig>, record: MetadataRecord, timeout_ms: u64) -> ProposeReply {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), raft.client_write(record)).await {
        Err(_) => ProposeReply::TimedOut,
        Ok(Ok(r)) => match r.data.rejected {
            None => ProposeReply::Applied { index: r.log_id.index },
            Some(reason) => ProposeReply::Rejected { index: r.log_id.index, reason },
        },
        Ok(Err(e)) => match e.forward_to_leader::<BasicNode>() {
            Some(f) => ProposeReply::NotLeader { leader: f.leader_id },
            None => ProposeReply::Failed(e.to_string()),
        },
    }
}

/// Adds node `from` as a learner at `addr` if this node leads (a node already there is left as
/// it is).
async fn join_here(raft: &Raft<TypeConfig>, shared: &Shared, from: Nid, addr: String) -> JoinReply {
    if shared.voter_ids.contains(&from) {
        return JoinReply::Refused(format!("node {from} is a voter; voters do not join as learners"));
    }
    let known = raft.metrics().borrow().membership_config.membership().get_node(&from).map(|n| n.addr.clone());
    if known.as_deref() == Some(addr.as_str()) {
        return JoinReply::Added;
    }
    match raft.add_learner(from, BasicNode::new(addr.clone()), false).await {
        Ok(_) => {
            tracing::info!(node = from, %addr, "controller: added a broker-only node as a learner of the metadata log");
            JoinReply::Added
        }
        Err(e) => match e.forward_to_leader::<BasicNode>() {
            Some(f) => JoinReply::NotLeader { leader: f.leader_id },
            None => JoinReply::Failed(e.to_string()),
        },
    }
}
