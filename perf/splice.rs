//! Serving a catching-up consumer from a segment file: DMA read then send, against splice and
//! sendfile (issue 4, "zero copy ... or DMA reads into a per-core read cache, whichever measures
//! faster"). The broker cannot try splice in place (glommio 0.9 has no splice operation), so this
//! measures the data movement alone, outside the broker, with plain blocking system calls on
//! one thread: the same file, the same loopback TCP connection, one chunk in flight at a time.
//!
//! cargo run --release --example splice -- --file /work/tmp-perf/splice.dat --size-mib 2048 --passes 3
//!
//! Ways to move a chunk from the file (opened O_DIRECT, as Spate opens its segments, unless the
//! name says `cached`) to the socket:
//! - `read-copy-send`: `pread` into an aligned buffer, copy into a fresh heap buffer, `send`.
//!   This is Spate's fetch from disk today (glommio's DMA buffer cannot leave its core, so the
//!   fetch holds a copy).
//! - `read-send`: the same without the copy: `send` straight from the aligned buffer.
//! - `splice`: `splice` file -> pipe (sized to the chunk), then pipe -> socket. For an O_DIRECT
//!   file the kernel reads by DMA into pages of its own and hands those pages to TCP: no copy
//!   by the CPU on the sending side.
//! - `sendfile-direct`: `sendfile` from the O_DIRECT file (the kernel splices through a pipe of
//!   its own, 64 KiB at a time).
//! - `sendfile-cached`: `sendfile` from a buffered descriptor with the file already in the page
//!   cache: what Kafka does for a consumer whose data is still cached. Not a path Spate has (its
//!   segments bypass the page cache); here as the reference.
//!
//! A receiver thread on another CPU reads everything into one buffer and drops it, as a
//! consumer's socket would. Each pass runs every way once, in turn, so the machine's drift falls
//! on all of them alike. Reported per run: GB/s, and CPU seconds per GB of the sending thread,
//! the receiving thread and the whole machine (/proc/stat), since the kernel does some of the
//! work (DMA completions, TCP) wherever it happens to be.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;

#[path = "cpu.rs"]
mod cpu;
use cpu::{pin, thread_cpu};

#[derive(Parser, Debug)]
struct Args {
    /// The file to serve; written first (random bytes) if it is missing or shorter than --size-mib.
    #[arg(long)]
    file: PathBuf,
    #[arg(long, default_value_t = 2048)]
    size_mib: u64,
    /// Bytes moved per call (a fetch's read chunk).
    #[arg(long, default_value_t = 1024)]
    chunk_kib: usize,
    #[arg(long, default_value_t = 3)]
    passes: usize,
    /// Comma-separated subset of: read-copy-send, read-send, splice, sendfile-direct, sendfile-cached.
    #[arg(long, default_value = "read-copy-send,read-send,splice,sendfile-direct,sendfile-cached")]
    ways: String,
    #[arg(long, default_value_t = 0)]
    sender_cpu: usize,
    #[arg(long, default_value_t = 1)]
    receiver_cpu: usize,
    /// Print the runs as JSON lines as well as the table.
    #[arg(long)]
    json: bool,
}

const ALIGN: usize = 4096;
/// Every way this tool moves the file; `--ways` takes a subset.
const WAYS: [&str; 5] = ["read-copy-send", "read-send", "splice", "sendfile-direct", "sendfile-cached"];

fn main() {
    let args = Args::parse();
    let size = args.size_mib << 20;
    let chunk = args.chunk_kib << 10;
    assert!(chunk % ALIGN == 0 && chunk > 0, "--chunk-kib must be a multiple of 4");
    prepare(&args.file, size);
    let ways: Vec<&str> = args.ways.split(',').map(str::trim).collect();
    for w in &ways {
        assert!(WAYS.contains(w), "unknown way {w}: one of {}", WAYS.join(", "));
    }
    if ways.contains(&"sendfile-cached") {
        // Warm the page cache with one buffered read of the whole file.
        let mut f = std::fs::File::open(&args.file).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).unwrap() > 0 {}
    }
    println!(
        "file {} ({} MiB), chunk {} KiB, sender on CPU {}, receiver on CPU {}",
        args.file.display(),
        args.size_mib,
        args.chunk_kib,
        args.sender_cpu,
        args.receiver_cpu
    );
    println!("| pass | way | GB/s | sender CPU s/GB | receiver CPU s/GB | machine CPU s/GB |");
    println!("|---|---|---|---|---|---|");
    for pass in 1..=args.passes {
        for w in &ways {
            let r = run(w, &args, size, chunk);
            let gb = size as f64 / 1e9;
            println!(
                "| {pass} | {w} | {:.2} | {:.3} | {:.3} | {:.3} |",
                gb / r.secs,
                r.sender_cpu / gb,
                r.receiver_cpu / gb,
                r.machine_cpu / gb
            );
            if args.json {
                println!(
                    "{{\"pass\":{pass},\"way\":\"{w}\",\"bytes\":{size},\"secs\":{:.4},\"sender_cpu_s\":{:.4},\"receiver_cpu_s\":{:.4},\"machine_cpu_s\":{:.4}}}",
                    r.secs, r.sender_cpu, r.receiver_cpu, r.machine_cpu
                );
            }
        }
    }
}

