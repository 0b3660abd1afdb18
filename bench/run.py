#!/usr/bin/env python3
"""Benchmarks: our three-tier sync against PouchDB replication, in one run.

Our side runs as real separate processes, like the laptops it serves: the hub
is `county-hub serve`, every village is `village-node sync`. The peer is
PouchDB 9 (memory adapter) replicating to express-pouchdb on loopback through
a byte-counting proxy (bench/pouch/peer.js). Both get the same number of
cases per village and the same number of changes per case.

    python3 bench/run.py                  # W1, W3, W4 at full size
    python3 bench/run.py --w2 --w5        # also the fortnight and the year
    python3 bench/run.py --villages 20    # a quick run

Results: bench/results/<date>.md and .png. See bench/README.md.
"""
import argparse
import concurrent.futures as cf
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
POUCH = os.path.join(ROOT, "bench", "pouch")
# Every node's keys are sealed under a passphrase; the benchmark's county
# uses one for all its nodes.
os.environ.setdefault("CASE_NODE_PASSPHRASE", "benchmark county passphrase")
# Villages unlock their keys for the run (`--locked` turns it off).
UNLOCKED = True


def say(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(*cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def run_json(*cmd):
    return json.loads(run(*cmd).strip().splitlines()[-1])


def setup_tools():
    say("building release binaries")
    subprocess.run(["cargo", "build", "--release", "--bins", "-q"], cwd=ROOT, check=True)
    if not os.path.isdir(os.path.join(POUCH, "node_modules")):
        say("installing PouchDB, express-pouchdb and express (npm)")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=POUCH, check=True)


class Serve:
    """A long-running process that prints its address on its first line."""

    def __init__(self, *cmd):
        self.p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.p.stdout.readline()
        self.addr = next(w.rstrip(":") for w in line.split() if w.startswith("127.0.0.1:") and not w.endswith(":0"))

    def peak_rss_kib(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """User + system CPU time the process has used so far."""
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()


class County:
    def __init__(self, work, villages):
        self.work = work
        self.hub = os.path.join(work, "hub")
        run(f"{BIN}/county-hub", "init", "--data", self.hub)
        nodes = json.loads(run(f"{BIN}/county-hub", "nodes", "--data", self.hub, "--tier", "village", "--json"))
        self.villages = [n["id"] for n in nodes][:villages]
        bundles = os.path.join(work, "bundles")
        run(f"{BIN}/county-hub", "enroll", "--data", self.hub, "--all", "--out-dir", bundles)
        with cf.ThreadPoolExecutor(4) as ex:
            list(ex.map(lambda v: run(f"{BIN}/village-node", "init", "--data", self.dir(v),
                                      "--enrollment", os.path.join(bundles, f"{v}.json")), self.villages))

    def dir(self, v):
        return os.path.join(self.work, v)

    def copy(self, work):
        """The same county in another directory (taken before any unlock)."""
        shutil.copytree(self.work, work)
        other = County.__new__(County)
        other.work, other.hub, other.villages = work, os.path.join(work, "hub"), list(self.villages)
        return other

    def unlock(self):
        """Every village unlocks its keys for the run (`village-node unlock`,
        as staff do in the morning): its syncs then take the keys from its
        agent instead of deriving them from the passphrase. The agents end
        at `lock`, or when the work directory is removed."""
        if not UNLOCKED:
            return
        with cf.ThreadPoolExecutor(2) as ex:
            list(ex.map(lambda v: run(f"{BIN}/village-node", "unlock", "--data", self.dir(v), "--for", "2h"),
                        self.villages))

    def lock(self):
        for v in self.villages:
            subprocess.run([f"{BIN}/village-node", "lock", "--data", self.dir(v)], capture_output=True)

    def generate(self, cases, seed=1):
        def one(iv):
            i, v = iv
            return run_json(f"{BIN}/county-sim", "generate", "--data", self.dir(v), "--count", str(cases),
                            "--seed", str(seed * 100000 + i), "--as", "bench", "--json")
        with cf.ThreadPoolExecutor(2) as ex:
            out = list(ex.map(one, enumerate(self.villages)))
        return sum(o["cases"] for o in out), sum(o["events"] for o in out)

    def sync_all(self, peer, concurrency=8, spread=0.0, hub=None):
        """Every village syncs once. With `spread`, village i starts at
        i * spread / n seconds (a herd arriving within `spread`). A session
        the hub turns away as busy is tried again (counted)."""
        started = time.monotonic()
        cpu0 = hub.cpu_seconds() if hub else 0.0

        def one(iv):
            i, v = iv
            if spread:
                time.sleep(max(0.0, started + i * spread / len(self.villages) - time.monotonic()))
            t0, busy, reset = time.monotonic(), 0, 0
            while True:
                # wait4 gives this one process's peak resident memory.
                p = subprocess.Popen([f"{BIN}/village-node", "sync", "--data", self.dir(v), "--peer", peer, "--json"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                out = p.stdout.read()
                err = p.stderr.read()
                _, status, usage = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                transient = ("sync again in a minute", "refused to accept", "during the handshake", "try again shortly")
                if p.returncode != 0 and any(t in err for t in transient) and busy < 120:
                    # Turned away at the hub's connection limit: as a
                    # village's scheduler would, try again shortly.
                    busy += 1
                    time.sleep(0.5)
                    continue
                if p.returncode != 0 and "no longer knows this connection" in err and reset < 3:
                    # The hub dropped the connection mid-session (seen once
                    # in a herd of 293 processes on 2 cores): what it stored
                    # is kept, and the village's scheduler syncs again.
                    reset += 1
                    time.sleep(0.5)
                    continue
                if p.returncode != 0:
                    raise SystemExit(f"village-node sync failed: {err}")
                break
            summary = json.loads(out.strip().splitlines()[-1])
            summary["maxrss_kib"] = usage.ru_maxrss
            summary["session_seconds"] = time.monotonic() - t0
            summary["busy"] = busy
            summary["reset"] = reset
            return summary
        with cf.ThreadPoolExecutor(concurrency) as ex:
            out = list(ex.map(one, enumerate(self.villages)))
        seconds = time.monotonic() - started
        times = sorted(o["session_seconds"] for o in out)
        pct = lambda q: times[min(len(times) - 1, int(q * len(times)))]
        extra = {}
        if hub:
            cpu = hub.cpu_seconds() - cpu0
            events = sum(o["sent_events"] for o in out)
            extra = {"hub_cpu_seconds": cpu, "hub_cpu_ms_per_session": cpu * 1000 / len(out),
                     "hub_cpu_us_per_event": cpu * 1e6 / events if events else None}
        return {
            **extra,
            "session_p50": pct(0.5),
            "session_p99": pct(0.99),
            "turned_away_busy": sum(o["busy"] for o in out),
            "reset_and_synced_again": sum(o["reset"] for o in out),
            "seconds": seconds,
            "bytes_up": sum(o["bytes_sent"] for o in out),
            "bytes_down": sum(o["bytes_received"] for o in out),
            "udp_bytes": sum(o["link"]["udp_bytes_sent"] + o["link"]["udp_bytes_received"] for o in out),
            "datagrams": sum(o["link"]["datagrams_sent"] + o["link"]["datagrams_received"] for o in out),
            "events": sum(o["sent_events"] for o in out),
            "sessions": len(out),
            "max_bytes_up_per_child": max(o["bytes_sent"] for o in out),
            "max_bytes_down_per_child": max(o["bytes_received"] for o in out),
            "village_peak_rss_kib": max(o["maxrss_kib"] for o in out),
        }


def store_bytes(data_dir):
    """Bytes of a node's SQLite store (database and write-ahead log)."""
    return sum(os.path.getsize(os.path.join(data_dir, f)) for f in os.listdir(data_dir)
               if f.startswith("node.db") and not f.endswith("-shm"))


def events_held(tool, data_dir):
    return run_json(f"{BIN}/{tool}", "digest", "--data", data_dir, "--json")["events"]


def at_rest(county):
    """Bytes at rest per event held, at the hub and at the villages (after
    the hub stopped: its log checkpointed)."""
    hub_events = events_held("county-hub", county.hub)
    sample = county.villages[:: max(1, len(county.villages) // 20)]
    v_bytes = sum(store_bytes(county.dir(v)) for v in sample)
    v_events = sum(events_held("village-node", county.dir(v)) for v in sample)
    return {"hub_bytes": store_bytes(county.hub), "hub_events": hub_events,
            "hub_bytes_per_event": store_bytes(county.hub) / hub_events,
            "village_bytes_per_event": v_bytes / v_events, "villages_sampled": len(sample)}


def pouch(villages, cases, changes, noop=False, delay_ms=0, concurrency=None):
    cmd = ["node", "peer.js", "--villages", str(villages), "--cases", str(cases), "--changes", str(changes)]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    if noop:
        cmd.append("--noop")
    if delay_ms:
        cmd += ["--delay-ms", str(delay_ms), "--concurrency", "1"]
    out = subprocess.run(cmd, cwd=POUCH, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.strip().splitlines()]


def workload_day(work, villages, cases, label, results, noop=True, herd=None):
    say(f"{label}: {villages} villages x {cases} cases: creating the county and the cases")
    county = County(work, villages)
    n_cases, n_events = county.generate(cases)
    changes = max(1, round(n_events / n_cases))
    if herd:
        say(f"{label}: copying the county for the herd")
        subprocess.run(["cp", "-a", work, work + "-herd"], check=True)
    county.unlock()
    hub = Serve(f"{BIN}/county-hub", "serve", "--data", county.hub, "--listen", "127.0.0.1:0")
    say(f"{label}: ours: {n_cases} cases, {n_events} events, syncing every village to the hub")
    ours = county.sync_all(hub.addr, hub=hub)
    ours["events_per_second"] = n_events / ours["seconds"]
    ours["hub_peak_rss_kib"] = hub.peak_rss_kib()
    noop_ours = county.sync_all(hub.addr, hub=hub) if noop else None
    hub.stop()
    county.lock()
    ours["at_rest"] = at_rest(county)
    say(f"{label}: PouchDB: {n_cases} docs x {changes} changes")
    peer = pouch(villages, cases, changes, noop=noop)
    push = peer[0]
    push["events_per_second"] = n_events / push["seconds"]
    results[label] = {"villages": villages, "cases": n_cases, "events": n_events, "changes_per_case": changes,
                      "ours": ours, "pouchdb": push}
    if noop:
        results["W3 no-op resync"] = {"villages": villages, "ours": noop_ours, "pouchdb": peer[1]}
    if herd:
        workload_herd(work + "-herd", county, n_cases, n_events, changes, cases, herd, results)
    return county


def workload_herd(work, like, n_cases, n_events, changes, cases, concurrency, results):
    """Every village starts its sync within one second (the morning after a
    holiday), `concurrency` processes at once, on a copy of the county."""
    county = County.__new__(County)
    county.work, county.hub, county.villages = work, os.path.join(work, "hub"), like.villages
    county.unlock()
    hub = Serve(f"{BIN}/county-hub", "serve", "--data", county.hub, "--listen", "127.0.0.1:0")
    say(f"herd: {len(county.villages)} villages within 1 s, {concurrency} at once, {n_events} events")
    ours = county.sync_all(hub.addr, concurrency=concurrency, spread=1.0, hub=hub)
    ours["events_per_second"] = n_events / ours["seconds"]
    ours["hub_peak_rss_kib"] = hub.peak_rss_kib()
    again = county.sync_all(hub.addr, hub=hub)
    hub.stop()
    county.lock()
    held = events_held("county-hub", county.hub)
    ours["nothing_lost"] = ours["events"] == n_events and again["events"] == 0 and held >= n_events
    ours["hub_events_held"] = held
    say(f"herd: PouchDB, {len(county.villages)} replications at once")
    peer = pouch(len(county.villages), cases, changes, concurrency=len(county.villages))[0]
    peer["events_per_second"] = n_events / peer["seconds"]
    results["Herd: all villages within 1 s"] = {"villages": len(county.villages), "cases": n_cases,
                                                "events": n_events, "concurrency": concurrency,
                                                "ours": ours, "pouchdb": peer}
    shutil.rmtree(work, ignore_errors=True)


def workload_rural(work, results, patterns):
    say(f"W4: one village day over the emulated rural link (300 ms RTT, 1 Mbit/s, 3 % loss), {patterns} loss patterns")
    base = County(os.path.join(work, "base"), 1)
    n_cases, n_events = base.generate(20, seed=9)
    # One run depends on which packets the loss hits (a late loss waits out
    # a probe timeout, about a second): the same day over several loss
    # patterns (the link's seed), the median reported with all of them.
    runs = []
    for seed in range(1, patterns + 1):
        county = base.copy(os.path.join(work, f"pattern-{seed}"))
        hub = Serve(f"{BIN}/county-hub", "serve", "--data", county.hub, "--listen", "127.0.0.1:0")
        link = Serve(f"{BIN}/county-sim", "link", "--listen", "127.0.0.1:0", "--target", hub.addr,
                     "--rtt-ms", "300", "--loss", "0.03", "--kbps", "1000", "--jitter-ms", "20", "--seed", str(seed))
        county.unlock()
        o = county.sync_all(link.addr, concurrency=1)
        county.lock()
        link.stop()
        hub.stop()
        o["loss_pattern"] = seed
        runs.append(o)
        shutil.rmtree(county.work, ignore_errors=True)
    runs.sort(key=lambda o: o["seconds"])
    ours = dict(runs[len(runs) // 2])
    ours["seconds_each_pattern"] = {o["loss_pattern"]: round(o["seconds"], 2) for o in runs}
    each = ", ".join(f"{o['seconds']:.2f}" for o in runs)
    changes = max(1, round(n_events / n_cases))
    # PouchDB over TCP: the proxy delays every chunk by the same one-way
    # 150 ms; TCP loss and the bandwidth cap are not emulated for it.
    peer = pouch(1, 20, changes, delay_ms=150)[0]
    results["W4 rural village day"] = {
        "villages": 1, "cases": n_cases, "events": n_events, "ours": ours, "pouchdb": peer,
        "note": f"ours: the median of {len(runs)} loss patterns (each, fastest first: {each} s); "
                "PouchDB gets only the 300 ms RTT (no loss, no cap)"}


def workload_year(work, results, cases, events_per_case):
    say(f"W5: hub ingest of {cases} cases (~{cases * events_per_case} events) vs raw SQLite append")
    out = run_json(f"{BIN}/county-sim", "bench-ingest", "--data", os.path.join(work, "ingest"),
                   "--cases", str(cases), "--events-per-case", str(events_per_case))
    results["W5 hub ingest"] = out


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return f"{platform.system()} {platform.release()}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Node {node}"


def ratio(a, b):
    return f"{a / b:.1f}x" if b else "-"


def report(results, path_md, path_png, failed):
    lines = [f"# Benchmark results, {datetime.date.today()}", "", f"Machine: {machine()}", "",
             "Ours: separate `village-node sync` processes (8 at a time) to `county-hub serve`, QUIC + mutual TLS, "
             "SQLite with synchronous=FULL; " + ("each village unlocked for the run (`village-node unlock`, its keys "
             "from its agent)" if UNLOCKED else "each process unsealing its keys under the passphrase (--locked)") + ". Peer: PouchDB 9 (memory adapter, 24 replications at a time) to "
             "express-pouchdb (memory) through a byte-counting TCP proxy. Same villages, cases and changes per case.",
             "", "The last column says how many times better we are (PouchDB / ours for time, bytes, requests "
             "and memory; ours / PouchDB for events per second); below 1.0x we are worse.",
             "", "| workload | metric | ours | PouchDB | ours better by |", "|---|---|---|---|---|"]
    for name, r in results.items():
        if name.startswith("W5"):
            continue
        o, p = r["ours"], r["pouchdb"]
        rows = [("wall time (s)", o["seconds"], p["seconds"]),
                ("bytes up", o["bytes_up"], p["bytes_up"]),
                ("bytes down", o["bytes_down"], p["bytes_down"]),
                ("requests / sessions", o["sessions"], p["requests"])]
        if "events_per_second" in o:
            rows.append(("events per second", o["events_per_second"], p["events_per_second"]))
        if "village_peak_rss_kib" in o:
            rows.append(("peak RSS, largest village process (MiB)", o["village_peak_rss_kib"] / 1024, None))
        if "hub_peak_rss_kib" in o:
            rows.append(("peak RSS, hub process (MiB)", o["hub_peak_rss_kib"] / 1024, p["peak_rss"] / 2**20))
        if "hub_cpu_seconds" in o:
            rows.append(("CPU seconds: our hub / PouchDB's one process (its clients too)", o["hub_cpu_seconds"],
                         p.get("cpu_seconds")))
            rows.append(("hub CPU per session (ms)", o["hub_cpu_ms_per_session"], None))
            if o.get("hub_cpu_us_per_event"):
                rows.append(("hub CPU per event (µs)", o["hub_cpu_us_per_event"], None))
        if "session_p50" in o:
            rows.append(("session time p50 (s)", o["session_p50"], p.get("session_p50")))
            rows.append(("session time p99 (s)", o["session_p99"], p.get("session_p99")))
        if o.get("turned_away_busy"):
            rows.append(("sessions turned away busy (retried)", o["turned_away_busy"], None))
        if o.get("reset_and_synced_again"):
            rows.append(("sessions reset by the hub mid-session (synced again)", o["reset_and_synced_again"], None))
        if "nothing_lost" in o:
            rows.append(("every event at the hub, none sent twice", str(o["nothing_lost"]), None))
        if "at_rest" in o:
            rows.append(("bytes at rest per event, hub", o["at_rest"]["hub_bytes_per_event"], None))
            rows.append(("bytes at rest per event, village", o["at_rest"]["village_bytes_per_event"], None))
        if name.startswith("W3"):
            rows.append(("bytes per child, both ways", (o["bytes_up"] + o["bytes_down"]) / o["sessions"],
                         (p["bytes_up"] + p["bytes_down"]) / r["villages"]))
            if "udp_bytes" in o:
                rows.append(("UDP bytes per child, both ways (QUIC: handshake, acks)", o["udp_bytes"] / o["sessions"],
                             None))
                rows.append(("datagrams per child, both ways", o["datagrams"] / o["sessions"], None))
        for label, a, b in rows:
            fa = f"{a:,.2f}" if isinstance(a, float) else (a if isinstance(a, str) else f"{a:,}")
            fb = "-" if b is None else (f"{b:,.2f}" if isinstance(b, float) else f"{b:,}")
            rt = "-" if b is None or isinstance(a, str) else ratio(b, a)
            if label == "events per second" and b:
                rt = ratio(a, b)
            lines.append(f"| {name} | {label} | {fa} | {fb} | {rt} |")
        if "note" in r:
            lines.append(f"| {name} | note | {r['note']} | | |")
    if "W5 hub ingest" in results:
        w = results["W5 hub ingest"]
        lines += ["", "## W5 hub ingest", "", "```", json.dumps(w, indent=1, ensure_ascii=False), "```"]
    for name, why in failed.items():
        lines += ["", f"**{name} failed in this run:** `{why}`"]
    lines += ["", "Raw numbers:", "", "```", json.dumps(results, indent=1, ensure_ascii=False), "```", ""]
    with open(path_md, "w") as f:
        f.write("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], check=False)
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    names = [n for n in results if not n.startswith("W5")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [(axes[0], lambda r: r["seconds"], "wall time (s)"),
              (axes[1], lambda r: r["bytes_up"] + r["bytes_down"], "bytes, both ways"),
              (axes[2], lambda r: r.get("hub_cpu_seconds", r.get("cpu_seconds")),
               "CPU s: our hub / PouchDB's process (its clients too)")]
    for ax, metric, title in panels:
        shown = [n for n in names if metric(results[n]["ours"]) and metric(results[n]["pouchdb"])]
        ours = [metric(results[n]["ours"]) for n in shown]
        peer = [metric(results[n]["pouchdb"]) for n in shown]
        xs = range(len(shown))
        ax.bar([x - 0.2 for x in xs], ours, 0.4, label="ours (QUIC, SQLite)")
        ax.bar([x + 0.2 for x in xs], peer, 0.4, label="PouchDB 9 + express-pouchdb")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([n.split(" ")[0].rstrip(":") for n in shown])
        ax.set_yscale("log")
        if ours + peer:
            # Bars start well below the smallest, so heights compare.
            ax.set_ylim(bottom=min(ours + peer) / 10)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path_png, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--villages", type=int, default=293)
    ap.add_argument("--cases", type=int, default=20, help="cases per village for W1")
    ap.add_argument("--w4-patterns", type=int, default=5,
                    help="W4: loss patterns (the link's seeds) to run the village day over; the median is reported")
    ap.add_argument("--w2", action="store_true", help="also W2: 300 cases per village (slow)")
    ap.add_argument("--w2-cases", type=int, default=300)
    ap.add_argument("--herd", action="store_true",
                    help="with --w2: also the thundering herd (every village within 1 s, on a copy of W2's county)")
    ap.add_argument("--herd-concurrency", type=int, default=0, help="processes at once in the herd (default: all)")
    ap.add_argument("--w5", action="store_true", help="also W5: hub ingest of a year")
    ap.add_argument("--w5-cases", type=int, default=1_500_000)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--only", nargs="+", metavar="W", help="run only these workloads (W1 W4 W2 W5; W3 comes with W1)")
    ap.add_argument("--locked", action="store_true",
                    help="do not unlock the villages: every sync process derives its keys from the passphrase")
    a = ap.parse_args()
    global UNLOCKED
    UNLOCKED = not a.locked
    setup_tools()
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    if os.path.exists(os.path.join(ROOT, "bench", "results", stamp + ".md")):
        # Two runs started in one minute: the second does not overwrite.
        stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    work = os.path.join(ROOT, "bench", "work", stamp)
    os.makedirs(work, exist_ok=True)
    results = {}
    steps = [("W1", lambda: workload_day(os.path.join(work, "w1"), a.villages, a.cases, "W1 county day", results)),
             ("W4", lambda: workload_rural(os.path.join(work, "w4"), results, a.w4_patterns))]
    if a.w2:
        steps.append(("W2", lambda: workload_day(os.path.join(work, "w2"), a.villages, a.w2_cases,
                                                 "W2 fortnight offline", results, noop=False,
                                                 herd=(a.herd_concurrency or a.villages) if a.herd else None)))
    if a.w5:
        steps.append(("W5", lambda: workload_year(work, results, a.w5_cases, 6)))
    if a.only:
        steps = [(n, f) for n, f in steps if n in a.only]
    failed = {}
    try:
        for name, step in steps:
            try:
                step()
            except (subprocess.CalledProcessError, SystemExit, OSError, ValueError) as e:
                say(f"{name} failed: {e}")
                failed[name] = str(e)[-500:]
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    md = os.path.join(ROOT, "bench", "results", f"{stamp}.md")
    with open(md[:-3] + ".json", "w") as f:
        json.dump({"results": results, "failed": failed}, f, indent=1, ensure_ascii=False)
    report(results, md, md[:-3] + ".png", failed)
    say(f"wrote {md}")
    print(open(md).read())


if __name__ == "__main__":
    main()
