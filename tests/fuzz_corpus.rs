//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and crash regressions
//! (`fuzz/regressions/<target>/`) through the same entry points the fuzz targets call
//! (`spate::fuzzing`), on stable Rust: none may panic, and each entry point's invariants hold.

use std::path::{Path, PathBuf};

/// Each fuzz target and the function it runs.
const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("request", |d| {
        spate::fuzzing::request(d);
    }),
    ("request_body", |d| {
        spate::fuzzing::request_body(d);
    }),
    ("record_batch", spate::fuzzing::record_batch),
    ("index", spate::fuzzing::segment),
    ("offsets_record", spate::fuzzing::offsets_record),
    ("sasl", spate::fuzzing::sasl),
    ("acl", spate::fuzzing::acl),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn replay(kind: &str, must_exist: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    for (target, run) in TARGETS {
        let inputs = files(&root.join(target));
        assert!(!must_exist || !inputs.is_empty(), "no inputs in fuzz/{kind}/{target}");
        for f in inputs {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "fuzz target {target} panics on {}", f.display());
        }
    }
}

#[test]
fn seed_and_fuzzed_corpora_replay_cleanly() {
    replay("corpus", true);
}

#[test]
fn crash_regressions_replay_cleanly() {
    replay("regressions", false);
}

/// Real client traffic decodes: every frame captured from a client (`client-*` in the `request`
/// corpus, see `fuzz/seed/`) is accepted.
#[test]
fn captured_client_frames_decode() {
    use spate::fuzzing::RequestOutcome;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
    let inputs: Vec<PathBuf> =
        files(&dir).into_iter().filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("client-")).collect();
    assert!(inputs.len() > 100, "only {} captured frames in {}", inputs.len(), dir.display());
    for f in inputs {
        let outcome = spate::fuzzing::request(&std::fs::read(&f).unwrap());
        assert!(
            matches!(outcome, RequestOutcome::Decoded(_) | RequestOutcome::ApiVersions),
            "{}: {outcome:?}",
            f.display()
        );
    }
}
