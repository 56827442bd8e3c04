"""Scratch PostgreSQL databases for the benchmarks: made for one run, dropped at its end."""

from __future__ import annotations

import os
import uuid

ADMIN_DSN = os.environ.get("CHECKPOINT_OPS_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def create_db(tag: str, template: str | None = None) -> str:
    """A new database (a copy of ``template``'s, when given); returns its DSN."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = f"cpo_bench_{tag}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        like = f' TEMPLATE "{conninfo_to_dict(template)["dbname"]}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{like}')
    return make_conninfo(ADMIN_DSN, dbname=name)


def drop_db(dsn: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{conninfo_to_dict(dsn)["dbname"]}" WITH (FORCE)')
