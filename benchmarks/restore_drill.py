"""The backup and the restore drill on a store of a million checkpoints, against plain pg_dump/pg_restore.

    make bench-restore          # or: python benchmarks/restore_drill.py [--checkpoints 1000000] [--s3]
                                #                                        [--sample-threads 5]

One scratch PostgreSQL database (dropped at the end), set up with PostgresSaver's migrations and
filled by COPY: the checkpoints of ``benchmarks/metadata_queries.py``'s generator, then, read
back in the order they were written, ~2.4 pending writes per checkpoint and two blob rows per
turn (the turn's input, the message history at its end), with payloads of the sample agent's
shapes and sizes, serialized by LangGraph's own serializer so the saver loads them.

Then, in this order, on the same database:

- baseline: ``pg_dump -Fc`` to a file, ``CREATE DATABASE`` + ``pg_restore`` of it, drop: what an
  operator would do by hand, with no manifest, checksum, canary or verification;
- backup:   ``take_backup`` (what CheckpointBackupOperator runs) into an artifacts folder: a
  ``file://`` ObjectStoragePath, or with ``--s3`` an ``s3://checkpoint_artifacts@bucket/...`` one
  on a moto S3 server over HTTP, as the product's artifacts root;
- drill:    ``restore_drill`` (what CheckpointRestoreDrillOperator runs) of that backup:
  download + sha256, restore into a scratch database, counts and checksums against the
  manifest, canary, ``--sample-threads`` threads loaded through PostgresSaver, drop.

The backup and the drill each run in a fresh Python process of this script (``--worker``):
its peak RSS is that phase's own (printed with what the imports alone take), and its pg_dump /
pg_restore are measured apart, as are the baseline's tools. Peaks are VmHWM from /proc, with
``getrusage`` printed beside them: Linux charges an exec'd process with the RSS its (v)forked
copy of the parent had, so RUSAGE_SELF of a worker and RUSAGE_CHILDREN of a tool start at the
spawning process's size (with --s3 this process holds the moto server's objects). The split of the drill's verify step (checksums, saver
loads) and of the backup (checksums beside pg_dump, upload) comes from wrapping those core
functions with timers in the worker; their behaviour is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks.scratch_db import ADMIN_DSN, create_db, drop_db  # noqa: E402

TABLES = ("checkpoints", "checkpoint_writes", "checkpoint_blobs", "checkpoint_migrations")
# Writes per checkpoint: 1-4, mean 2.4. Kinds, as the sample agent writes them: a control
# write (branch:to:<node>, null), a small value, research notes, a new message.
WRITE_COUNTS, WRITE_COUNT_WEIGHTS = (1, 2, 3, 4), (20, 35, 30, 15)
NODES = ("intake", "research", "tools", "assess_sentiment", "check_policy", "plan_action", "respond", "summarize")
SMALL_CHANNELS = ("intent", "findings", "outcome", "user_id", "sources")
MB = 1024 * 1024


# --------------------------------------------------------------------------------------- the store

def _corpus(rng: random.Random, words: int = 600_000) -> str:
    """Text payloads are slices of this: word-like, compressing about as English does."""
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocab = ["".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 10))) for _ in range(4000)]
    zipf = [1 / (i + 1) for i in range(len(vocab))]
    return " ".join(rng.choices(vocab, zipf, k=words))


def add_writes_and_blobs(dsn: str, seed: int = 11) -> None:
    """COPY pending writes and blobs for the checkpoints already in ``dsn``, streamed in write order."""
    import psycopg
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    rng = random.Random(seed)
    rnd, bits = rng.random, rng.getrandbits  # the bare calls: this loop runs 2.4 times per checkpoint
    text = _corpus(rng)
    span = len(text) - 2000
    dumps = JsonPlusSerializer().dumps_typed
    count_at = [sum(WRITE_COUNT_WEIGHTS[:i + 1]) / sum(WRITE_COUNT_WEIGHTS) for i in range(len(WRITE_COUNTS))]

    def pick(seq):
        return seq[int(rnd() * len(seq))]

    def words(lo: int, hi: int) -> str:
        start = int(rnd() * span)
        return text[start:start + lo + int(rnd() * (hi - lo + 1))]

    def message(kind: str, lo: int, hi: int) -> dict:
        return {"type": kind, "content": words(lo, hi), "id": f"run-{bits(64):016x}"}

    def hexed(value) -> tuple[str, str]:
        type_, blob = dumps(value)
        return type_, "\\\\x" + blob.hex()

    null = hexed(None)

    turns_of: dict[str, int] = {}
    with psycopg.connect(dsn) as reader, psycopg.connect(dsn) as wconn, psycopg.connect(dsn) as bconn, \
            reader.cursor(name="checkpoints_in_order") as cur, wconn.cursor() as wcur, bconn.cursor() as bcur:
        cur.itersize = 20_000
        # A fresh heap: the sequential scan returns rows in the order load() wrote them (turns contiguous).
        cur.execute("SELECT thread_id, checkpoint_id, metadata->>'source', checkpoint->'channel_versions'->>'messages' "
                    "FROM checkpoints")
        with wcur.copy("COPY checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
                       "blob, task_path) FROM STDIN") as wcopy, \
                bcur.copy("COPY checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
                          "FROM STDIN") as bcopy:
            wlines: list[str] = []
            blines: list[str] = []
            prev = None

            def end_of_turn(thread_id: str, version: str) -> None:
                # The message history at the turn's end: what the thread's newest checkpoint loads.
                n = turns_of[thread_id]
                history = [message("human" if i % 2 == 0 else "ai", 60, 250) for i in range(min(2 * n, 12))]
                blines.append("\t".join((thread_id, "", "messages", version, *hexed(history))))

            for thread_id, checkpoint_id, source, version in cur:
                if prev is not None and (source == "input" or prev[0] != thread_id):
                    end_of_turn(prev[0], prev[1])
                if source == "input":
                    turns_of[thread_id] = turns_of.get(thread_id, 0) + 1
                    blines.append("\t".join((thread_id, "", "__start__", version,
                                             *hexed({"messages": [message("human", 40, 400)]}))))
                h = f"{bits(128):032x}"
                task_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
                path = f"~__pregel_pull, {pick(NODES)}"
                r = rnd()
                n_writes = WRITE_COUNTS[next(i for i, c in enumerate(count_at) if r < c)]
                for idx in range(n_writes):
                    r = rnd()
                    if r < 0.38:
                        channel, (type_, blob) = f"branch:to:{pick(NODES)}", null
                    elif r < 0.68:
                        channel, (type_, blob) = pick(SMALL_CHANNELS), hexed(words(5, 40))
                    elif r < 0.80:
                        channel, (type_, blob) = "notes", hexed(words(200, 400))
                    else:
                        channel, (type_, blob) = "messages", hexed([message("ai", 100, 1000)])
                    wlines.append("\t".join((thread_id, "", checkpoint_id, task_id, str(idx), channel, type_, blob, path)))
                prev = (thread_id, version)
                if len(wlines) >= 20_000:
                    wcopy.write("\n".join(wlines) + "\n")
                    wlines.clear()
                if len(blines) >= 5_000:
                    bcopy.write("\n".join(blines) + "\n")
                    blines.clear()
            if prev is not None:
                end_of_turn(prev[0], prev[1])
            if wlines:
                wcopy.write("\n".join(wlines) + "\n")
            if blines:
                bcopy.write("\n".join(blines) + "\n")
        reader.rollback()  # the named cursor's transaction; wconn and bconn commit on leaving


def build_store(dsn: str, n_checkpoints: int) -> dict[str, float]:
    """Seconds of each step: the checkpoints, their writes and blobs, VACUUM."""
    import psycopg

    from benchmarks.metadata_queries import load
    from include.checkpoint_core.postgres_store import setup_postgres

    took = {}
    t0 = time.perf_counter()
    setup_postgres(dsn, include_store=False)
    load(dsn, n_checkpoints)
    took["checkpoints"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    add_writes_and_blobs(dsn)
    took["writes and blobs"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # hint bits set and the pages read: no phase pays for the load
        conn.execute("CHECKPOINT")
    took["VACUUM ANALYZE + CHECKPOINT"] = time.perf_counter() - t0
    return took


def store_stats(dsn: str) -> dict[str, tuple[int, int]]:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return {t: conn.execute(f"SELECT (SELECT count(*) FROM {t}), pg_total_relation_size('{t}')").fetchone()
                for t in TABLES}


# --------------------------------------------------------------------------------------- tool memory

class ToolPeakRSS:
    """Peak RSS (VmHWM) of this process's child processes, polled from /proc while they run.

    RUSAGE_CHILDREN (and wait4) cannot tell a pg_dump's own memory: Linux charges an exec'd
    child with the RSS its (v)forked copy had before exec, i.e. the whole Python process. VmHWM
    belongs to the address space exec gave the tool: the tool's own peak (to within a poll;
    checked against /usr/bin/time -f %M: 10.4 vs 10.5 MiB for a pg_dump).
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        import threading

        self.interval_s = interval_s
        self.peaks: dict[str, tuple[str, int]] = {}  # pid -> (name, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> None:
        import glob

        own = os.readlink("/proc/self/exe")
        for children in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
            try:
                pids = Path(children).read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    # A child not yet exec'd still runs our binary in (with vfork) our address space.
                    # exe first: once it names another binary, the status read after it is the tool's.
                    if os.readlink(f"/proc/{pid}/exe") == own:
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
                name, hwm = fields.get("Name", "").strip(), int((fields.get("VmHWM") or "0 kB").split()[0])
                if hwm:
                    self.peaks[pid] = (name, max(hwm, self.peaks.get(pid, (name, 0))[1]))

    def peak_kib(self, name: str) -> int | None:
        return max((kib for n, kib in self.peaks.values() if n == name), default=None)


