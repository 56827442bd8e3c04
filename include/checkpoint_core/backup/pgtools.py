"""Running pg_dump and pg_restore without putting a password on a command line.

The DSN is split into libpq environment variables; the password goes into a private
passfile (mode 0600) that lives only as long as the tool runs, because a command line is
visible to every user in ``ps`` and some systems show environments too. Keys libpq has no
variable for travel in ``--dbname`` as a conninfo, which never holds a secret.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from include.checkpoint_core.backup.errors import BackupError, ToolMissing
from include.checkpoint_core.errors import ConnectionSettingsWrong
from include.checkpoint_core.postgres_store import describe_dsn

ENV_VARS = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER",
    "passfile": "PGPASSFILE", "channel_binding": "PGCHANNELBINDING", "service": "PGSERVICE",
    "options": "PGOPTIONS", "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE",
    "requiressl": "PGREQUIRESSL", "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslrootcert": "PGSSLROOTCERT", "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI", "requirepeer": "PGREQUIREPEER", "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION", "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME", "gsslib": "PGGSSLIB", "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING", "target_session_attrs": "PGTARGETSESSIONATTRS",
}
SECRET_KEYS = {"password", "sslpassword"}


def find_tool(name: str, pg_bin_dir: str | os.PathLike | None = None) -> str:
    path = shutil.which(name, path=str(pg_bin_dir)) if pg_bin_dir else shutil.which(name)
    if not path:
        where = f" in {pg_bin_dir}" if pg_bin_dir else " on PATH"
        raise ToolMissing(f"{name} was not found{where}.")
    return path


def tool_version(tool: str) -> tuple[str, int]:
    """``pg_dump (PostgreSQL) 15.20`` and its major version, 15."""
    text = subprocess.run([tool, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    match = re.search(r"(\d+)(?:\.(\d+))?", text)
    if not match:
        raise ToolMissing(f"{tool} --version printed {text!r}: not a PostgreSQL client tool.")
    return text, int(match.group(1))


def check_tool_for_server(tool: str, server_version_num: int) -> str:
    """pg_dump refuses servers newer than itself; say so before it runs, with the versions."""
    text, major = tool_version(tool)
    server_major = server_version_num // 10000
    if major < server_major:
        raise ToolMissing(
            f"{Path(tool).name} is version {major} but the server is PostgreSQL {server_major}: "
            "a client tool cannot read a newer server."
        )
    return text


def _escape_passfile(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def libpq_env(dsn: str, *, dbname: str | None = None) -> Iterator[tuple[dict[str, str], str]]:
    """(environment, ``--dbname`` conninfo) for a client tool reaching ``dsn``.

    The worker's own PG* variables are dropped, so the tool reaches exactly what the DSN says.
    """
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        raise ConnectionSettingsWrong("the PostgreSQL connection string cannot be parsed.") from None
    if parts.get("sslpassword"):
        raise ConnectionSettingsWrong(
            f"the connection to {describe_dsn(dsn)} uses sslpassword, which pg_dump cannot take without showing it.",
            hint="Use an unencrypted client key file readable only by the worker, or a service file.",
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    leftovers = {"dbname": dbname or parts.get("dbname") or ""}
    for key, value in parts.items():
        if key in SECRET_KEYS or key == "dbname" or value in (None, ""):
            continue
        if key in ENV_VARS:
            env[ENV_VARS[key]] = str(value)
        else:
            leftovers[key] = str(value)  # e.g. keepalives: harmless to show
    with tempfile.TemporaryDirectory(prefix="checkpoint-ops-pg-") as tmp:
        if parts.get("password"):
            passfile = Path(tmp) / "pgpass"
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"*:*:*:*:{_escape_passfile(str(parts['password']))}\n")
            env["PGPASSFILE"] = str(passfile)
        yield env, make_conninfo(**{k: v for k, v in leftovers.items() if v})


def scrub(text: str, dsn: str) -> str:
    """A tool's stderr for an error message, with the password cut out should it appear."""
    try:
        secret = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        secret = None
    text = " ".join(text.split())
    if secret:
        text = text.replace(str(secret), "***")
    return text[-2000:]


def run_tool(args: list[str], dsn: str, *, dbname: str | None = None, error=BackupError, what: str = "") -> str:
    """Run a client tool to completion; raise ``error`` with its (scrubbed) stderr on failure."""
    with libpq_env(dsn, dbname=dbname) as (env, conninfo):
        proc = subprocess.run([*args, f"--dbname={conninfo}"], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise error(f"{what or Path(args[0]).name} failed (exit {proc.returncode}): {scrub(proc.stderr, dsn)}")
    return proc.stderr


@contextmanager
def start_tool(args: list[str], dsn: str, *, dbname: str | None = None) -> Iterator[subprocess.Popen]:
    """A tool running in the background while the caller works (pg_dump beside the checksums).

    Killed if the caller fails, so a failed backup never leaves a pg_dump holding a snapshot.
    """
    with libpq_env(dsn, dbname=dbname) as (env, conninfo):
        proc = subprocess.Popen([*args, f"--dbname={conninfo}"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()
