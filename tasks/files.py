"""Files the stages share: where a run's files live, and writes that land whole or not at all.

Every file is written under a hidden temp name beside its final one and renamed into place, so a reader
or a resumed run never sees a partial file, and a failed write names the file it was writing.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from tasks._log import warn_once
from tasks.config import PipelineConfig

# errors of a file system that cannot hard-link these files: across devices, not allowed, not supported
_NO_LINKS = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


def pipeline_dir(cfg: PipelineConfig) -> Path:
    """One folder per pipeline: its incremental store, watermark, models and runs."""
    return Path(cfg.data.data_dir) / cfg.name


def run_dir(cfg: PipelineConfig, as_of: pd.Timestamp) -> Path:
    """Where one as-of's intermediate files live: one folder per pipeline and as-of."""
    return pipeline_dir(cfg) / f"as_of={as_of.strftime('%Y%m%dT%H%M%S')}"


def models_dir(cfg: PipelineConfig) -> Path:
    """Checkpoints, named by version, outlive the run folders that trained them."""
    return pipeline_dir(cfg) / "models"


def write_error(path: Path, exc: OSError) -> OSError:
    """`exc` restated with the file being written (pyarrow's messages name none); the errno is kept, so a
    full disk still reads as ENOSPC."""
    if exc.errno is None:
        return OSError(f"cannot write {path}: {exc}")
    return OSError(exc.errno, f"cannot write {path}: {os.strerror(exc.errno)}")


def temp_path(path: Path) -> Path:
    """A hidden name beside `path`, unique to this write."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """Yields a temp path to write; renamed to `path` when the block ends, removed when it fails."""
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    with atomic_write(path) as tmp:
        frame.to_parquet(tmp, index=False)


def write_bytes_atomic(data: bytes, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(text: str, path: Path) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def swap_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder `tmp` in place of `final` (a folder, or a file from older layouts)."""
    old = final.with_name(f".{final.name}.{uuid.uuid4().hex}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.is_dir():
        shutil.rmtree(old)
    else:
        old.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to a file that is never modified in place; a copy where the file system cannot link
    (said once, at WARNING). Any other error, a full disk included, is raised, not copied around."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise write_error(target, exc) from exc
        warn_once("hard-link", "cannot hard-link %s (%s): copying the store's files instead", source, exc)
        try:
            shutil.copyfile(source, target)
        except OSError as copy_exc:
            raise write_error(target, copy_exc) from copy_exc
