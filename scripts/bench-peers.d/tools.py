"""Small helpers of scripts/bench-peers (standard library only).

    tools.py rss OUT PID...        sample the summed VmRSS of PID... and all
                                   their descendants every 50 ms until
                                   SIGTERM, then write the peak (MiB) to OUT
    tools.py syncs STRACE_C_OUT RUNS [BASELINE]
                                   the sync calls per run in an `strace -c`
                                   summary (less those in BASELINE), in all
                                   and by call, as JSON
    tools.py batch-stats RUNS.json the timed pass of `plait run --batch --json`:
                                   runs/s and p50/p99 of each run from its
                                   creation (the time in its UUIDv7 run id) to
                                   the end of its last step
    tools.py get JSON KEY          one field of a JSON object ("" if null)
    tools.py report RESULTS.tsv    the markdown tables at the end
"""

import json
import math
import os
import signal
import sys
import time


def descendants(roots: set[int]) -> set[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # pid (comm) state ppid ...; comm may hold spaces and parens.
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(parents.get(pid, []))
    return seen


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss(out: str, pids: list[str]) -> None:
    roots = {int(p) for p in pids}
    peak = 0
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    tick = 0
    tree = descendants(roots)
    while not stop:
        if tick % 20 == 0:  # the process tree, once a second
            tree = descendants(roots)
        peak = max(peak, sum(rss_kib(pid) for pid in tree))
        tick += 1
        time.sleep(0.05)
    with open(out, "w") as f:
        f.write(f"{peak / 1024:.1f}\n")


SYNC_CALLS = ("fsync", "fdatasync", "sync_file_range", "msync", "syncfs")


def sync_counts(path: str) -> dict[str, int]:
    counts = dict.fromkeys(SYNC_CALLS, 0)
    with open(path) as f:
        for line in f:
            words = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(words) >= 5 and words[-1] in counts:
                counts[words[-1]] += int(words[3])
    return counts


def syncs(path: str, runs: str, baseline: str | None) -> None:
    """Calls per run in PATH over RUNS runs, less those of BASELINE if given."""
    counts = sync_counts(path)
    if baseline:
        for name, calls in sync_counts(baseline).items():
            counts[name] -= calls
    n = max(float(runs), 1.0)
    by_call = ", ".join(f"{name} {calls / n:.2f}" for name, calls in counts.items() if calls)
    print(json.dumps({"per_run": f"{sum(counts.values()) / n:.2f}", "by_call": by_call or "none"}))


def uuid7_ms(run_id: str) -> int:
    return int(run_id.replace("-", "")[:12], 16)


def percentile(values: list[float], q: float):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 2)


def batch_stats(path: str) -> None:
    with open(path) as f:
        runs = json.load(f)
    if isinstance(runs, dict):
        runs = [runs]
    failed = sum(1 for run in runs if run.get("status") != "succeeded")
    spans = []
    for run in runs:
        if run.get("status") != "succeeded":
            continue
        ends = [step.get("finished_at_ms") for step in run.get("steps", []) if step.get("finished_at_ms")]
        if not ends or (run.get("output") or {}).get("s3") is not True:
            failed += 1
            continue
        spans.append((uuid7_ms(run["run_id"]), max(ends)))
    first_error = next((run.get("error") for run in runs if run.get("status") != "succeeded"), None)
    if spans:
        wall = (max(end for _, end in spans) - min(start for start, _ in spans)) / 1000
        wall = max(wall, 0.001)
    else:
        wall = None
    latencies = [end - start for start, end in spans]
    print(
        json.dumps(
            {
                "runs": len(runs),
                "failed": failed,
                "wall_s": round(wall, 3) if wall else None,
                "runs_per_s": round(len(spans) / wall, 1) if wall else 0,
                "p50_ms": percentile(latencies, 0.5),
                "p99_ms": percentile(latencies, 0.99),
                "first_error": first_error,
            }
        )
    )


def get(text: str, key: str) -> None:
    value = json.loads(text).get(key)
    print("" if value is None else value)


def report(path: str) -> None:
    rows = []
    with open(path) as f:
        for line in f:
            if line.strip():
                system, c, n, runs_s, p50, p99, rss_mib, syncs_run, by_call, failed = line.rstrip("\n").split("\t")
                rows.append(dict(system=system, c=int(c), n=n, runs_s=runs_s, p50=p50, p99=p99,
                                 rss=rss_mib, syncs=syncs_run, by_call=by_call, failed=failed))
    print("| system | c | runs | runs/s | p50 ms | p99 ms | peak RSS MiB | syncs/run | failed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['system']} | {r['c']} | {r['n']} | {r['runs_s']} | {r['p50']} | {r['p99']} | {r['rss']} | {r['syncs']} | {r['failed']} |")
    print()
    print("Sync calls per run, by call")
    print()
    print("| system | c | calls per run |")
    print("|---|---:|---|")
    for r in rows:
        print(f"| {r['system']} | {r['c']} | {r['by_call']} |")
    plaits = [s for s in dict.fromkeys(r["system"] for r in rows) if s.startswith("plait")]
    peers = [s for s in dict.fromkeys(r["system"] for r in rows) if not s.startswith("plait")]
    if not plaits or not peers:
        return
    speed = {(r["system"], r["c"]): r["runs_s"] for r in rows}
    concurrencies = sorted({r["c"] for r in rows})
    print()
    print("Plait / peer, runs/s (above 1: Plait is faster)")
    print()
    print("| ratio | " + " | ".join(f"c={c}" for c in concurrencies) + " |")
    print("|---|" + "---:|" * len(concurrencies))
    for plait in plaits:
        for peer in peers:
            cells = []
            for c in concurrencies:
                try:
                    cells.append(f"{float(speed[(plait, c)]) / float(speed[(peer, c)]):.2f}")
                except (KeyError, ValueError, ZeroDivisionError):
                    cells.append("n/a")
            print(f"| {plait} / {peer} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    command, rest = sys.argv[1], sys.argv[2:]
    if command == "rss":
        rss(rest[0], rest[1:])
    elif command == "syncs":
        syncs(rest[0], rest[1], rest[2] if len(rest) > 2 else None)
    elif command == "batch-stats":
        batch_stats(rest[0])
    elif command == "get":
        get(rest[0], rest[1])
    elif command == "report":
        report(rest[0])
    else:
        sys.exit(f"unknown command {command}")