# --------------------------------------------------------------------------------------- baseline

def run_measured(args: list[str]) -> tuple[float, int]:
    """Run a tool to completion: (seconds, its own peak RSS in KiB, polled)."""
    started = time.perf_counter()
    with ToolPeakRSS() as rss:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - started, rss.peak_kib(Path(args[0]).name)


def baseline(dsn: str, tmp: Path) -> dict:
    import psycopg
    from psycopg.conninfo import make_conninfo

    dump = tmp / "baseline.pgdump"
    out = {}
    out["dump_s"], out["dump_rss_kib"] = run_measured(
        [shutil.which("pg_dump"), "--format=custom", "--no-password", f"--file={dump}", f"--dbname={dsn}"])
    out["dump_bytes"] = dump.stat().st_size
    scratch = f"cpo_bench_restore_base_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        t0 = time.perf_counter()
        admin.execute(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
        out["create_s"] = time.perf_counter() - t0
        try:
            out["restore_s"], out["restore_rss_kib"] = run_measured(
                [shutil.which("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error", "--no-password",
                 f"--dbname={make_conninfo(ADMIN_DSN, dbname=scratch)}", str(dump)])
        finally:
            t0 = time.perf_counter()
            admin.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            out["drop_s"] = time.perf_counter() - t0
    dump.unlink()
    return out


# --------------------------------------------------------------------------------------- workers

def vm_hwm_kib(pid: str = "self") -> int:
    """Peak RSS of a process's current address space (not inherited across exec, unlike ru_maxrss)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _timed(timers: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            timers[name] = timers.get(name, 0.0) + time.perf_counter() - t0
    return wrapper


def worker(args) -> int:
    """One phase in this fresh process; one JSON line on stdout."""
    import psycopg  # noqa: F401
    from airflow.sdk import ObjectStoragePath
    from langgraph.checkpoint.postgres import PostgresSaver  # noqa: F401 (the drill imports it lazily)

    import include.checkpoint_core.backup.drill as drill_mod
    import include.checkpoint_core.backup.take as take_mod
    from include.checkpoint_core.backup import restore_drill, take_backup
    from include.checkpoint_core.stores import StoreTarget

    folder = ObjectStoragePath(args.folder)
    if folder.protocol in ("s3", "s3a"):
        folder.fs  # noqa: B018 (the s3fs client and its imports, before the baseline RSS)
    rss_imports = vm_hwm_kib()
    timers: dict[str, float] = {}
    logs: list[str] = []
    t_start = time.perf_counter()

    def log(line: str) -> None:
        logs.append(f"{time.perf_counter() - t_start:7.1f}s  {line}")

    tools = ToolPeakRSS().__enter__()
    if args.worker == "backup":
        take_mod.pg_table_digests = _timed(timers, "checksums", take_mod.pg_table_digests)
        take_mod._offload_references = _timed(timers, "offload_refs", take_mod._offload_references)
        take_mod._write_canary = _timed(timers, "canary", take_mod._write_canary)
        manifest = take_backup(StoreTarget("postgres", args.dsn, "bench_store"), folder, backup_id=args.backup_id,
                               work_dir=args.work_dir, log=log)
        result = {"manifest": manifest}
    else:
        drill_mod.pg_table_digests = _timed(timers, "checksums", drill_mod.pg_table_digests)
        drill_mod._check_threads = _timed(timers, "saver_load", drill_mod._check_threads)
        drill_mod._drop_scratch = _timed(timers, "drop", drill_mod._drop_scratch)
        report = restore_drill(folder, admin_dsn=ADMIN_DSN, min_age_hours=0, backup_id=args.backup_id,
                               sample_threads=args.sample_threads, work_dir=args.work_dir, log=log)
        result = {"report": report}
    tools.__exit__(None, None, None)
    result.update(tool_kib=tools.peak_kib("pg_dump" if args.worker == "backup" else "pg_restore"),
        seconds=time.perf_counter() - t_start, timers=timers, logs=logs, rss_imports_kib=rss_imports,
        rss_self_kib=vm_hwm_kib(), rusage_self_kib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        rss_children_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    print(json.dumps(result, default=str))
    return 0


def run_worker(phase: str, dsn: str, folder: str, backup_id: str, work_dir: Path, sample_threads: int,
               env: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", phase, "--dsn", dsn, "--folder", folder,
           "--backup-id", backup_id, "--work-dir", str(work_dir), "--sample-threads", str(sample_threads)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the {phase} worker failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    for line in result["logs"]:
        print(f"    {line}")
    return result


# --------------------------------------------------------------------------------------- S3

class MotoS3:
    """A moto S3 server over HTTP in this process, reached as the ``checkpoint_artifacts`` connection."""

    def __enter__(self):
        import logging

        import boto3
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self.bucket = f"cpo-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=self.bucket)
        self.conn_env = json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                    "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}})
        return self

    def __exit__(self, *exc):
        self.server.stop()


# --------------------------------------------------------------------------------------- report

def mib(n_bytes: float) -> str:
    return f"{n_bytes / MB:,.0f} MiB"


def row(label: str, ours: float | None, base: float | None, fmt: str, unit: str = "") -> None:
    o = "-" if ours is None else f"{ours:{fmt}}{unit}"
    b = "-" if base is None else f"{base:{fmt}}{unit}"
    ratio = f"{ours / base:6.2f}x" if ours is not None and base else "      -"
    print(f"  {label:<44} {o:>14} {b:>14} {ratio:>8}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoints", type=int, default=1_000_000)
    ap.add_argument("--sample-threads", type=int, default=5, help="threads the drill loads through PostgresSaver")
    ap.add_argument("--s3", action="store_true", help="the artifacts folder on a moto S3 server instead of file://")
    ap.add_argument("--worker", choices=("backup", "drill"), help=argparse.SUPPRESS)
    ap.add_argument("--dsn", help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--backup-id", help=argparse.SUPPRESS)
    ap.add_argument("--work-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    t_run = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="cpo-bench-restore-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.setdefault("AIRFLOW_HOME", str(tmp / "airflow-home"))  # workers import airflow.sdk
    dsn = None
    s3 = MotoS3().__enter__() if args.s3 else None
    try:
        if s3:
            env["AIRFLOW_CONN_CHECKPOINT_ARTIFACTS"] = s3.conn_env
            folder = f"s3://checkpoint_artifacts@{s3.bucket}/backups/bench_store"
        else:
            folder = f"file://{tmp}/artifacts/backups/bench_store"
        print(f"building the store: {args.checkpoints:,} checkpoints by COPY, then writes and blobs ...", flush=True)
        dsn = create_db("restore")
        took = build_store(dsn, args.checkpoints)
        stats = store_stats(dsn)
        total_rows = sum(n for n, _ in stats.values())
        total_bytes = sum(b for _, b in stats.values())
        print(f"built in {sum(took.values()):.0f}s: " + ", ".join(f"{k} {v:.0f}s" for k, v in took.items()) + "\n")
        print(f"  {'table':<24} {'rows':>12} {'per checkpoint':>15} {'total size':>12}")
        for t, (n, b) in stats.items():
            print(f"  {t:<24} {n:>12,} {n / stats['checkpoints'][0]:>15.2f} {mib(b):>12}")
        print(f"  {'store':<24} {total_rows:>12,} {'':>15} {mib(total_bytes):>12}  (pg_total_relation_size)\n",
              flush=True)

        print("baseline: pg_dump -Fc, CREATE DATABASE + pg_restore, drop (no verification) ...", flush=True)
        base = baseline(dsn, tmp)
        print(f"    pg_dump {base['dump_s']:.1f}s, {mib(base['dump_bytes'])}; pg_restore {base['restore_s']:.1f}s\n",
              flush=True)

        print(f"backup: take_backup into {folder} ...", flush=True)
        bk = run_worker("backup", dsn, folder, "bench-backup-1", tmp, args.sample_threads, env)
        manifest = bk["manifest"]
        print(f"\ndrill: restore_drill of {manifest['backup_id']} ...", flush=True)
        dr = run_worker("drill", dsn, folder, manifest["backup_id"], tmp, args.sample_threads, env)
        report = dr["report"]
        if not report["passed"] or report["rows"] != manifest["rows"]:
            print(f"DRILL DID NOT PASS: {report['problems']}")
            return 1

        rto, mt, bt, dt = report["rto_s"], manifest["timings"], bk["timers"], dr["timers"]
        n_ckpt = stats["checkpoints"][0]
        m_ckpt, m_rows = n_ckpt / 1e6, total_rows / 1e6
        where = "S3 (moto over HTTP)" if s3 else "file://"
        print(f"\nresults: {n_ckpt:,} checkpoints, {total_rows:,} rows, {mib(total_bytes)} on disk; "
              f"artifacts on {where}; {os.cpu_count()} CPUs\n")
        print(f"  {'BACKUP':<44} {'ours':>14} {'baseline':>14} {'ours/base':>8}")
        row("seconds (take_backup / pg_dump -Fc)", manifest["duration_s"], base["dump_s"], ".1f", "s")
        row("  pg_dump beside the snapshot's checksums", mt["dump_s"], base["dump_s"], ".1f", "s")
        row("    of which checksums (concurrent)", bt.get("checksums"), None, ".1f", "s")
        row("    of which offload-reference scan", bt.get("offload_refs"), None, ".1f", "s")
        row("  upload to the folder (+ sha256)", mt["upload_s"], None, ".1f", "s")
        row("dump size (MiB)", manifest["size_bytes"] / MB, base["dump_bytes"] / MB, ",.0f")
        row("dump size / store size", manifest["size_bytes"] / total_bytes, base["dump_bytes"] / total_bytes, ".2f")
        row("peak RSS, python process: VmHWM (MiB)", bk["rss_self_kib"] / 1024, None, ",.0f")
        row("  of it after imports, before any work (MiB)", bk["rss_imports_kib"] / 1024, None, ",.0f")
        row("  RUSAGE_SELF maxrss, see note (MiB)", bk["rusage_self_kib"] / 1024, None, ",.0f")
        row("peak RSS, pg_dump: its VmHWM, polled (MiB)", bk["tool_kib"] / 1024, base["dump_rss_kib"] / 1024, ",.1f")
        row("  RUSAGE_CHILDREN maxrss, see note (MiB)", bk["rss_children_kib"] / 1024, None, ",.0f")
        print()
        base_rto = base["create_s"] + base["restore_s"]
        print(f"  {'DRILL (RTO)':<44} {'ours':>14} {'baseline':>14} {'ours/base':>8}")
        row("download (+ sha256)", rto.get("download"), None, ".1f", "s")
        row("pg_restore", rto["restore"], base["restore_s"], ".1f", "s")
        row("verify", rto["verify"], None, ".1f", "s")
        row("  of which counts + checksums", dt.get("checksums"), None, ".1f", "s")
        row(f"  of which saver load of {len(report['sampled_threads'])} threads", dt.get("saver_load"), None, ".2f", "s")
        row("drop scratch database", dt.get("drop"), base["drop_s"], ".1f", "s")
        row("total RTO (base: CREATE DATABASE + pg_restore)", rto["total"], base_rto, ".1f", "s")
        row("peak RSS, python process: VmHWM (MiB)", dr["rss_self_kib"] / 1024, None, ",.0f")
        row("  of it after imports, before any work (MiB)", dr["rss_imports_kib"] / 1024, None, ",.0f")
        row("  RUSAGE_SELF maxrss, see note (MiB)", dr["rusage_self_kib"] / 1024, None, ",.0f")
        row("peak RSS, pg_restore: its VmHWM, polled (MiB)", dr["tool_kib"] / 1024, base["restore_rss_kib"] / 1024,
            ",.1f")
        row("  RUSAGE_CHILDREN maxrss, see note (MiB)", dr["rss_children_kib"] / 1024, None, ",.0f")
        print()
        print("  MEMORY PER MILLION                            per M checkpoints   per M rows   (python peak - imports)")
        for name, r in (("backup", bk), ("drill", dr)):
            grown = (r["rss_self_kib"] - r["rss_imports_kib"]) / 1024
            print(f"  {name + ' python process':<44} {r['rss_self_kib'] / 1024 / m_ckpt:>12,.0f} MiB "
                  f"{r['rss_self_kib'] / 1024 / m_rows:>8,.0f} MiB   {grown:,.0f} MiB "
                  f"({grown / m_rows:,.1f} MiB per M rows)")
        for name, ours, theirs in (("pg_dump", bk["tool_kib"], base["dump_rss_kib"]),
                                   ("pg_restore", dr["tool_kib"], base["restore_rss_kib"])):
            print(f"  {name + ' (ours / baseline)':<44} {ours / 1024 / m_ckpt:>8,.1f}/{theirs / 1024 / m_ckpt:,.1f} MiB "
                  f"{ours / 1024 / m_rows:>6,.1f}/{theirs / 1024 / m_rows:,.1f} MiB")
        print("\n  note: getrusage's maxrss is not a worker's nor a tool's own: Linux charges an exec'd process with the\n"
              "  RSS its (v)forked copy of the parent had before exec (this process for a worker, the worker for a tool).\n"
              "  The peaks above are VmHWM of each process's own address space, read from /proc.")
        print(f"  throughput: backup {total_bytes / MB / manifest['duration_s']:,.0f} MiB/s of store "
              f"(baseline {total_bytes / MB / base['dump_s']:,.0f}); drill {total_bytes / MB / rto['total']:,.0f} "
              f"MiB/s (baseline {total_bytes / MB / base_rto:,.0f})")
        print(f"  drill passed: rows {report['rows']}; sampled threads {', '.join(report['sampled_threads'])}")
        print(f"  worker processes (python start + imports + phase): backup {bk['process_s']:.1f}s, "
              f"drill {dr['process_s']:.1f}s; whole run {time.perf_counter() - t_run:.0f}s")
    finally:
        if dsn:
            drop_db(dsn)
        if s3:
            s3.__exit__(None, None, None)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
