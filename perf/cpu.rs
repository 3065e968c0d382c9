//! Pinning the calling thread to one CPU, and its CPU time, shared by the perf examples (`ping.rs`,
//! `splice.rs`), which include this file with `#[path]`. Pinning panics if the CPU cannot be used:
//! a measurement taken on the wrong CPU is worse than none.

use std::time::Duration;

pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed by pointer with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pinning to CPU {cpu}");
    }
}

/// CPU time of the calling thread so far, user and system.
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
