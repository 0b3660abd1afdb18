#!/usr/bin/env python3
"""W6: material files over the rural link, ours against PouchDB, in one run.

One village's day: 20 cases with 3 files of 500 KB each (random bytes behind
a PDF header, so nothing compresses), sent to the county hub through the
link emulator (`county-sim link`: 1 Mbit/s, 300 ms RTT, 20 ms jitter, 3 %
loss). Measured: the sync's wall time against the line-rate limit of the
files' bytes, and, after a cut at half (the sync killed, then run again),
the bytes sent again. PouchDB replicates the same files as attachments to
express-pouchdb through a TCP proxy with the same bandwidth cap and delay
(no loss: TCP's own retransmission is not emulated).

    python3 bench/files.py                      # the full day (about 30 MB: minutes)
    python3 bench/files.py --cases 4            # quick

Results: bench/results/files-<date>.md. See bench/README.md.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared helpers: County, Serve, setup)

BIN, ROOT, POUCH, say = bench.BIN, bench.ROOT, bench.POUCH, bench.say


def attach_day(county, cases, files, kb, seed):
    v = county.villages[0]
    data = county.dir(v)
    bench.run_json(f"{BIN}/county-sim", "generate", "--data", data, "--count", str(cases), "--seed", str(seed),
                   "--as", "bench", "--json")
    ids = [c["case_id"] for c in json.loads(bench.run(f"{BIN}/village-node", "case", "list", "--data", data,
                                                      "--json"))]
    scratch = os.path.join(county.work, "scans")
    os.makedirs(scratch, exist_ok=True)
    total = 0
    for i, case in enumerate(ids):
        for f in range(files):
            path = os.path.join(scratch, f"{i}-{f}.pdf")
            with open(path, "wb") as out:
                out.write(b"%PDF-1.4\n" + os.urandom(kb * 1024 - 9))
            bench.run(f"{BIN}/village-node", "case", "attach", "--data", data, case, "--material", f"材料{f}",
                      "--file", path, "--as", "bench")
            total += kb * 1024
    return data, total


def held_bytes(hub_dir):
    """Bytes of files the hub holds, whole or on their way."""
    n = 0
    for root, _, names in os.walk(os.path.join(hub_dir, "files")):
        n += sum(os.path.getsize(os.path.join(root, x)) for x in names if not x.endswith(".lane"))
    return n


def ours(work, a, cut_at=None):
    county = bench.County(work, 1)
    data, total = attach_day(county, a.cases, a.files, a.kb, seed=7)
    hub = bench.Serve(f"{BIN}/county-hub", "serve", "--data", county.hub, "--listen", "127.0.0.1:0")
    link = bench.Serve(f"{BIN}/county-sim", "link", "--listen", "127.0.0.1:0", "--target", hub.addr,
                       "--rtt-ms", str(a.rtt_ms), "--loss", str(a.loss), "--kbps", str(a.kbps), "--jitter-ms", "20")
    result = {"file_bytes": total}
    if cut_at:
        p = subprocess.Popen([f"{BIN}/village-node", "sync", "--data", data, "--peer", link.addr, "--json"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while p.poll() is None and held_bytes(county.hub) < cut_at * total:
            time.sleep(0.05)
        p.kill()
        p.wait()
        time.sleep(2)  # what was in flight lands
        result["held_at_cut"] = held_bytes(county.hub)
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        out = subprocess.run([f"{BIN}/village-node", "sync", "--data", data, "--peer", link.addr, "--json"],
                             capture_output=True, text=True)
        if out.returncode == 0:
            summary = json.loads(out.stdout.strip().splitlines()[-1])
            break
        if attempts >= 5:
            raise SystemExit(f"sync failed 5 times: {out.stderr}")
    result.update({"seconds": time.monotonic() - started, "attempts": attempts,
                   "file_bytes_sent": summary["file_bytes_sent"], "files_sent": summary["files_sent"],
                   "bytes_up": summary["bytes_sent"], "hub_peak_rss_kib": hub.peak_rss_kib()})
    link.stop()
    hub.stop()
    return result


def pouchdb(a, cut_at=None):
    cmd = ["node", "peer.js", "--villages", "1", "--cases", str(a.cases), "--changes", "4", "--concurrency", "1",
           "--attachments", str(a.files), "--attachment-kb", str(a.kb), "--kbps", str(a.kbps),
           "--delay-ms", str(a.rtt_ms // 2)]
    if cut_at:
        cmd += ["--cut-at", str(cut_at)]
    out = subprocess.run(cmd, cwd=POUCH, capture_output=True, text=True)
    if out.returncode != 0:
        say(f"PouchDB failed: {out.stderr.strip()[-800:]}")
        return {"error": out.stderr.strip()[-800:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--files", type=int, default=3, help="files per case")
    ap.add_argument("--kb", type=int, default=500, help="KiB per file")
    ap.add_argument("--kbps", type=int, default=1000)
    ap.add_argument("--rtt-ms", type=int, default=300)
    ap.add_argument("--loss", type=float, default=0.03)
    a = ap.parse_args()
    bench.setup_tools()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    work = os.path.join(ROOT, "bench", "work", f"files-{stamp}-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    say(f"W6 ours: {a.cases} cases x {a.files} files of {a.kb} KiB over {a.kbps} kbit/s, {a.rtt_ms} ms, {a.loss} loss")
    w6 = ours(os.path.join(work, "w6"), a)
    say(f"W6 ours: {w6['seconds']:.1f} s; PouchDB with the same files as attachments")
    p = pouchdb(a)
    say("W6 cut at half: ours")
    cut = ours(os.path.join(work, "cut"), a, cut_at=0.5)
    say("W6 cut at half: PouchDB")
    pcut = pouchdb(a, cut_at=0.5)
    limit = w6["file_bytes"] * 8 / (a.kbps * 1000)
    resent = cut["file_bytes_sent"] - (cut["file_bytes"] - min(cut["held_at_cut"], cut["file_bytes"]))
    p_ok = "error" not in p and "error" not in pcut
    p_needed = p.get("bytes_up", 0)
    p_resent = (pcut["resumed"]["bytes_up"] + pcut["first"].get("bytes_up", 0) - p_needed) if p_ok else None
    fmt = lambda v, f: f(v) if v is not None else "failed"  # noqa: E731
    lines = [
        f"# W6: material files over the rural link ({stamp})",
        "",
        f"{a.cases} cases x {a.files} files of {a.kb} KiB = {w6['file_bytes'] / 1e6:.1f} MB; link {a.kbps} kbit/s, "
        f"{a.rtt_ms} ms RTT, 20 ms jitter, {a.loss:.0%} loss for ours (UDP emulator); the same cap and delay, no "
        f"loss, for PouchDB (TCP proxy). Release builds, this machine ({os.cpu_count()} cores).",
        "",
        "| | ours | PouchDB 9 (attachments) |",
        "|---|---|---|",
        f"| wall time | {w6['seconds']:.1f} s | {fmt(p.get('seconds'), lambda v: f'{v:.1f} s')} |",
        f"| against the line-rate limit ({limit:.1f} s) | {w6['seconds'] / limit:.2f} x | "
        f"{fmt(p.get('seconds'), lambda v: f'{v / limit:.2f} x')} |",
        f"| bytes up | {w6['bytes_up'] + w6['file_bytes_sent']:,} | {fmt(p.get('bytes_up'), lambda v: f'{v:,}')} |",
        f"| sync attempts (a lossy link may cut one) | {w6['attempts']} | 1 |",
        f"| after a cut at half: bytes sent again | {max(resent, 0):,} | {fmt(p_resent, lambda v: f'{max(v, 0):,}')} |",
        f"| hub peak RSS | {w6['hub_peak_rss_kib'] / 1024:.0f} MB | — |",
        "",
        "Raw:",
        "",
        "```json",
        json.dumps({"ours": w6, "pouchdb": p, "ours_cut": cut, "pouchdb_cut": pcut}, indent=1),
        "```",
    ]
    shutil.rmtree(work, ignore_errors=True)
    md = os.path.join(ROOT, "bench", "results", f"files-{stamp}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    say(f"wrote {md}")
    print("\n".join(lines[:14]))


if __name__ == "__main__":
    main()
