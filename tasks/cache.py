"""Resumable runs: the stages after extract are cached on what decides their output.

A stage's cache key is the hash of its name, the code version, its plain parameters (the config as
JSON, numbers, strings) and the content of every input file it is given a path to (the rows of a
Parquet table, the bytes of anything else). Re-running a failed
run with the same as-of therefore finds the stages that finished (clean, backtest, training, forecast)
and takes their results instead of recomputing them; new data, another config or another lstmcast
changes the key. The key also holds a token kept in the run's folder: deleting a run's files forgets
its cache, so a cached result never points at files that are gone. Results are stored where Prefect
keeps task results (PREFECT_LOCAL_STORAGE_PATH, or the result storage a deployment configures).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pandas as pd
from prefect.context import TaskRunContext
from pydantic import BaseModel

TOKEN = ".cache-token"
_SOURCES = ("lstm_model", "tasks")


@cache
def code_version() -> str:
    """lstmcast's version plus a digest of the modelling and stage sources: an edited stage is new code."""
    root = Path(__file__).resolve().parents[1]
    release = version("lstmcast")  # the installed distribution's metadata, not an upward import
    digest = hashlib.sha256(release.encode())
    for package in _SOURCES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return f"{release}+{digest.hexdigest()[:12]}"


def content_digest(path: str | Path) -> str:
    """SHA-256 of a file, or of every file under a folder (names and bytes, in name order)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_token(folder: Path) -> str:
    """A random token created with the folder's first cached stage and kept until the folder goes."""
    path = folder / TOKEN
    try:
        with path.open("x") as fh:
            fh.write(uuid.uuid4().hex)
    except FileExistsError:
        pass
    return path.read_text().strip()


def table_digest(path: str | Path) -> str:
    """SHA-256 of a Parquet file or folder's rows in key order: the same data written in other batches,
    files or row order (a full read against an incremental one) gives the same digest."""
    frame = pd.read_parquet(path)
    keys = [c for c in ("series_id", "ts") if c in frame.columns]
    if keys:
        frame = frame.sort_values(keys, kind="stable")
    digest = hashlib.sha256(",".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _part(name: str, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, str) and name.endswith("_path") and Path(value).exists():
        digest = table_digest(value) if value.endswith(".parquet") else content_digest(value)
        return {"path": value, "sha256": digest}
    if isinstance(value, list | tuple):
        return [_part(name, v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def stage_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The cache key of a stage run (see the module docstring)."""
    parts: dict[str, Any] = {"stage": context.task.name, "code": code_version()}
    parts |= {name: _part(name, value) for name, value in sorted(parameters.items())}
    folders = sorted(
        {
            str(Path(v).parent)
            for k, v in parameters.items()
            if k.endswith("_path") and isinstance(v, str) and Path(v).exists()
        }
    )
    parts["tokens"] = [folder_token(Path(f)) for f in folders]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached(task: Any) -> Any:
    """`task` with its result persisted and looked up by `stage_key`."""
    return task.with_options(cache_key_fn=stage_key, persist_result=True)
