//! The broker: start-up in order, one shard per core, client connections and the API handlers.
//!
//! Start-up order (each step finishes on every core before the next starts):
//! 1. main thread: check the data directory, load topic metadata, reserve the port;
//! 2. every core: join the cross-core mesh, install the metadata image (opening and recovering the
//!    partitions it owns), then replay the committed offsets in its `__consumer_offsets` partitions;
//! 3. barrier: all cores recovered;
//! 4. every core: serve cross-core jobs, then listen (SO_REUSEPORT) and accept.

pub mod connection;
pub mod groups;
pub mod handlers;
pub mod metadata;
pub mod shard;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::config::Config;
use crate::io::file::SegmentFile;
use crate::io::mesh::{Mesh, MeshSeed};
use crate::io::net::{Listener, PortReservation};
use crate::io::{fs, rt};
use metadata::MetadataImage;
use shard::Shard;

/// Runs the broker until the process is killed.
pub fn serve(config: Config) -> anyhow::Result<()> {
    fs::prepare_data_dir(&config.data_dir).map_err(|e| {
        anyhow::anyhow!("data directory {} is not usable: {e}", config.data_dir.display())
    })?;
    let cluster_id: Arc<str> = metadata::load_or_create_cluster_id(&config.data_dir)?.into();
    let topics = metadata::load_topics(&config)?;
    handlers::init_producer_id::set_block(metadata::reserve_producer_id_block(&config.data_dir)?);
    let reservation = PortReservation::new(config.listen)
        .map_err(|e| anyhow::anyhow!("cannot bind {}: {e}", config.listen))?;
    let mut config = config;
    if config.advertised_port == 0 {
        config.advertised_port = reservation.addr.port();
    }
    config.listen = reservation.addr;
    tracing::info!(
        listen = %config.listen, cores = config.cores, data_dir = %config.data_dir.display(),
        topics = topics.len(), "starting spate {}", env!("CARGO_PKG_VERSION")
    );
    crate::metrics::init(crate::metrics::StatusInfo {
        node_id: config.node_id,
        cores: config.cores,
        listen: config.listen.to_string(),
        data_dir: config.data_dir.display().to_string(),
        config: config.broker_entries(),
    });
    let admin = crate::io::http::serve(config.admin_listen, crate::metrics::route)
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener {} (--admin-listen): {e}", config.admin_listen))?;
    tracing::info!(admin = %admin, "admin HTTP listening: /metrics /v1/health /v1/ready /v1/status /v1/config");
    let config = Arc::new(config);
    let image = Arc::new(MetadataImage::new(topics));
    let seed = MeshSeed::new(config.cores);
    let barrier = Arc::new(Barrier::new(config.cores));
    let result = rt::run_pinned(config.cores, move || {
        let (config, image, seed, barrier, cluster_id) =
            (config.clone(), image.clone(), seed.clone(), barrier.clone(), cluster_id.clone());
        async move { run_shard(config, image, seed, barrier, cluster_id).await }
    });
    drop(reservation);
    result
}

async fn run_shard(
    config: Arc<Config>,
    image: Arc<MetadataImage>,
    seed: MeshSeed,
    barrier: Arc<Barrier>,
    cluster_id: Arc<str>,
) -> anyhow::Result<()> {
    let mesh = Mesh::join(seed).await?;
    let core = mesh.core();
    crate::metrics::set_core(core);
    let shard = Shard::install(core, config.clone(), cluster_id, mesh);
    let recovered = match SegmentFile::prime_device_probe(&config.data_dir, core).await {
        Ok(()) => shard.install_image(image).await,
        Err(e) => Err(format!("probing direct I/O in {}: {e}", config.data_dir.display())),
    };
    let recovered = match recovered {
        Ok(()) => shard.groups.load(&shard).await.map(|n| {
            if n > 0 {
                tracing::info!(core, records = n, "reloaded committed offsets and groups");
            }
        }),
        Err(e) => Err(e),
    };
    // Every core reaches the barrier, even one whose recovery failed, so none waits forever.
    rt::blocking({
        let barrier = barrier.clone();
        move || {
            barrier.wait();
        }
    })
    .await;
    if let Err(e) = recovered {
        anyhow::bail!("core {core}: {e}");
    }
    shard.mesh.serve();
    let listener = Listener::bind(config.listen).map_err(|e| anyhow::anyhow!("core {core}: listening on {}: {e}", config.listen))?;
    if core == 0 {
        crate::metrics::set_ready();
        tracing::info!(listen = %config.listen, "spate ready: accepting Kafka clients");
    }
    rt::spawn(housekeeping()).detach();
    rt::spawn(async { shard::current().groups.write_metadata().await }).detach();
    loop {
        match listener.accept().await {
            Ok((r, w, peer)) => {
                tracing::debug!(%peer, core, "connection accepted");
                rt::spawn(connection::run(shard.clone(), r, w, peer)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, core, "accept failed");
                rt::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Every 100 ms: expire group sessions and finish rebalances, and apply the time part of the
/// interval flush policy (`flush.ms`) on this core's partitions. Every
/// `offsets.retention.check.interval.ms`: expire committed offsets. Every
/// `log.cleaner.backoff.ms`: compact the compacted topics.
async fn housekeeping() {
    let interval = shard::current().config.groups.offsets_retention_check_interval_ms;
    let cleaner_backoff = shard::current().config.log_cleaner_backoff_ms;
    let mut next_expiry = crate::storage::now_ms() + interval;
    let mut next_clean = crate::storage::now_ms() + cleaner_backoff;
    let mut next_publish = 0;
    loop {
        rt::sleep(Duration::from_millis(100)).await;
        shard::current().groups.tick();
        let now = crate::storage::now_ms();
        if now >= next_expiry {
            next_expiry = now + interval;
            shard::current().groups.expire_offsets(now).await;
        }
        if now >= next_publish {
            next_publish = now + 1000;
            publish_metrics();
        }
        if now >= next_clean {
            next_clean = now + cleaner_backoff;
            for log in shard::current().partitions() {
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
    let partitions = shard
        .partitions_named()
        .into_iter()
        .map(|((topic, partition), log)| {
            let o = log.offsets();
            let d = log.disk_stats();
            crate::metrics::PartitionStat {
                topic,
                partition,
                log_start: o.log_start,
                high_watermark: o.high_watermark,
                log_end: o.log_end,
                segments: d.segments,
                disk_bytes: d.bytes,
                cache_bytes: d.cache_bytes,
            }
        })
        .collect();
    let (committed, groups) = shard.groups.metrics_snapshot();
    crate::metrics::publish_core(shard.core, crate::metrics::CoreSnapshot { partitions, committed, groups });
}
