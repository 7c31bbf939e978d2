"""The DBOS side of scripts/bench-peers, run by the venv's Python.

A @DBOS.workflow `stamp` calls three @DBOS.step functions, s1, s2 and s3,
each returning its input dict with one field (named after the step) added.
DBOS checkpoints each step's output in its system database (SQLite here)
before the workflow goes on, and the workflow's status and result too.

    python dbos_bench.py SQLITE_FILE POOL_SIZE

then commands on stdin, one per line, each answered with one JSON line on
stdout (logs go to stderr):

    run N C       N runs of the workflow, C in flight (a thread pool of C
                  threads, each calling the workflow function, which runs it
                  in that thread); answers runs, failed, wall_s, runs_per_s,
                  p50_ms, p99_ms, first_error
    settings      the SQLite settings of DBOS's own connections
                  (journal_mode, synchronous, ...) and the DBOS version
    exit          DBOS.destroy() and exit

The bench drives it from bash as a coprocess, so it can sample this
process's memory and attach strace to it around one `run` only.
"""

import json
import math
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version

from dbos import DBOS, DBOSConfig, SetWorkflowID

database, pool_size = sys.argv[1], int(sys.argv[2])
config: DBOSConfig = {
    "name": "bench-peers",
    "system_database_url": f"sqlite:///{database}",
    "sys_db_pool_size": pool_size,
    "log_level": "WARNING",
}
dbos = DBOS(config=config)


def stamp(value: dict, field: str) -> dict:
    return {**value, field: True}


@DBOS.step()
def s1(value: dict) -> dict:
    return stamp(value, "s1")


@DBOS.step()
def s2(value: dict) -> dict:
    return stamp(value, "s2")


@DBOS.step()
def s3(value: dict) -> dict:
    return stamp(value, "s3")


@DBOS.workflow()
def stamp_workflow(value: dict) -> dict:
    return s3(s2(s1(value)))


DBOS.launch()
batch = uuid.uuid4().hex[:8]


def one(i: int, tag: str) -> tuple[float, bool, str | None]:
    started = time.perf_counter()
    try:
        # A fresh workflow id per run, so every run executes (none is a replay).
        with SetWorkflowID(f"{tag}-{batch}-{i}"):
            result = stamp_workflow({"i": i, "tag": tag})
        ok = result.get("s3") is True
        error = None if ok else f"unexpected result {result!r}"
    except Exception as exc:  # noqa: BLE001 - reported, counted as failed
        ok, error = False, repr(exc)
    return (time.perf_counter() - started) * 1000, ok, error


def run(total: int, concurrency: int, tag: str) -> dict:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        # Start every thread before the clock does.
        barrier = threading.Barrier(concurrency + 1)
        warm = [pool.submit(barrier.wait) for _ in range(concurrency)]
        barrier.wait()
        for future in warm:
            future.result()
        begin = time.perf_counter()
        results = list(pool.map(lambda i: one(i, tag), range(total)))
        wall = time.perf_counter() - begin
    latencies = sorted(ms for ms, ok, _ in results if ok)
    failed = sum(1 for _, ok, _ in results if not ok)
    first_error = next((error for _, ok, error in results if not ok), None)

    def pick(q: float) -> float | None:
        if not latencies:
            return None
        index = min(len(latencies) - 1, max(0, math.ceil(q * len(latencies)) - 1))
        return round(latencies[index], 2)

    return {
        "runs": total,
        "failed": failed,
        "wall_s": round(wall, 3),
        "runs_per_s": round((total - failed) / wall, 1),
        "p50_ms": pick(0.5),
        "p99_ms": pick(0.99),
        "first_error": first_error,
    }


def settings() -> dict:
    # Through DBOS's own engine, so the connection has DBOS's connect hooks.
    import sqlalchemy as sa

    engine = dbos._sys_db.engine  # noqa: SLF001 - no public accessor
    names = ["journal_mode", "synchronous", "locking_mode", "wal_autocheckpoint", "busy_timeout"]
    out = {"dbos_version": version("dbos"), "sqlite_version": None}
    with engine.connect() as conn:
        out["sqlite_version"] = conn.execute(sa.text("select sqlite_version()")).scalar()
        for name in names:
            out[name] = conn.execute(sa.text(f"PRAGMA {name}")).scalar()
    out["isolation"] = "BEGIN IMMEDIATE (DBOS sets isolation_level=IMMEDIATE)"
    return out


def answer(value: dict) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


answer({"ready": True})
for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "run":
        answer(run(int(words[1]), int(words[2]), words[3] if len(words) > 3 else "run"))
    elif words[0] == "settings":
        answer(settings())
    elif words[0] == "exit":
        break
    else:
        answer({"error": f"unknown command {line.strip()!r}"})
DBOS.destroy()
answer({"bye": True})
