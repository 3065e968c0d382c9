//! Style and documentation checks, run as ordinary tests: the README's API table matches what
//! ApiVersions advertises, its configuration table matches the settings table in the code, every
//! source file opens with a `//!` doc, no debugging leftovers, and the module boundaries
//! ARCHITECTURE.md states.

use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn readme_api_table_matches_api_versions() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("<!-- api-table:begin -->").expect("table start marker");
    let end = readme.find("<!-- api-table:end -->").expect("table end marker");
    let rows: Vec<(i16, i16, i16)> = readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| API"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let (min, max) = cells[3].split_once('-').expect("versions as min-max");
            (cells[2].parse().unwrap(), min.parse().unwrap(), max.parse().unwrap())
        })
        .collect();
    let table: Vec<(i16, i16, i16)> =
        spate::server::handlers::SUPPORTED.iter().map(|s| (s.key as i16, s.min, s.max)).collect();
    assert_eq!(rows, table, "README's API table disagrees with handlers::SUPPORTED");
}

#[test]
fn readme_configuration_table_matches_the_settings() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let begin = "<!-- config-table:begin -->\n";
    let start = readme.find(begin).expect("config table start marker") + begin.len();
    let end = readme.find("<!-- config-table:end -->").expect("config table end marker");
    assert_eq!(
        &readme[start..end],
        spate::config::render_markdown(),
        "README's configuration table disagrees with config::SETTINGS; regenerate it with \
         `cargo run -- config print-defaults --markdown` and paste it between the markers"
    );
}

#[test]
fn every_source_file_is_documented_and_clean() {
    let mut files = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for d in ["src", "tests", "perf"] {
        rust_files(&root.join(d), &mut files);
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(text.starts_with("//!"), "{} does not open with a //! doc comment", f.display());
        for bad in ["todo!(", "dbg!(", "unimplemented!("] {
            let needle = bad.to_string();
            if f.ends_with("tidy.rs") {
                continue;
            }
            assert!(!text.contains(&needle), "{} contains {bad}", f.display());
        }
    }
}

#[test]
fn only_io_touches_files_sockets_and_the_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for f in files.iter().filter(|f| !f.starts_with(root.join("io"))) {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for banned in [
                "std::fs",
                "glommio",
                "std::net::Tcp",
                "std::net::Udp",
                "socket2",
                "libc::",
                "nix::",
                "tokio::net",
                "tokio::fs",
                "tokio::runtime",
            ] {
                assert!(!code.contains(banned), "{}:{}: `{banned}` outside src/io: {line}", f.display(), n + 1);
            }
        }
    }
}

#[test]
fn protocol_module_knows_nothing_of_the_server() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["crate::server", "crate::storage", "crate::io", "crate::config"] {
            assert!(!text.contains(banned), "{} uses {banned}", f.display());
        }
    }
}

#[test]
fn admin_commands_know_the_broker_only_through_the_wire() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/admin");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["crate::server", "crate::storage", "crate::coordinator"] {
            assert!(!text.contains(banned), "{} uses {banned}", f.display());
        }
    }
}

#[test]
fn the_controller_knows_nothing_of_the_broker() {
    // The metadata quorum is tested on its own and the server drives it through its handle,
    // never the reverse (ARCHITECTURE.md, `src/controller/`).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/controller");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "src/controller has no Rust files");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["crate::server", "crate::storage", "crate::coordinator", "crate::protocol"] {
            assert!(!text.contains(banned), "{} uses {banned}", f.display());
        }
    }
}

#[test]
fn bench_commands_know_the_broker_only_through_the_wire() {
    // `spate bench` is a Kafka client program like `spate group`: it works against any broker, so
    // it must not reach into ours. It writes its report files through `io::report`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/bench");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(!files.is_empty(), "src/bench has no Rust files");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for banned in ["crate::server", "crate::storage", "crate::coordinator"] {
            assert!(!text.contains(banned), "{} uses {banned}", f.display());
        }
    }
}
