//! Operating the broker: graceful shutdown on SIGTERM (nothing acknowledged lost, a clean next
//! start), the second signal, the shutdown grace period, the start-up checks and their messages,
//! and `spate config print-defaults`.

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{consume, producer, Broker, Raw};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, GroupId, JoinGroupRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::Offset;

/// What a start after a clean shutdown must not log: tail repair or index rebuilds.
const RECOVERY_WORK: &[&str] = &["truncating", "rebuilding", "does not match", "removing segment", "not closed cleanly"];

fn high_watermark(bootstrap: &str, topic: &str, partition: i32) -> i64 {
    common::consumer(bootstrap).fetch_watermarks(topic, partition, Duration::from_secs(20)).unwrap().1
}

/// No log level turns a clean shutdown into an abort. At debug and below, a core that dropped its
/// partitions while its thread was torn down logged (glommio, for each segment file dropped
/// open) after the log's own thread-locals were gone: "thread local panicked on drop, aborting".
/// Several segments per partition, a group member connected and a producer running at SIGTERM.
#[test]
fn sigterm_at_debug_and_trace_logging_exits_cleanly() {
    // Debug is the level that aborted: at trace, glommio logs on the core's thread before the
    // shard is installed, which happened to order the thread-locals' teardown safely.
    for level in ["debug", "trace"] {
        shutdown_logging_at(level);
    }
}

fn shutdown_logging_at(level: &str) {
    let mut broker = Broker::start_logging(level, &["--segment-bytes", "16384", "--num-partitions", "4"]);
    // Batches must fit in a segment (RECORD_LIST_TOO_LARGE otherwise, as in Kafka).
    let p = producer(&broker.bootstrap(), &[("acks", "all"), ("batch.size", "8000")]);
    let value = vec![b'v'; 100];
    for i in 0..1500 {
        p.send(BaseRecord::to("traced").key(&format!("k{i}")).payload(&value)).unwrap();
    }
    common::flush(&p);
    // Its short session also bounds its close, which waits for the session after the broker is gone.
    let c = common::group_consumer(&broker.bootstrap(), "traced-group", &[]);
    c.subscribe(&["traced"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut read = 0;
    while read < 100 {
        assert!(Instant::now() < deadline, "the group member read {read} records");
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            read += 1;
        }
    }
    for i in 0..500 {
        p.send(BaseRecord::to("traced").key(&format!("late{i}")).payload(&value)).unwrap();
    }
    let status = broker.terminate();
    // The broker is gone: drop what the clients still hold rather than retry it for a minute.
    p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    drop(p);
    drop(c);
    let log = broker.log();
    let tail = &log[log.floor_char_boundary(log.len().saturating_sub(4000))..];
    assert!(!log.contains("panicked"), "RUST_LOG={level}: {tail}");
    assert_eq!(status.code(), Some(0), "RUST_LOG={level}: {tail}");
    assert!(log.contains("shutdown complete"));
}

#[test]
fn sigterm_under_acks_all_load_loses_nothing_and_the_next_start_is_clean() {
    let mut broker = Broker::start(&["--num-partitions", "4"]);
    let p = Arc::new(producer(&broker.bootstrap(), &[("acks", "all"), ("linger.ms", "1"), ("message.timeout.ms", "5000")]));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = common::spawn_numbered_writer(p.clone(), "graceful", 4, stop.clone());
    while p.context().ok.lock().unwrap().len() < 10_000 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = broker.terminate();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(status.code(), Some(0), "log:\n{}", broker.log());
    let log = broker.log();
    assert!(log.contains("shutting down gracefully") && log.contains("shutdown complete"), "{log}");
    assert!(broker.data_dir().join("clean-shutdown").exists());
    let _ = p.flush(Duration::from_secs(10));
    let acked = p.context().ok.lock().unwrap().clone();
    assert!(acked.len() >= 10_000);

    broker.restart();
    let log = broker.log();
    assert!(log.contains("previous shutdown was clean"), "{log}");
    for work in RECOVERY_WORK {
        assert!(!log.contains(work), "a start after a clean shutdown logged {work:?}:\n{log}");
    }
    assert!(!broker.data_dir().join("clean-shutdown").exists(), "the marker is removed at start");
    for part in 0..4 {
        let hw = high_watermark(&broker.bootstrap(), "graceful", part);
        let recs = consume(&broker.bootstrap(), "graceful", &[part], Offset::Beginning, hw as usize);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
        }
        for (_, off, _) in acked.iter().filter(|a| a.0 == part) {
            assert!(*off < hw, "acknowledged offset {off} of partition {part} lost (high watermark {hw})");
            let v = String::from_utf8(recs[*off as usize].value.clone().unwrap()).unwrap();
            let n: u64 = v[1..].parse().unwrap();
            assert_eq!(n % 4, part as u64, "record {v} in the wrong partition");
        }
    }
}

