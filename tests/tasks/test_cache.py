"""What a stage's cache key depends on (tasks/cache.py): a resumed run may reuse a result only when the
stage, the code, the parameters and the content of the input files are all the same."""

from __future__ import annotations

import hashlib
import re
import shutil
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from prefect import flow, task

import tasks.cache
from tasks.cache import (
    TOKEN,
    cached,
    code_version,
    content_digest,
    folder_token,
    stage_key,
    table_digest,
)
from tasks.config import parse_config
from tests.helpers import sensor_config_dict


@pytest.fixture(autouse=True)
def _fresh_code_version():
    """code_version is computed once per process; tests that change its inputs must not leave theirs."""
    code_version.cache_clear()
    yield
    code_version.cache_clear()


def context(stage: str = "clean") -> SimpleNamespace:
    """The part of Prefect's TaskRunContext a key is made from: the task's name."""
    return SimpleNamespace(task=SimpleNamespace(name=stage))


def readings(values: list[float], series: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    ts = pd.date_range("2020-01-01", periods=len(values), freq="h", tz="UTC")
    return pd.concat(
        [pd.DataFrame({"series_id": s, "ts": ts, "value": values}) for s in series], ignore_index=True
    )


# code version


def test_code_version_is_the_installed_release_plus_a_digest_of_the_sources():
    assert re.fullmatch(rf"{re.escape(version('lstmcast'))}\+[0-9a-f]{{12}}", code_version())
    assert code_version() == code_version()


def test_another_installed_release_is_another_code_version(monkeypatch):
    before = code_version()
    code_version.cache_clear()
    monkeypatch.setattr(tasks.cache, "version", lambda dist: {"lstmcast": "99.0.0"}[dist])
    assert code_version().startswith("99.0.0+")
    assert code_version().split("+")[1] != before.split("+")[1]


@pytest.fixture
def source_tree(tmp_path, monkeypatch) -> Path:
    """A stand-in repository: code_version digests the lstm_model and tasks next to tasks/cache.py."""
    root = tmp_path / "src"
    for name, text in {
        "lstm_model/__init__.py": "",
        "lstm_model/train.py": "EPOCHS = 2\n",
        "tasks/__init__.py": "",
        "tasks/cache.py": "",
        "tasks/clean.py": "GAP = 6\n",
        "flows/nightly.py": "RUNS = 1\n",
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    monkeypatch.setattr(tasks.cache, "__file__", str(root / "tasks" / "cache.py"))
    return root


def recomputed() -> str:
    code_version.cache_clear()
    return code_version()


def test_an_edited_added_or_renamed_model_or_stage_source_is_another_code_version(source_tree):
    versions = [code_version()]
    (source_tree / "tasks/clean.py").write_text("GAP = 7\n")
    versions.append(recomputed())
    (source_tree / "lstm_model/train.py").write_text("EPOCHS = 3\n")
    versions.append(recomputed())
    (source_tree / "lstm_model/extra.py").write_text("")
    versions.append(recomputed())
    (source_tree / "lstm_model/extra.py").rename(source_tree / "lstm_model/renamed.py")
    versions.append(recomputed())
    assert len(set(versions)) == 5


def test_the_flows_and_files_other_than_python_are_not_part_of_the_code_version(source_tree):
    first = code_version()
    (source_tree / "flows/nightly.py").write_text("RUNS = 2\n")
    (source_tree / "tasks/notes.md").write_text("notes")
    (source_tree / "lstm_model/__pycache__").mkdir()
    (source_tree / "lstm_model/__pycache__/train.cpython-311.pyc").write_bytes(b"\x00")
    assert recomputed() == first


# file and table digests


def test_a_file_digest_is_the_sha256_of_its_bytes(tmp_path):
    small, large = tmp_path / "model.pt", tmp_path / "large.bin"
    small.write_bytes(b"weights")
    large.write_bytes(bytes(range(256)) * 12_289)  # over 3 MiB: read in several blocks
    assert content_digest(small) == hashlib.sha256(b"weights").hexdigest()
    assert content_digest(str(large)) == hashlib.sha256(large.read_bytes()).hexdigest()
    small.write_bytes(b"weightz")
    assert content_digest(small) == hashlib.sha256(b"weightz").hexdigest()


def test_a_folder_digest_follows_names_and_bytes_not_location(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        (folder / "sub").mkdir(parents=True)
        (folder / "a.bin").write_bytes(b"A")
        (folder / "sub" / "b.bin").write_bytes(b"B")
    assert content_digest(one) == content_digest(two)
    (two / "empty").mkdir()
    assert content_digest(one) == content_digest(two)  # only files count
    (two / "sub" / "b.bin").write_bytes(b"b")
    assert content_digest(one) != content_digest(two)
    (two / "sub" / "b.bin").write_bytes(b"B")
    (two / "sub" / "b.bin").rename(two / "sub" / "c.bin")
    assert content_digest(one) != content_digest(two)


def test_a_table_digest_follows_the_rows_not_their_order_or_files(tmp_path):
    frame = readings([1.0, 2.0, 3.0, 4.0])
    frame.to_parquet(tmp_path / "one.parquet")
    frame.sample(frac=1.0, random_state=0).to_parquet(tmp_path / "shuffled.parquet")
    folder = tmp_path / "months.parquet"  # the extract's layout: a folder of Parquet files
    folder.mkdir()
    frame.iloc[5:].to_parquet(folder / "2020-02.parquet")
    frame.iloc[:5].to_parquet(folder / "2020-01.parquet")
    digest = table_digest(tmp_path / "one.parquet")
    assert table_digest(tmp_path / "shuffled.parquet") == digest
    assert table_digest(folder) == digest

    readings([1.0, 2.0, 3.0, 4.5]).to_parquet(tmp_path / "changed.parquet")
    frame.assign(value=frame["value"].astype("float32")).to_parquet(tmp_path / "float32.parquet")
    assert table_digest(tmp_path / "changed.parquet") != digest
    assert table_digest(tmp_path / "float32.parquet") != digest  # same numbers, another type


# folder token


def test_a_folder_keeps_its_token_until_the_folder_is_deleted(tmp_path):
    run = tmp_path / "as_of=2020-01-01"
    run.mkdir()
    token = folder_token(run)
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert folder_token(run) == token == (run / TOKEN).read_text()
    other = tmp_path / "as_of=2020-01-02"
    other.mkdir()
    assert folder_token(other) != token
    shutil.rmtree(run)
    run.mkdir()
    assert folder_token(run) != token


# stage keys


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run's folder with a history table and a future file, as clean leaves them."""
    folder = tmp_path / "work" / "sensors" / "as_of=2020-01-01"
    folder.mkdir(parents=True)
    readings([1.0, 2.0, 3.0]).to_parquet(folder / "history.parquet")
    (folder / "future.bin").write_bytes(b"future")
    return folder


@pytest.fixture
def params(run_dir, tmp_path) -> dict:
    cfg = parse_config(sensor_config_dict(f"sqlite:///{tmp_path / 'src.db'}", tmp_path / "work"))
    return {
        "cfg": cfg,
        "history_path": str(run_dir / "history.parquet"),
        "future_path": str(run_dir / "future.bin"),
        "group": 0,
        "series": ("a", "b"),
        "baseline": "seasonal_naive",
    }


def test_the_same_stage_and_inputs_give_the_same_key(params):
    key = stage_key(context(), params)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert stage_key(context(), dict(reversed(params.items()))) == key  # parameter order does not count
    assert stage_key(context("forecast_group"), params) != key


def test_another_config_or_plain_parameter_is_another_key(params, tmp_path):
    key = stage_key(context(), params)
    seed = parse_config(
        sensor_config_dict(f"sqlite:///{tmp_path / 'src.db'}", tmp_path / "work", training={"seed": 1})
    )
    same = parse_config(sensor_config_dict(f"sqlite:///{tmp_path / 'src.db'}", tmp_path / "work"))
    assert stage_key(context(), params | {"cfg": same}) == key  # equal config, another object
    assert stage_key(context(), params | {"cfg": seed}) != key
    assert stage_key(context(), params | {"group": 1}) != key
    assert stage_key(context(), params | {"series": ("a",)}) != key
    assert stage_key(context(), params | {"baseline": "naive"}) != key


def test_new_content_in_an_input_file_is_another_key(params, run_dir):
    key = stage_key(context(), params)
    readings([1.0, 2.0, 3.0]).iloc[::-1].to_parquet(run_dir / "history.parquet")
    assert stage_key(context(), params) == key  # the same rows, rewritten
    readings([1.0, 2.0, 3.5]).to_parquet(run_dir / "history.parquet")
    changed_rows = stage_key(context(), params)
    assert changed_rows != key
    (run_dir / "future.bin").write_bytes(b"future, revised")
    assert stage_key(context(), params) != changed_rows


def test_deleting_the_run_folder_forgets_its_keys(params, run_dir):
    """The same content in a re-created folder must miss: a cached result may point at deleted files."""
    key = stage_key(context(), params)
    saved = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.name != TOKEN}
    shutil.rmtree(run_dir)
    run_dir.mkdir()
    for name, data in saved.items():
        (run_dir / name).write_bytes(data)
    assert stage_key(context(), params) != key


def test_another_code_version_is_another_key(params, monkeypatch):
    key = stage_key(context(), params)
    code_version.cache_clear()
    monkeypatch.setattr(tasks.cache, "version", lambda dist: "99.0.0")
    assert stage_key(context(), params) != key


def test_an_input_path_that_is_not_there_yet_is_keyed_by_its_name(params, run_dir):
    """No checkpoint yet is a value like any other, not an error; once the file is there, its content
    counts."""
    params |= {"checkpoint_path": str(run_dir.parent / "models" / "v1.pt")}
    absent = stage_key(context(), params)
    assert stage_key(context(), params | {"checkpoint_path": None}) != absent
    (run_dir.parent / "models").mkdir()
    (run_dir.parent / "models" / "v1.pt").write_bytes(b"weights")
    assert stage_key(context(), params) != absent


# through Prefect


CALLS: list[str] = []


@task
def count_rows(history_path: str) -> int:
    CALLS.append(history_path)
    return len(pd.read_parquet(history_path))


@flow
def resume(history_path: str) -> tuple[str, int]:
    state = cached(count_rows)(history_path, return_state=True)
    return state.name, state.result()


def test_a_cached_stage_runs_again_only_when_its_input_changes(run_dir):
    """Two runs on the same file: the second is Cached and does not compute; new rows compute again."""
    CALLS.clear()
    history = str(run_dir / "history.parquet")
    assert resume(history) == ("Completed", 6)
    assert resume(history) == ("Cached", 6)
    assert CALLS == [history]
    readings([1.0, 2.0, 3.0, 4.0]).to_parquet(history)
    assert resume(history) == ("Completed", 8)
    assert CALLS == [history, history]
