import errno
import logging
import os

import pandas as pd
import pytest

import tasks._log
import tasks.files
from tasks.files import atomic_write, link_or_copy, write_parquet_atomic


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(tasks._log, "_warned", set())


def test_an_atomic_write_lands_whole_or_leaves_nothing(tmp_path):
    path = tmp_path / "history.parquet"
    write_parquet_atomic(pd.DataFrame({"a": [1, 2]}), path)
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]
    with pytest.raises(RuntimeError, match="^boom$"), atomic_write(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]  # the old file stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["history.parquet"]  # no temp file left


def test_a_failed_write_names_the_file_and_keeps_the_errno(tmp_path):
    path = tmp_path / "quality.parquet"
    with pytest.raises(OSError) as err, atomic_write(path):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert err.value.errno == errno.ENOSPC
    assert str(err.value) == f"[Errno 28] cannot write {path}: No space left on device"


def test_a_file_system_without_hard_links_gets_copies_and_one_warning(tmp_path, monkeypatch, caplog):
    def no_links(source, target):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(tasks.files.os, "link", no_links)
    (tmp_path / "a").write_text("one")
    (tmp_path / "b").write_text("two")
    with caplog.at_level(logging.WARNING, logger="lstmcast"):
        link_or_copy(tmp_path / "a", tmp_path / "a2")
        link_or_copy(tmp_path / "b", tmp_path / "b2")
    assert (tmp_path / "a2").read_text() == "one" and (tmp_path / "b2").read_text() == "two"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"cannot hard-link {tmp_path / 'a'} ([Errno 18] Invalid cross-device link)")


def test_a_full_disk_is_an_error_not_a_reason_to_copy(tmp_path, monkeypatch):
    def full(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(tasks.files.os, "link", full)
    (tmp_path / "a").write_text("one")
    with pytest.raises(OSError, match=r"^\[Errno 28\] cannot write .*/a2: No space left on device$"):
        link_or_copy(tmp_path / "a", tmp_path / "a2")
    assert not (tmp_path / "a2").exists()
