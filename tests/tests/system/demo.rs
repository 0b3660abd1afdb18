//! The simulated county (issue 4), small enough for the test suite: real
//! nodes with their own SQLite files, QUIC + mutual TLS on loopback.

use serde_json::Value;
use system_tests::ok;

fn demo(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("county");
    let mut all = vec!["demo", "--data", data.to_str().unwrap(), "--exit", "--json"];
    all.extend(args);
    let out = ok("county-sim", &all);
    serde_json::from_str(out.lines().last().unwrap()).unwrap()
}

#[test]
fn a_small_county_works_a_day_and_converges() {
    let s = demo(&["--townships", "2", "--villages-per-township", "3", "--cases-per-village", "6"]);
    assert_eq!(s["converged"], true, "{s}");
    assert_eq!(s["nodes"], 1 + 2 + 2 * 3);
    // 6 cases at each village and 3 at each township window.
    assert_eq!(s["cases"], 6 * 6 + 2 * 3);
    assert!(s["events"].as_u64().unwrap() > s["cases"].as_u64().unwrap() * 3);
    assert!(s["states"]["closed"].as_u64().unwrap() > 0, "decisions came back and were closed: {s}");
    assert!(s["bytes_sent"].as_u64().unwrap() > 0 && s["sessions"].as_u64().unwrap() > 0);
}

/// Issue 9: the whole county in one process stays small. The county's own
/// store would open with an 8 MiB page cache; in the demo every store's is
/// capped, and the process runs with two allocator arenas and a fixed mmap
/// threshold (what its peak memory is is measured in bench/, not here).
#[test]
fn the_demo_runs_with_small_page_caches_and_a_bounded_allocator() {
    let s = demo(&["--townships", "1", "--villages-per-township", "1", "--cases-per-village", "2"]);
    assert_eq!(s["converged"], true, "{s}");
    assert_eq!(s["process"]["page_cache_kib"], 256, "{s}");
    assert_eq!(s["process"]["allocator"]["MALLOC_ARENA_MAX"], "2", "{s}");
    assert_eq!(s["process"]["allocator"]["MALLOC_MMAP_THRESHOLD_"], "131072", "{s}");
    assert!(s["process"]["peak_rss_mib"].as_f64().unwrap() > 0.0, "{s}");
}

#[test]
fn a_small_county_converges_over_rural_links() {
    let s = demo(&["--townships", "1", "--villages-per-township", "2", "--cases-per-village", "3", "--link", "rural"]);
    assert_eq!(s["converged"], true, "{s}");
    assert_eq!(s["link"], "rural");
}
