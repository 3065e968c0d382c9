//! The broker: start-up in order, one shard per core, client connections, the API handlers, and
//! shutdown in reverse order.
//!
//! Start-up order (each step finishes on every core before the next starts):
//! 1. main thread: block SIGTERM/SIGINT and start the thread that takes them (`io::signal`), run
//!    the start-up checks and take the data directory's lock and the port (`startup`), read and
//!    remove the clean-shutdown marker; with `controller_quorum_voters` set, start the
//!    controller thread (`controller`) and wait until the quorum gives this node the cluster id;
//!    load topic metadata;
//! 2. every core: join the cross-core mesh, install the metadata image (opening and recovering the
//!    partitions it owns), replay the committed offsets in its `__consumer_offsets` partitions,
//!    bind its listener (SO_REUSEPORT);
//! 3. barrier: all cores recovered (if any failed, all stop);
//! 4. every core: serve cross-core jobs, start housekeeping and the group metadata writer, accept.
//!
//! Shutdown (`shutdown`), on the first SIGTERM or SIGINT: a broker in a cluster first asks the
//! controller to fence it and waits for that, a few seconds at most (controlled shutdown, while
//! the cores still serve); then every core stops accepting and finishes
//! its in-flight requests, then stops its background work, then closes its partitions, with a
//! barrier of all cores between those phases; the main thread then stops the controller thread
//! (if any), writes the clean-shutdown marker and logs "shutdown complete". A second signal
//! exits at once.

pub mod acl;
pub mod authz;
pub mod principal;
pub mod quota;
pub mod cluster;
pub mod connection;
pub mod credentials;
pub mod fetch_sessions;
pub mod groups;
pub mod handlers;
pub mod memory;
pub mod metadata;
pub mod replication;
pub mod session;
pub mod shard;
pub mod shutdown;
pub mod startup;
pub mod transactions;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::security::SecurityProtocol;
use crate::config::Config;
use crate::controller::{Controller, ControllerConfig, ControllerError};
use crate::io::file::SegmentFile;
use crate::io::mesh::{Mesh, MeshSeed};
use crate::io::net::Listener;
use crate::io::signal::{self, Shutdown};
use crate::io::rt;
use cluster::ClusterLink;
use metadata::MetadataImage;
use shard::Shard;

