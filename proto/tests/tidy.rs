//! Tidy tests: the architecture's invariants about `proto` as tests that
//! fail when they are broken.

use std::path::Path;

fn sources() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            ));
        }
    }
    assert!(out.len() >= 10, "found only {} source files in {}", out.len(), dir.display());
    out
}

/// **Architecture invariant:** `proto` does no I/O and reads no clock.
#[test]
fn proto_does_no_io_and_reads_no_clock() {
    let forbidden = [
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "SystemTime",
        "Instant::now",
        "std::io::stdin",
        "std::io::stdout",
        "println!",
        "eprintln!",
        "tokio",
        "rusqlite",
        "quinn",
        "thread_rng",
        "OsRng",
    ];
    for (file, text) in sources() {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for f in forbidden {
                assert!(
                    !code.contains(f),
                    "proto/src/{file}:{}: `{f}` is I/O, a clock or a source of randomness",
                    n + 1
                );
            }
        }
    }
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap();
    let deps = manifest.split("[dev-dependencies]").next().unwrap();
    for f in ["tokio", "rusqlite", "quinn", "rustls"] {
        assert!(!deps.contains(f), "proto depends on {f}");
    }
}

/// Every module says what it is for.
#[test]
fn every_module_starts_with_a_doc_comment() {
    for (file, text) in sources() {
        assert!(text.starts_with("//!"), "proto/src/{file} does not start with a `//!` comment");
    }
}
