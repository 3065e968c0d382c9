//! Pinning the calling thread to one CPU, shared by the perf examples (`ping.rs`, `splice.rs`),
//! which include this file with `#[path]`. Panics if the CPU cannot be used: a measurement taken
//! on the wrong CPU is worse than none.

pub fn pin(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, passed by pointer with its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set), 0, "pinning to CPU {cpu}");
    }
}