/// Runs the broker until a shutdown signal; returns once every partition is closed.
pub fn serve(config: Config) -> anyhow::Result<()> {
    // First, before any other thread exists, so that every thread inherits the blocked signals.
    let shutdown = signal::install().map_err(|e| anyhow::anyhow!("installing the signal handler: {e}"))?;
    let checked = startup::check(&config)?;
    match startup::take_clean_shutdown_marker(&config.data_dir)? {
        startup::Previous::Clean => tracing::info!("previous shutdown was clean"),
        startup::Previous::Crashed => tracing::warn!(
            "previous run did not shut down cleanly: recovering after a crash (segment tails are checked, missing indexes rebuilt)"
        ),
        startup::Previous::New => tracing::info!(data_dir = %config.data_dir.display(), "new data directory"),
    }
    if let Some(tls) = &config.tls {
        crate::io::tls::init(tls)?;
    }
    let mut config = config;
    // A listener on port 0 takes the port its reservation got, and advertises it.
    for (l, r) in config.listeners.iter_mut().zip(&checked.reservations) {
        l.bind = r.addr;
        if l.advertised_port == 0 {
            l.advertised_port = r.addr.port();
        }
    }
    config.listen = config.listeners[0].bind;
    config.advertised_port = config.listeners[0].advertised_port;
    // With voters configured, the metadata quorum's controller thread starts first and the cores
    // take the cluster's id from it; without, the node keeps its own (`cluster.toml`).
    let controller = match ControllerConfig::from_config(&config) {
        Some(cc) => match start_controller(cc, &shutdown)? {
            Some(started) => Some(started),
            None => return Ok(()),
        },
        None => None,
    };
    let cluster_id: Arc<str> = match &controller {
        Some((_, id)) => id.as_str().into(),
        None => metadata::load_or_create_cluster_id(&config.data_dir)?.into(),
    };
    // A single node's topics and broker configs are its files; a cluster's are the metadata
    // log's, the files only saying which topic a directory's data belongs to (`cluster`).
    let (image, link) = match &controller {
        Some((c, _)) => {
            let handle = c.handle();
            let mut local = cluster::read_local_topics(&config.data_dir)?;
            let (_, meta) = handle.metadata();
            let image = cluster::prepare_sync(&config, &mut local, cluster::image_of(&config, &meta))?;
            handlers::init_producer_id::set_block(cluster::reserve_producer_id_block(&handle, config.node_id)?);
            let link = Arc::new(ClusterLink::new(handle, local, &image));
            (image, Some(link))
        }
        None => {
            let broker_configs = metadata::load_broker_configs(&config)?;
            let topics = metadata::load_topics(&config, &broker_configs)?;
            handlers::init_producer_id::set_block(metadata::reserve_producer_id_block(&config.data_dir)?);
            let mut image = MetadataImage::new(config.node_id, topics, broker_configs);
            image.credentials = Arc::new(credentials::load(&config.data_dir)?);
            image.acls = Arc::new(acl::Acls::from_records(
                &authz::load(&config.data_dir)?,
                config.super_users.clone(),
                config.allow_everyone_if_no_acl_found,
            ));
            image.quotas = Arc::new(quota::load(&config.data_dir)?);
            (image, None)
        }
    };
    tracing::info!(
        listen = %config.listen, cores = config.cores, data_dir = %config.data_dir.display(),
        topics = image.topics.len(), "starting spate {}", env!("CARGO_PKG_VERSION")
    );
    crate::metrics::init(crate::metrics::StatusInfo {
        node_id: config.node_id,
        cores: config.cores,
        listen: config.listen.to_string(),
        data_dir: config.data_dir.display().to_string(),
    });
    crate::metrics::set_config(config.effective_broker_entries(&image.broker));
    if let Some((c, _)) = &controller {
        crate::metrics::set_controller(c.handle());
    }
    // A broker in a cluster tells the controller it is going before its cores stop serving.
    let stop_serving = match &controller {
        Some((c, _)) if config.quorum.as_ref().is_some_and(|q| q.roles.broker) => {
            let handle = c.handle();
            shutdown
                .after("spate-controlled-shutdown", move || controlled_shutdown(&handle))
                .map_err(|e| anyhow::anyhow!("starting the controlled-shutdown thread: {e}"))?
        }
        _ => shutdown.clone(),
    };
    let access = crate::io::http::Access { tls: config.admin_tls, token: config.admin_token.clone() };
    let admin = crate::io::http::serve(config.admin_listen, access, crate::metrics::route)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener {} (--admin-listen): {e}", config.admin_listen))?;
    tracing::info!(admin = %admin, "admin HTTP listening: /metrics /v1/health /v1/ready /v1/status /v1/config");
    let data_dir = config.data_dir.clone();
    let config = Arc::new(config);
    let image = Arc::new(image);
    let seed = Arc::new(MeshSeed::new(config.cores));
    let all = Arc::new(AllCores::new(config.cores));
    let result = rt::run_pinned(config.cores, move || {
        let (config, image, seed, all, cluster_id, link, shutdown) =
            (config.clone(), image.clone(), seed.clone(), all.clone(), cluster_id.clone(), link.clone(), stop_serving.clone());
        async move {
            let result = run_shard(config, image, seed, all, cluster_id, link, shutdown).await;
            // Drop the core's shard now, not in the thread's teardown (see `shard::uninstall`).
            shard::uninstall();
            result
        }
    });
    drop(checked.reservations);
    result?;
    if let Some((controller, _)) = controller {
        controller.stop().map_err(|e| anyhow::anyhow!("the controller thread: {e}"))?;
        tracing::info!("controller thread stopped");
    }
    startup::mark_clean_shutdown(&data_dir)?;
    tracing::info!("shutdown complete");
    drop(checked.lock);
    Ok(())
}