struct Run {
    secs: f64,
    sender_cpu: f64,
    receiver_cpu: f64,
    machine_cpu: f64,
}

fn run(way: &str, args: &Args, size: u64, chunk: usize) -> Run {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver_cpu = args.receiver_cpu;
    let receiver = std::thread::spawn(move || {
        pin(receiver_cpu);
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        (got, thread_cpu().as_secs_f64())
    });
    pin(args.sender_cpu);
    let sock = TcpStream::connect(addr).unwrap();
    let direct = way != "sendfile-cached";
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(if direct { libc::O_DIRECT } else { 0 })
        .open(&args.file)
        .unwrap();
    let machine0 = machine_busy_secs();
    let cpu0 = thread_cpu();
    let t0 = Instant::now();
    match way {
        "read-copy-send" | "read-send" => read_send(&file, &sock, size, chunk, way == "read-copy-send"),
        "splice" => splice(&file, &sock, size, chunk),
        _ => sendfile(&file, &sock, size, chunk),
    }
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    let sender_cpu = (thread_cpu() - cpu0).as_secs_f64();
    let (got, receiver_cpu) = receiver.join().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let machine_cpu = machine_busy_secs() - machine0;
    assert_eq!(got, size, "{way}: the receiver got {got} of {size} bytes");
    Run { secs, sender_cpu, receiver_cpu, machine_cpu }
}

fn read_send(file: &std::fs::File, mut sock: &TcpStream, size: u64, chunk: usize, copy: bool) {
    let layout = std::alloc::Layout::from_size_align(chunk, ALIGN).unwrap();
    // SAFETY: the layout has a non-zero size; the buffer is freed below with the same layout.
    let ptr = unsafe { std::alloc::alloc(layout) };
    assert!(!ptr.is_null());
    // SAFETY: ptr is valid for `chunk` bytes and nothing else refers to it.
    let buf = unsafe { std::slice::from_raw_parts_mut(ptr, chunk) };
    let mut pos = 0u64;
    while pos < size {
        let want = chunk.min((size - pos) as usize);
        // SAFETY: buf is valid for `want` bytes; pread writes at most that many.
        let n = unsafe { libc::pread(file.as_raw_fd(), buf.as_mut_ptr().cast(), want, pos as i64) };
        assert!(n > 0, "pread at {pos}: {}", std::io::Error::last_os_error());
        let n = n as usize;
        if copy {
            let held = buf[..n].to_vec();
            sock.write_all(&held).unwrap();
        } else {
            sock.write_all(&buf[..n]).unwrap();
        }
        pos += n as u64;
    }
    // SAFETY: allocated above with this layout.
    unsafe { std::alloc::dealloc(ptr, layout) };
}

fn splice(file: &std::fs::File, sock: &TcpStream, size: u64, chunk: usize) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: F_SETPIPE_SZ on a pipe we own.
    let got = unsafe { libc::fcntl(wr, libc::F_SETPIPE_SZ, chunk as libc::c_int) };
    assert!(got >= chunk as i32, "F_SETPIPE_SZ {chunk}: {}", std::io::Error::last_os_error());
    let mut pos = 0i64;
    while (pos as u64) < size {
        let want = chunk.min((size - pos as u64) as usize);
        // SAFETY: plain splice between descriptors we own; `pos` is updated by the kernel.
        let n = unsafe {
            libc::splice(file.as_raw_fd(), &mut pos, wr, std::ptr::null_mut(), want, libc::SPLICE_F_MOVE)
        };
        assert!(n > 0, "splice from the file: {}", std::io::Error::last_os_error());
        let mut left = n as usize;
        while left > 0 {
            // SAFETY: as above; the pipe holds `left` bytes.
            let m = unsafe {
                libc::splice(rd, std::ptr::null_mut(), sock.as_raw_fd(), std::ptr::null_mut(), left, libc::SPLICE_F_MOVE)
            };
            assert!(m > 0, "splice to the socket: {}", std::io::Error::last_os_error());
            left -= m as usize;
        }
    }
    // SAFETY: closing the pipe we opened.
    unsafe {
        libc::close(rd);
        libc::close(wr);
    }
}

fn sendfile(file: &std::fs::File, sock: &TcpStream, size: u64, chunk: usize) {
    let mut pos = 0i64;
    while (pos as u64) < size {
        let want = chunk.min((size - pos as u64) as usize);
        // SAFETY: sendfile between descriptors we own; `pos` is updated by the kernel.
        let n = unsafe { libc::sendfile(sock.as_raw_fd(), file.as_raw_fd(), &mut pos, want) };
        assert!(n > 0, "sendfile at {pos}: {}", std::io::Error::last_os_error());
    }
}

/// Writes the file if it is missing or short, and syncs it, so reads come from the device.
fn prepare(path: &PathBuf, size: u64) {
    if std::fs::metadata(path).map(|m| m.len() >= size).unwrap_or(false) {
        return;
    }
    let mut f = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut written = 0u64;
    while written < size {
        for b in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
        written += buf.len() as u64;
    }
    f.sync_all().unwrap();
}

/// Busy CPU seconds of the whole machine so far (every CPU's time outside idle and iowait).
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = stat.lines().next().unwrap();
    let v: Vec<u64> = line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    // user nice system [idle iowait] irq softirq steal; guest time is already counted in user.
    let busy: u64 = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    busy as f64 / hz
}
