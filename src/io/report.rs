//! Output files and host facts for the client programs' reports (`spate bench sweep` writes its
//! CSV, markdown and SVG files here), not for the broker: plain blocking writes, no fsync (a report
//! is rewritten, not recovered), and the host's name and kernel from uname(2).

use std::io;
use std::path::{Path, PathBuf};

/// Creates `dir` and its parents if missing.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Writes `data` to `dir/name` (replacing it) through a temporary file and a rename, so a reader
/// never sees half a file. Returns the path written.
pub fn write(dir: &Path, name: &str, data: &[u8]) -> io::Result<PathBuf> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// What uname(2) says about this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The node name.
    pub name: String,
    /// `sysname release version machine`, as `uname -srvm` prints it.
    pub kernel: String,
}

/// This machine's name and kernel; `unknown` where uname fails (it does not on Linux).
pub fn host() -> Host {
    // SAFETY: utsname is plain bytes, zeroed is a valid value, and uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return Host { name: "unknown".into(), kernel: "unknown".into() };
    }
    let field = |f: &[libc::c_char]| -> String {
        let bytes: Vec<u8> = f.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Host {
        name: field(&u.nodename),
        kernel: format!("{} {} {} {}", field(&u.sysname), field(&u.release), field(&u.version), field(&u.machine)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_the_kernel() {
        let h = host();
        assert!(h.kernel.starts_with("Linux "), "{h:?}");
        assert!(!h.name.is_empty());
    }

    #[test]
    fn write_replaces_whole_files() {
        let dir = std::env::temp_dir().join(format!("spate-report-test-{}", std::process::id()));
        create_dir_all(&dir).unwrap();
        write(&dir, "a.txt", b"first, longer").unwrap();
        let p = write(&dir, "a.txt", b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
