"""What offloading costs per checkpoint value: dumps_typed + loads_typed with and without it.

    python benchmarks/offload.py [--rounds 1.0]

Baseline: a plain ``JsonPlusSerializer``. Offload: ``OffloadSerializer`` (default 64 KiB
threshold) over a moto S3 server on 127.0.0.1 (run in a child process, so the server does not
share this process's GIL) and over a ``LocalBlobStore`` in a temp directory. Each value is a
PDF-like bytes payload of the given size inside a small dict, as a state channel holds it.

A second table puts the same values through the savers (``put`` + ``get_tuple`` of a checkpoint
holding the value, on a fresh thread each round): SqliteSaver on a temp file and PostgresSaver
on a scratch database, where the baseline has to write and read the bytes itself.

Every round serializes a *different* value (fresh random bytes), so each dumps really hashes
and uploads (no dedup hit), and the serializer's read cache is off (``cache_bytes=0``), so each
loads really downloads and verifies the sha256: the worst case, a cold process. Times are the
median of the rounds, in milliseconds; "x base" is (dumps + loads) over the baseline's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import uuid
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

SIZES = [("1 KB", 1024), ("64 KB", 64 * 1024), ("1 MB", 1024 * 1024), ("5 MB", 5 * 1024 * 1024)]
ROUNDS = {1024: 200, 64 * 1024: 100, 1024 * 1024: 30, 5 * 1024 * 1024: 12}
ADMIN_DSN = os.environ.get("CHECKPOINT_OPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _serve(queue, stop) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    queue.put(server.get_host_and_port())
    stop.wait()
    server.stop()


def _value(size: int, rng: random.Random) -> dict:
    return {"name": "attachment.pdf", "mime": "application/pdf", "pdf": b"%PDF-1.7\n" + rng.randbytes(size - 9)}


def _measure(serde, size: int, rounds: int, seed: int) -> tuple[float, float, int]:
    """Median dumps and loads times (ms) and the bytes the checkpoint row would hold."""
    rng = random.Random(seed)
    dumps, loads, stored = [], [], 0
    for _ in range(rounds):
        value = _value(size, rng)
        t0 = time.perf_counter()
        typed = serde.dumps_typed(value)
        t1 = time.perf_counter()
        back = serde.loads_typed(typed)
        t2 = time.perf_counter()
        assert back == value
        dumps.append((t1 - t0) * 1000)
        loads.append((t2 - t1) * 1000)
        stored = len(typed[1])
    return statistics.median(dumps), statistics.median(loads), stored


def _measure_saver(saver, size: int, rounds: int, seed: int) -> tuple[float, float]:
    """Median put and get_tuple times (ms) for a checkpoint whose one channel holds the value."""
    from langgraph.checkpoint.base import empty_checkpoint

    rng = random.Random(seed)
    puts, gets = [], []
    for _ in range(rounds):
        value = _value(size, rng)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"doc": value}
        checkpoint["channel_versions"] = {"doc": saver.get_next_version(None, None)}
        config = {"configurable": {"thread_id": uuid.uuid4().hex, "checkpoint_ns": ""}}
        t0 = time.perf_counter()
        saved = saver.put(config, checkpoint, {"source": "input", "step": -1}, checkpoint["channel_versions"])
        t1 = time.perf_counter()
        got = saver.get_tuple(saved)
        t2 = time.perf_counter()
        assert got.checkpoint["channel_values"]["doc"] == value
        puts.append((t1 - t0) * 1000)
        gets.append((t2 - t1) * 1000)
    return statistics.median(puts), statistics.median(gets)


def _saver_table(serdes: dict, rounds_scale: float, tmp: str) -> list[tuple]:
    """put + get_tuple per backend and serializer; ``serdes`` maps a name to a serializer factory."""
    from contextlib import closing

    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.checkpoint.sqlite import SqliteSaver

    from include.checkpoint_core.postgres_store import open_postgres_pool, setup_postgres
    from include.checkpoint_core.sqlite_store import connect_sqlite, setup_sqlite

    rows = []
    db = f"cpo_bench_offload_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db}"')
    dsn = psycopg.conninfo.make_conninfo(ADMIN_DSN, dbname=db)
    try:
        setup_postgres(dsn, include_store=False)
        with closing(open_postgres_pool(dsn)) as pool:
            for label, size in SIZES[1:]:
                rounds = max(3, round(ROUNDS[size] * rounds_scale / 2))
                for backend in ("SqliteSaver", "PostgresSaver"):
                    base = None
                    for mode, serde in serdes.items():
                        if backend == "SqliteSaver":
                            path = Path(tmp) / f"{uuid.uuid4().hex}.sqlite"
                            setup_sqlite(path)
                            with closing(connect_sqlite(path)) as conn:
                                put, get = _measure_saver(SqliteSaver(conn, serde=serde()), size, rounds, size + 1)
                        else:
                            put, get = _measure_saver(PostgresSaver(pool, serde=serde()), size, rounds, size + 1)
                        base = base or (put + get)
                        rows.append((label, backend, mode, rounds, put, get, put + get, (put + get) / base))
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=float, default=1.0, help="scale the number of rounds per size")
    args = parser.parse_args()

    import boto3
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    from include.checkpoint_core.offload import LocalBlobStore, OffloadSerializer, S3BlobStore

    ctx = mp.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=_serve, args=(queue, stop), daemon=True)
    server.start()
    try:
        host, port = queue.get(timeout=60)
        client = boto3.client("s3", endpoint_url=f"http://{host}:{port}", region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        client.create_bucket(Bucket="offload-bench")
        with tempfile.TemporaryDirectory(prefix="offload-bench-") as tmp:
            modes = {
                "baseline (JsonPlus)": JsonPlusSerializer(),
                "offload -> moto S3": OffloadSerializer(blobs=S3BlobStore(client, "offload-bench"), cache_bytes=0),
                "offload -> local dir": OffloadSerializer(blobs=LocalBlobStore(tmp), cache_bytes=0),
            }
            for serde in modes.values():  # warm imports, connections, the server's first request
                _measure(serde, 128 * 1024, 3, seed=0)
            rows = []
            for label, size in SIZES:
                rounds = max(3, round(ROUNDS[size] * args.rounds))
                base = None
                for mode, serde in modes.items():
                    d, l, stored = _measure(serde, size, rounds, seed=size)
                    base = base or (d + l)
                    rows.append((label, mode, rounds, stored, d, l, d + l, (d + l) / base))
            # Fresh serializers and values the first table never saw: every put uploads, every get downloads.
            s3 = S3BlobStore(client, "offload-bench")
            saver_rows = _saver_table({
                "baseline (JsonPlus)": JsonPlusSerializer,
                "offload -> moto S3": lambda: OffloadSerializer(blobs=s3, cache_bytes=0),
            }, args.rounds, tmp)
    finally:
        stop.set()
        server.join(timeout=30)

    header = f"{'value':>6} | {'serializer':<20} | {'rounds':>6} | {'row bytes':>9} | {'dumps ms':>9} | " \
             f"{'loads ms':>9} | {'total ms':>9} | {'x base':>7}"
    print(header)
    print("-" * len(header))
    for label, mode, rounds, stored, d, l, t, ratio in rows:
        print(f"{label:>6} | {mode:<20} | {rounds:>6} | {stored:>9,} | {d:>9.4f} | {l:>9.4f} | {t:>9.4f} | "
              f"{ratio:>6.2f}x")
    print("\nrow bytes: what the checkpoint store keeps for the value (the reference, once offloaded).")
    print("Offload threshold 64 KiB: the 1 KB value stays inline; 64 KB (+ dict overhead) just crosses it.\n")

    header = f"{'value':>6} | {'saver':<13} | {'serializer':<20} | {'rounds':>6} | {'put ms':>8} | " \
             f"{'get ms':>8} | {'total ms':>8} | {'x base':>7}"
    print(header)
    print("-" * len(header))
    for label, backend, mode, rounds, put, get, t, ratio in saver_rows:
        print(f"{label:>6} | {backend:<13} | {mode:<20} | {rounds:>6} | {put:>8.2f} | {get:>8.2f} | {t:>8.2f} | "
              f"{ratio:>6.2f}x")


if __name__ == "__main__":
    main()
