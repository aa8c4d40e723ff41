import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import tomli_w
import torch
from typer.testing import CliRunner

from lstm_model.calibration import apply_calibration
from lstm_model.checkpoint import load_checkpoint
from lstmcast.cli import DEBUG_ENV, app
from tasks.clean import clean
from tasks.config import load_config
from tasks.export import ExportError, find_model, run_export
from tasks.extract import extract
from tasks.registry import TrainingPlan, run_register
from tasks.schemas import models_table
from tasks.train import run_train
from tests.helpers import sensor_config_dict

ort = pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[2]
AS_OF = "2016-07-14T00:00:00+00:00"
TABLE = "models_export"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_debug_env(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)


@pytest.fixture
def config_path(sensor_db, tmp_path) -> Path:
    path = tmp_path / "sensors.toml"
    cfg = sensor_config_dict(sensor_db, tmp_path / "work", registry={"table": TABLE})
    path.write_bytes(tomli_w.dumps(cfg).encode())
    return path


@pytest.fixture
def registered(config_path):
    """Two versions in the registry: the champion, and a challenger it rejected."""
    cfg = load_config(config_path)
    extracted = extract.fn(cfg, AS_OF)
    history = clean.fn(cfg, extracted.path, AS_OF).history_path
    champion = run_train(cfg, history)
    run_register(cfg, champion, TrainingPlan("retrain", "test", None), history, AS_OF, "run-1", {})
    weak = cfg.model_copy(update={"training": cfg.training.model_copy(update={"learning_rate": 1e-9})})
    rejected = run_train(weak, history)
    engine = sa.create_engine(cfg.output.url)
    with engine.begin() as conn:  # the registry row of a challenger that lost
        table = models_table(TABLE, sa.MetaData())
        row = conn.execute(sa.select(table).where(table.c.version == champion.model_version)).one()._asdict()
        row.update(version=rejected.model_version, status="rejected", promoted_at=None,
                   checkpoint_path=rejected.checkpoint_path)  # fmt: skip
        conn.execute(sa.insert(table).values(**row))
    engine.dispose()
    return cfg, champion, rejected


def onnx_matches_checkpoint(path: str, checkpoint: str) -> dict[str, str]:
    """The file's forecast equals the checkpoint's on random scaled windows; returns its metadata."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    result = load_checkpoint(checkpoint)
    rng = np.random.default_rng(0)
    # the windows' shapes with a batch of 7 for the dynamic axis
    feeds = {i.name: rng.standard_normal([7, *i.shape[1:]]).astype(np.float32) for i in session.get_inputs()}
    (got,) = session.run(None, feeds)
    tensors = [torch.from_numpy(feeds[name]) for name in ("x_past", "x_future") if name in feeds]
    with torch.no_grad():
        raw = result.model(*tensors).numpy()
    expected = apply_calibration(raw, result.calibration, result.model_config.quantiles)
    assert np.abs(got - expected).max() < 1e-4
    return session.get_modelmeta().custom_metadata_map


def test_export_writes_the_champion_with_its_version_in_the_metadata(registered, tmp_path):
    cfg, champion, _ = registered
    exported = run_export(cfg, tmp_path / "out" / "model.onnx")
    assert exported.path == str(tmp_path / "out" / "model.onnx")
    assert exported.model.version == champion.model_version and exported.model.status == "champion"
    meta = onnx_matches_checkpoint(exported.path, champion.checkpoint_path)
    assert (meta["pipeline"], meta["version"], meta["as_of"]) == ("sensors", champion.model_version, AS_OF)
    assert json.loads(meta["scaler"])["series_ids"] == ["HUFL", "HULL", "OT"]
    assert (meta["lookback"], meta["horizon"], meta["quantiles"]) == ("24", "12", "[0.1, 0.5, 0.9]")


def test_export_of_a_named_version(registered, tmp_path):
    cfg, _, rejected = registered
    exported = run_export(cfg, tmp_path / "model.onnx", rejected.model_version)
    assert (exported.model.version, exported.model.status) == (rejected.model_version, "rejected")
    meta = onnx_matches_checkpoint(exported.path, rejected.checkpoint_path)
    assert meta["version"] == rejected.model_version


def test_export_errors_name_the_pipeline_table_and_version(registered, tmp_path):
    cfg, champion, _ = registered
    with pytest.raises(ExportError) as missing:
        find_model(cfg, "v-nope")
    assert (
        str(missing.value)
        == "pipeline 'sensors' has no model version 'v-nope' in registry table 'models_export'"
    )

    other = cfg.model_copy(update={"name": "other"})
    with pytest.raises(ExportError) as no_champion:
        find_model(other)
    assert str(no_champion.value) == (
        "pipeline 'other' has no champion in registry table 'models_export'; name one with --version"
    )

    no_table = cfg.model_copy(update={"registry": cfg.registry.model_copy(update={"table": "nothing"})})
    with pytest.raises(ExportError) as no_registry:
        find_model(no_table)
    assert str(no_registry.value) == (
        "pipeline 'sensors' has no registered models: registry table 'nothing' does not exist "
        "(a nightly run creates it)"
    )

    Path(champion.checkpoint_path).unlink()
    with pytest.raises(ExportError) as gone:
        run_export(cfg, tmp_path / "model.onnx")
    assert str(gone.value) == (
        f"model version {champion.model_version!r} of pipeline 'sensors': its checkpoint "
        f"{champion.checkpoint_path} is missing"
    )
    assert not (tmp_path / "model.onnx").exists()


def test_cli_exports_the_champion_and_stops_with_code_2_on_an_unknown_version(
    registered, config_path, tmp_path
):
    _, champion, _ = registered
    out = tmp_path / "champion.onnx"
    done = runner.invoke(app, ["export", "-c", str(config_path), "--onnx", str(out)], env={"COLUMNS": "500"})
    assert done.exit_code == 0, done.output
    assert done.output == (
        f"exported sensors model {champion.model_version} (champion, as of {AS_OF}) to {out}\n"
    )
    onnx_matches_checkpoint(str(out), champion.checkpoint_path)

    args = ["export", "-c", str(config_path), "--onnx", str(tmp_path / "x.onnx"), "--version", "v-nope"]
    failed = runner.invoke(app, args, env={"COLUMNS": "500"})
    assert failed.exit_code == 2
    assert failed.output.splitlines() == [
        "error: export failed: pipeline 'sensors' has no model version 'v-nope' in registry table "
        "'models_export'",
        f"(run with --debug or {DEBUG_ENV}=1 for the traceback)",
    ]


def test_cli_without_the_onnx_extra_says_what_to_install(config_path, tmp_path):
    # sys.modules[name] = None makes `import name` fail as if the package were not installed
    script = (
        "import sys\nsys.modules['onnx'] = None\nfrom lstmcast.cli import app\n"
        "app(sys.argv[1:], prog_name='lstmcast')"
    )
    args = ["export", "-c", str(config_path), "--onnx", str(tmp_path / "x.onnx")]
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env={**os.environ, "COLUMNS": "500"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert done.stdout.splitlines() == [
        "error: exporting to ONNX needs the onnx extra: pip install 'lstmcast[onnx]' "
        "(import of onnx halted; None in sys.modules)"
    ]