/// A JoinGroup (v3, no KIP-394 round trip) that long-polls for the initial rebalance delay.
fn send_long_join(raw: &mut Raw) {
    let req = JoinGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_static_str("slow-group")))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(120_000)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))]);
    raw.send(ApiKey::JoinGroup, 3, &req);
    // Let the broker read it and start waiting.
    std::thread::sleep(Duration::from_millis(500));
}

#[test]
fn a_second_signal_during_shutdown_exits_at_once() {
    let mut broker = Broker::start(&["--group-initial-rebalance-delay-ms", "60000", "--shutdown-grace-ms", "60000"]);
    let mut raw = Raw::connect(broker.port);
    send_long_join(&mut raw);
    broker.signal(libc::SIGTERM);
    // The join holds the shutdown in its grace period.
    assert!(broker.wait_exit(Duration::from_secs(1)).is_none(), "exited although a request was in flight");
    assert!(broker.log().contains("finishing in-flight requests"), "{}", broker.log());
    let sent = Instant::now();
    broker.signal(libc::SIGTERM);
    let status = broker.wait_exit(Duration::from_secs(5)).expect("the second SIGTERM must exit at once");
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "log:\n{}", broker.log());
    assert!(broker.log().contains("second signal during shutdown"), "{}", broker.log());
    assert!(!broker.data_dir().join("clean-shutdown").exists());
    broker.restart();
    assert!(broker.log().contains("recovering after a crash"), "{}", broker.log());
}

#[test]
fn requests_still_running_after_the_grace_period_are_cut_and_the_shutdown_stays_clean() {
    let mut broker = Broker::start(&["--group-initial-rebalance-delay-ms", "60000", "--shutdown-grace-ms", "1000"]);
    let mut raw = Raw::connect(broker.port);
    send_long_join(&mut raw);
    let start = Instant::now();
    let status = broker.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", broker.log());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    assert!(broker.log().contains("after the shutdown grace period"), "{}", broker.log());
    assert!(raw.read_frame().is_none(), "the cut connection is closed without an answer");
    broker.restart();
    assert!(broker.log().contains("previous shutdown was clean"), "{}", broker.log());
}

#[test]
fn a_long_polling_fetch_is_answered_at_once_on_shutdown() {
    let mut broker = Broker::start(&[]);
    let p = producer(&broker.bootstrap(), &[("acks", "all")]);
    p.send(BaseRecord::<(), _>::to("tail").payload("one").partition(0)).unwrap();
    common::flush(&p);
    drop(p);
    let mut raw = Raw::connect(broker.port);
    let req = FetchRequest::default().with_max_wait_ms(30_000).with_min_bytes(1).with_max_bytes(1 << 20).with_topics(vec![
        FetchTopic::default().with_topic(TopicName(StrBytes::from_static_str("tail"))).with_partitions(vec![
            FetchPartition::default().with_partition(0).with_fetch_offset(1).with_partition_max_bytes(1 << 20),
        ]),
    ]);
    raw.send(ApiKey::Fetch, 11, &req);
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let status = broker.terminate();
    assert_eq!(status.code(), Some(0), "log:\n{}", broker.log());
    assert!(start.elapsed() < Duration::from_secs(5), "shutdown waited for the long poll: {:?}", start.elapsed());
    let r: FetchResponse = raw.receive(ApiKey::Fetch, 11);
    let part = &r.responses[0].partitions[0];
    assert_eq!((part.error_code, part.high_watermark), (0, 1));
}