/// Starts the controller thread and waits, with a progress line every few seconds, until this
/// node knows the cluster's id. None: a shutdown signal came first.
fn start_controller(cc: ControllerConfig, shutdown: &Shutdown) -> anyhow::Result<Option<(Controller, String)>> {
    let voters: Vec<String> = cc.voters.iter().map(|v| format!("{}@{}", v.id, v.addr)).collect();
    tracing::info!(
        node_id = cc.node_id, listen = %cc.listen, voters = %voters.join(","),
        role = if cc.voter { "voter" } else { "learner (broker only)" },
        "starting the metadata quorum's controller thread"
    );
    let controller = Controller::start(cc)?;
    let waited = controller.wait_cluster_id(
        CONTROLLER_WAIT,
        Duration::from_secs(5),
        |s| {
            tracing::info!(
                role = ?s.role, leader = ?s.leader, term = s.term, committed = ?s.committed,
                "waiting for the metadata quorum (a majority of the voters must be up) to give this node the cluster id"
            )
        },
        || shutdown.is_requested(),
    );
    match waited {
        Ok(id) => {
            tracing::info!(cluster_id = %id, "metadata quorum joined");
            Ok(Some((controller, id)))
        }
        Err(ControllerError::Stopped) if shutdown.is_requested() => {
            tracing::info!("shutdown requested before the metadata quorum formed");
            controller.stop().map_err(anyhow::Error::msg)?;
            Ok(None)
        }
        Err(e) => {
            let _ = controller.stop();
            Err(anyhow::anyhow!("cannot join the metadata quorum: {e}"))
        }
    }
}

/// Controlled shutdown (KRaft's, in spirit): asks the active controller to fence this broker
/// and waits for it, at most `CONTROLLED_SHUTDOWN_WAIT_MS`; the cores go on serving meanwhile.
/// Without a quorum it gives up after that time and the shutdown goes on: the controller fences
/// the broker when its session expires instead.
fn controlled_shutdown(handle: &crate::controller::ControllerHandle) {
    let wait = Duration::from_millis(crate::config::limits::CONTROLLED_SHUTDOWN_WAIT_MS);
    tracing::info!(wait_ms = wait.as_millis() as u64, "controlled shutdown: telling the controller this broker is going");
    let started = std::time::Instant::now();
    match handle.controlled_shutdown(wait) {
        Ok(()) => tracing::info!(took_ms = started.elapsed().as_millis() as u64, "controlled shutdown: the controller fenced this broker"),
        Err(e) => {
            let why = match e {
                ControllerError::Timeout { waited_ms, leader } => format!(
                    "no answer within {waited_ms} ms (last known leader: {}); a majority of the voters may be down",
                    leader.map_or("none".into(), |l| l.to_string())
                ),
                e => e.to_string(),
            };
            tracing::warn!(
                error = %why,
                "controlled shutdown: the controller did not confirm; shutting down anyway (it fences this broker when its session times out)"
            )
        }
    }
}

/// How long start-up waits for the metadata quorum: as long as the operator takes to start a
/// majority of the voters (a progress line says what it waits for).
const CONTROLLER_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The barriers every core passes, in order.
#[derive(Debug, Clone, Copy)]
pub enum Round {
    /// Every core recovered its partitions (or failed to) and bound its listener.
    Started = 1,
    /// Shutdown phase 1 done: no client request runs any more.
    Drained = 2,
    /// Shutdown phase 2 done: no background task appends any more.
    Quiet = 3,
}

/// A barrier of all cores that waits on the core's timer rather than a thread, so the core's other
/// tasks (cross-core jobs, file work on its helper thread) go on while it waits. Every core passes
/// the rounds in order. Shared by all cores (atomics only).
pub struct AllCores {
    cores: usize,
    arrived: AtomicUsize,
    failed: AtomicBool,
}

impl AllCores {
    pub fn new(cores: usize) -> AllCores {
        AllCores { cores, arrived: AtomicUsize::new(0), failed: AtomicBool::new(false) }
    }

