"""Batch files and the manifest: the export's durable, checksummed hand-off to the import.

A batch is one msgpack document holding up to ``batch_size`` raw source rows of one table
(bytes stay bytes). The manifest lists every batch with its row count, key range and sha256,
so an import on any worker can prove it read exactly what the export wrote. ``folder`` is any
path-like object with ``/``, ``read_bytes``, ``write_bytes``, ``exists`` and ``mkdir``:
``pathlib.Path`` locally, or Airflow's ``ObjectStoragePath`` for S3.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import ormsgpack

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class BatchCorrupt(ValueError):
    """A batch file does not match the checksum the manifest recorded."""


@dataclass(frozen=True)
class BatchInfo:
    table: str
    number: int
    file: str
    rows: int
    first_key: list
    last_key: list
    sha256: str
    size_bytes: int


@dataclass
class Manifest:
    migration_id: str
    source: str
    snapshot_sha256: str
    watermarks: dict[str, int]
    counts: dict[str, int]
    batch_size: int
    schema_version: int
    batches: list[BatchInfo] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    # The opt-in repair, fixed at export so import, verify and catch-up all apply the same rule.
    repair_nul: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Manifest":
        data = json.loads(text)
        data["batches"] = [BatchInfo(**b) for b in data.get("batches", [])]
        return cls(**data)

    def by_table(self, table: str) -> list[BatchInfo]:
        return [b for b in self.batches if b.table == table]


def _key(row: tuple, key_idx: list[int]) -> list:
    return [row[i] for i in key_idx]


def write_batch(folder: Any, table: str, number: int, rows: list[tuple], key_idx: list[int]) -> BatchInfo:
    data = ormsgpack.packb({"table": table, "rows": [list(r) for r in rows]})
    name = f"{table}-{number:06d}.msgpack"
    (folder / name).write_bytes(data)
    return BatchInfo(
        table=table,
        number=number,
        file=name,
        rows=len(rows),
        first_key=_key(rows[0], key_idx),
        last_key=_key(rows[-1], key_idx),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )


def read_batch(folder: Any, info: BatchInfo) -> list[list]:
    data = (folder / info.file).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != info.sha256:
        raise BatchCorrupt(
            f"batch {info.file} has sha256 {digest[:12]}…, the manifest says {info.sha256[:12]}…: "
            "it changed after the export. Clear the export task to write it again."
        )
    return ormsgpack.unpackb(data)["rows"]


def write_manifest(folder: Any, manifest: Manifest) -> None:
    (folder / MANIFEST).write_text(manifest.to_json())


def read_manifest(folder: Any) -> Manifest | None:
    path = folder / MANIFEST
    if not path.exists():
        return None
    return Manifest.from_json(path.read_text())