/// A filesystem mounted on a temp dir for one test, unmounted on drop. `None`, with the reason
/// printed, where the test may not mount (not root, or in a container without the capability).
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(fstype: &str, options: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount").args(["-t", fstype, "-o", options, fstype]).arg(dir.path()).output();
        match out {
            Ok(o) if o.status.success() => Some(Mount { dir }),
            Ok(o) => {
                eprintln!("skipped: cannot mount {fstype} here: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Starts `spate serve` on `data_dir` (one core, a free port unless `extra` has `--listen`) with
/// `extra`, which must fail; returns its stderr.
fn serve_failing(data_dir: &Path, extra: &[&str], setup: impl FnOnce(&mut Command)) -> String {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["serve", "--cores", "1", "--data-dir", data_dir.to_str().unwrap()];
    if !extra.contains(&"--listen") {
        args.extend(["--listen", listen.as_str()]);
    }
    args.extend_from_slice(extra);
    Broker::run_failing_with(&args, setup)
}

#[test]
fn a_data_dir_that_is_a_file_or_read_only_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("data");
    std::fs::write(&file, b"not a directory").unwrap();
    let err = serve_failing(&file, &[], |_| {});
    assert!(err.contains(&format!("data directory {} is not a directory", file.display())), "{err}");
    assert!(err.contains("--data-dir"), "{err}");

    // chmod does not stop root; a read-only mount does.
    let Some(ro) = Mount::new("tmpfs", "ro,size=1m") else { return };
    let err = serve_failing(ro.path(), &[], |_| {});
    assert!(err.contains(&format!("data directory {} is on a read-only filesystem", ro.path().display())), "{err}");
}

fn accepts_o_direct(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("o-direct-probe");
    let ok = std::fs::OpenOptions::new().write(true).create(true).custom_flags(libc::O_DIRECT).open(&probe).is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

#[test]
fn a_filesystem_without_o_direct_is_refused() {
    // tmpfs refuses O_DIRECT before Linux 6.6 and accepts it since; ramfs always refuses it.
    let mut checked = 0;
    for fstype in ["tmpfs", "ramfs"] {
        let Some(m) = Mount::new(fstype, "mode=0755") else { return };
        if accepts_o_direct(m.path()) {
            eprintln!("{fstype} accepts O_DIRECT on this kernel; nothing to refuse there");
            continue;
        }
        let err = serve_failing(m.path(), &[], |_| {});
        assert!(err.contains(&format!("data directory {} is on a filesystem without O_DIRECT", m.path().display())), "{err}");
        checked += 1;
    }
    assert!(checked > 0, "no filesystem without O_DIRECT to test with");
}

#[test]
fn a_memlock_limit_too_low_for_glommio_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let err = serve_failing(&tmp.path().join("data"), &[], |cmd| {
        // SAFETY: setrlimit is async-signal-safe and touches only this child's limits.
        unsafe {
            cmd.pre_exec(|| {
                let r = libc::rlimit { rlim_cur: 256 * 1024, rlim_max: 256 * 1024 };
                if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    });
    assert!(err.contains("RLIMIT_MEMLOCK") && err.contains("is 256 KiB") && err.contains("at least 512 KiB"), "{err}");
    assert!(err.contains("ulimit -l 512"), "{err}");
}

/// Makes `io_uring_setup` fail with EPERM in this process from now on, as Docker's default
/// seccomp profile (and many hardened hosts) do, with a seccomp filter. Runs in the child between
/// fork and exec: only prctl calls on data prepared on the stack.
fn block_io_uring_with_seccomp() -> std::io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter { code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16, jt, jf, k };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let mut filter = [
        stmt(load, 4), // seccomp_data.arch
        jeq(ARCH, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0), // seccomp_data.nr
        jeq(libc::SYS_io_uring_setup as u32, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_mut_ptr() };
    // SAFETY: prctl with a filter that lives until the call returns (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn io_uring_blocked_by_seccomp_is_refused_with_what_to_allow() {
    let tmp = tempfile::tempdir().unwrap();
    let err = serve_failing(&tmp.path().join("data"), &[], |cmd| {
        // SAFETY: the hook only calls prctl (see block_io_uring_with_seccomp).
        unsafe {
            cmd.pre_exec(block_io_uring_with_seccomp);
        }
    });
    assert!(err.contains("io_uring is not permitted") && err.contains("seccomp"), "{err}");
    assert!(err.contains("io_uring_setup, io_uring_enter and io_uring_register"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_port_in_use_is_refused_even_by_another_spate() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = serve_failing(&tmp.path().join("a"), &["--listen", &addr], |_| {});
    assert!(err.contains(&format!("port {addr} is already in use")), "{err}");
    drop(taken);
    // Our sockets set SO_REUSEPORT; a second broker must not quietly share the first one's port.
    let broker = Broker::start(&[]);
    let err = serve_failing(&tmp.path().join("b"), &["--listen", &broker.bootstrap()], |_| {});
    assert!(err.contains(&format!("port {} is already in use", broker.bootstrap())), "{err}");
}

#[test]
fn a_second_broker_on_one_data_dir_is_refused_and_a_stale_lock_is_not() {
    let mut broker = Broker::start(&[]);
    let err = serve_failing(&broker.data_dir(), &[], |_| {});
    let want = format!("data directory {} is in use by another Spate (pid {}", broker.data_dir().display(), broker.pid());
    assert!(err.contains(&want), "{err}");
    // kill -9 leaves the lock file behind, with its lock released by the kernel.
    broker.kill9();
    assert!(broker.data_dir().join(".lock").exists());
    broker.restart();
    let pid = std::fs::read_to_string(broker.data_dir().join(".lock")).unwrap();
    assert_eq!(pid.trim(), broker.pid().to_string());
}

#[test]
fn printed_toml_defaults_start_a_broker_and_bad_values_name_their_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_spate")).args(["config", "print-defaults", "--format", "toml"]).output().unwrap();
    assert!(out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    let defaults = tmp.path().join("defaults.toml");
    std::fs::write(&defaults, &out.stdout).unwrap();
    // The harness's --listen and --data-dir flags win over the file's.
    let broker = Broker::start(&["--config", defaults.to_str().unwrap()]);
    drop(broker);

    let data = tmp.path().join("data");
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "segment_bytes = -1\n").unwrap();
    let err = serve_failing(&data, &["--config", bad.to_str().unwrap()], |_| {});
    assert!(err.contains(&format!("segment_bytes = -1 (in config file {}) is out of range", bad.display())), "{err}");
    let err = serve_failing(&data, &["--segment-bytes", "-1"], |_| {});
    assert!(err.contains("segment_bytes = -1 (from --segment-bytes or SPATE_SEGMENT_BYTES) is out of range"), "{err}");
    let err = serve_failing(&data, &[], |cmd| {
        cmd.env("SPATE_SHUTDOWN_GRACE_MS", "-5");
    });
    assert!(err.contains("shutdown_grace_ms = -5"), "{err}");
    std::fs::write(&bad, "bogus = 1\n").unwrap();
    let err = serve_failing(&data, &["--config", bad.to_str().unwrap()], |_| {});
    assert!(err.contains("bogus"), "{err}");
    assert!(!data.exists(), "refused settings must not touch the data directory");
}