    pub async fn wait(&self, round: Round) {
        self.arrived.fetch_add(1, Ordering::AcqRel);
        while self.arrived.load(Ordering::Acquire) < round as usize * self.cores {
            rt::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Marks start-up as failed on some core; every core stops after [`Round::Started`].
    pub fn fail(&self) {
        self.failed.store(true, Ordering::Release);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}

async fn run_shard(
    config: Arc<Config>,
    image: Arc<MetadataImage>,
    seed: Arc<MeshSeed>,
    all: Arc<AllCores>,
    cluster_id: Arc<str>,
    link: Option<Arc<ClusterLink>>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mesh = Mesh::join(&seed).await?;
    drop(seed);
    let core = mesh.core();
    crate::metrics::set_core(core);
    let shard = Shard::install(core, config.clone(), cluster_id, link, mesh);
    let started = recover_and_bind(&shard, image).await;
    if started.is_err() {
        all.fail();
    }
    // Every core reaches the barrier, even one whose start failed, so none waits forever.
    all.wait(Round::Started).await;
    let listeners = match started {
        Err(e) => anyhow::bail!("core {core}: {e}"),
        Ok(_) if all.failed() => return Ok(()),
        Ok(listeners) => listeners,
    };
    shard.mesh.serve();
    if core == 0 {
        crate::metrics::set_ready();
        let listening: Vec<String> = config.listeners.iter().map(|l| format!("{}://{}", l.name(), l.bind)).collect();
        tracing::info!(listeners = %listening.join(","), "spate ready: accepting Kafka clients");
    }
    let housekeeping = rt::spawn(housekeeping());
    // In a cluster, core 0 installs every metadata state the quorum applies; dropped (so
    // cancelled) when serving stops.
    let follow = (core == 0 && shard.cluster.is_some()).then(|| rt::spawn(async { shard::current().follow_cluster().await }));
    let group_writer = rt::spawn(async { shard::current().groups.write_metadata().await });
    let rebalance = (core == 0 && shard.cluster.is_some() && config.auto_leader_rebalance)
        .then(|| rt::spawn(async { shard::current().rebalance_leaders().await }));
    // One accepting task per listener; dropped (so cancelled) when serving stops.
    let accepting: Vec<_> = listeners
        .into_iter()
        .zip(config.listeners.iter().map(|l| l.protocol))
        .map(|(listener, protocol)| rt::spawn(accept(listener, protocol, core)))
        .collect();
    shutdown.requested().await;
    crate::metrics::set_stopping();
    drop(accepting);
    drop(follow);
    drop(rebalance);
    shutdown::run_core(&shard, &all, housekeeping, group_writer).await
}

/// Accepts one listener's connections on this core, each served by its own task.
async fn accept(listener: Listener, protocol: SecurityProtocol, core: usize) {
    loop {
        match listener.accept().await {
            Ok((conn, peer)) => {
                tracing::debug!(%peer, core, listener = protocol.name(), "connection accepted");
                rt::spawn(connection::run(shard::current(), conn, peer, protocol)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, core, listener = protocol.name(), "accept failed");
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Opens and recovers this core's partitions, reloads its groups, and binds its listeners.
async fn recover_and_bind(shard: &Shard, image: Arc<MetadataImage>) -> Result<Vec<Listener>, String> {
    let (core, config) = (shard.core, &shard.config);
    SegmentFile::prime_device_probe(&config.data_dir, core)
        .await
        .map_err(|e| format!("probing direct I/O in {}: {e}", config.data_dir.display()))?;
    // Opening the partitions reloads the groups of the `__consumer_offsets` ones.
    shard.install_image(image).await?;
    config
        .listeners
        .iter()
        .map(|l| Listener::bind(l.bind).map_err(|e| format!("listening on {}://{}: {e}", l.name(), l.bind)))
        .collect()
}

/// Every 100 ms: expire group sessions and finish rebalances, and apply the time part of the
/// interval flush policy (`flush.ms`) on this core's partitions. Every
/// `offsets.retention.check.interval.ms`: expire committed offsets. Every
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`: abort timed-out transactions.
/// Every `transaction.remove.expired.transaction.cleanup.interval.ms`: forget idle
/// transactional ids. Every
/// `log.retention.check.interval.ms`: roll active segments older than `segment.ms` and delete
/// the segments retention no longer keeps. Every `log.cleaner.backoff.ms`: compact the
/// compacted topics. Ends at its next turn once shutdown stops background work (a compaction
/// pass in progress finishes first).
async fn housekeeping() {
    let interval = shard::current().config.groups.offsets_retention_check_interval_ms;
    let cleaner_backoff = shard::current().config.log_cleaner_backoff_ms;
    let retention_check = shard::current().config.log_retention_check_interval_ms;
    let mut next_expiry = crate::storage::now_ms() + interval;
    let mut next_clean = crate::storage::now_ms() + cleaner_backoff;
    let mut next_retention = crate::storage::now_ms() + retention_check;
    let txn_check = shard::current().config.transaction_timeout_check_interval_ms;
    let mut next_txn_check = crate::storage::now_ms() + txn_check;
    let id_check = shard::current().config.transactional_id_expiry_check_interval_ms;
    let mut next_id_check = crate::storage::now_ms() + id_check;
    let mut next_publish = 0;
    while !shard::current().lifecycle.is_background_stopping() {
        rt::sleep(Duration::from_millis(100)).await;
        shard::current().groups.tick();
        let s = shard::current();
        s.replication.tick(&s);
        let now = crate::storage::now_ms();
        if now >= next_expiry {
            next_expiry = now + interval;
            shard::current().groups.expire_offsets(now).await;
        }
        if now >= next_txn_check {
            next_txn_check = now + txn_check;
            shard::current().transactions.abort_expired().await;
        }
        if now >= next_id_check {
            next_id_check = now + id_check;
            let expiration = shard::current().config.transactional_id_expiration_ms;
            shard::current().transactions.expire_ids(expiration).await;
        }
        if now >= next_publish {
            next_publish = now + 1000;
            publish_metrics();
            // A renewed certificate: new connections get it (a few stat(2) calls a second).
            if s.core == 0 && s.config.tls.is_some() {
                crate::io::tls::reload_if_changed();
            }
        }
        if now >= next_retention {
            next_retention = now + retention_check;
            for log in shard::current().partitions() {
                if shard::current().lifecycle.is_background_stopping() {
                    break;
                }
                if let Err(e) = log.roll_if_due().await {
                    tracing::error!(dir = %log.dir().display(), error = %e, "rolling an old segment failed");
                }
                if let Err(e) = log.enforce_retention(now).await {
                    tracing::error!(dir = %log.dir().display(), error = %e, "retention failed; the segments are left as they were");
                }
            }
        }
        if now >= next_clean {
            next_clean = now + cleaner_backoff;
            for log in shard::current().partitions() {
                if shard::current().lifecycle.is_background_stopping() {
                    break;
                }
                if !log.config().cleanup_policy.contains("compact") {
                    continue;
                }
                if let Err(e) = log.compact(now).await {
                    tracing::error!(dir = %log.dir().display(), error = %e, "compaction failed; the segment is left as it was");
                }
            }
        }
        for log in shard::current().partitions() {
            if let Err(e) = log.flush_if_due().await {
                tracing::error!(dir = %log.dir().display(), error = %e, "interval flush failed");
            }
        }
    }
}

/// This core's partitions and groups, for the metrics gauges (see [`crate::metrics`]).
fn publish_metrics() {
    let shard = shard::current();
    let image = shard.image();
    let partitions = shard
        .partitions_named()
        .into_iter()
        .map(|((topic, partition), log)| {
            let o = log.offsets();
            let d = log.disk_stats();
            crate::metrics::PartitionStat {
                log_start: o.log_start,
                high_watermark: o.high_watermark,
                log_end: o.log_end,
                segments: d.segments,
                disk_bytes: d.bytes,
                cache_bytes: d.cache_bytes,
                last_stable: log.last_stable_offset(),
                replication: shard.replication.stat(&shard, &image, &topic, partition),
                topic,
                partition,
            }
        })
        .collect();
    let (committed, groups) = shard.groups.metrics_snapshot();
    let (txn_open, txns) = shard.transactions.metrics_snapshot();
    let (io_in_flight, io_in_flight_peak) = crate::io::file::ops_in_flight();
    let (fetch_sessions, fetch_session_partitions) = shard.fetch_sessions.borrow().sizes();
    crate::metrics::publish_core(
        shard.core,
        crate::metrics::CoreSnapshot {
            partitions,
            committed,
            groups,
            request_bytes: shard.memory.used() as u64,
            request_bytes_peak: shard.memory.take_peak() as u64,
            io_in_flight: io_in_flight as u64,
            io_in_flight_peak: io_in_flight_peak as u64,
            fetch_sessions,
            fetch_session_partitions,
            txn_open,
            txn_committed: txns.committed,
            txn_aborted: txns.aborted,
            txn_timed_out: txns.timed_out,
            // Core 0 counts the cluster's partitions led by nobody (every core sees one image).
            offline_partitions: (shard.core == 0 && image.cluster.is_some())
                .then(|| image.topics.values().flat_map(|t| t.placement.iter()).filter(|p| p.leader == -1).count()),
        },
    );
}
