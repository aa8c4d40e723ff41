import json
import os
import subprocess
import sys
from pathlib import Path

import lstm_model

REPO = Path(lstm_model.__file__).resolve().parent.parent


def test_public_names_are_exported():
    for name in (
        "Panel",
        "ModelConfig",
        "TrainConfig",
        "TrainResult",
        "fit",
        "predict",
        "backtest",
        "summarize",
        "save_checkpoint",
        "load_checkpoint",
        "naive",
        "seasonal_naive",
        "mae",
        "rmse",
        "smape",
        "mase",
        "SeriesScaler",
        "LSTMForecaster",
        "select_device",
        "naive_quantiles",
        "coverage",
        "predict_origins",
        "WindowSource",
    ):
        assert name in lstm_model.__all__ and hasattr(lstm_model, name)


# Run in a fresh interpreter: imports every module of the package found on sys.path (walked with
# pkgutil, subpackages included), one at a time, and reports which of them pulled in a layer above.
WALK = """
import importlib, json, pkgutil, sys
ABOVE = {"prefect", "tasks", "flows", "deployments", "lstmcast"}
def above():
    return {name for name in sys.modules if name.split(".")[0] in ABOVE}
package = importlib.import_module(sys.argv[1])
imported, pulled_in, seen = [package.__name__], {}, above()
if seen:
    pulled_in[package.__name__] = sorted(seen)
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)  # before the walk imports a subpackage, so errors surface
    imported.append(info.name)
    new = above() - seen
    if new:
        pulled_in[info.name] = sorted(new)
        seen |= new
print(json.dumps({"imported": imported, "pulled_in": pulled_in}))
"""


def walk_imports(package: str, *path: Path) -> dict:
    """Imports every module of `package` (found first on `path`, then in the repository) in a new
    interpreter: what this process already imported cannot hide or fake an import."""
    pythonpath = [*map(str, path), str(REPO), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in pythonpath if p)}
    out = subprocess.run(
        [sys.executable, "-c", WALK, package],
        cwd=path[0] if path else REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_no_module_of_the_package_imports_prefect_or_the_pipeline():
    """Every module, not just `__init__`: lstm_model is the layer the pipeline builds on, usable (and
    testable) without Prefect, and must not import the layers above it."""
    report = walk_imports("lstm_model")
    files = (p.relative_to(REPO).with_suffix("") for p in (REPO / "lstm_model").rglob("*.py"))
    modules = {".".join(f.parts[:-1] if f.name == "__init__" else f.parts) for f in files}
    assert set(report["imported"]) == modules  # the walk reached every file
    assert report["pulled_in"] == {}


def test_the_walk_reports_a_module_that_imports_prefect_or_tasks(tmp_path):
    """The check above can fail: in a stand-in lstm_model ahead on the path, a nested module that
    imports prefect and one that imports the tasks package are each reported."""
    package = tmp_path / "lstm_model"
    (package / "nested").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "clean.py").write_text("import json\n")
    (package / "nested" / "__init__.py").write_text("")
    (package / "nested" / "uses_prefect.py").write_text("import prefect\n")
    (package / "uses_tasks.py").write_text("import tasks\n")  # only a docstring: no prefect
    report = walk_imports("lstm_model", tmp_path)
    assert report["imported"] == [
        "lstm_model", "lstm_model.clean", "lstm_model.nested", "lstm_model.nested.uses_prefect",
        "lstm_model.uses_tasks",
    ]  # fmt: skip
    assert set(report["pulled_in"]) == {"lstm_model.nested.uses_prefect", "lstm_model.uses_tasks"}
    by_prefect = report["pulled_in"]["lstm_model.nested.uses_prefect"]
    assert "prefect" in by_prefect and {name.split(".")[0] for name in by_prefect} == {"prefect"}
    assert report["pulled_in"]["lstm_model.uses_tasks"] == ["tasks"]


def test_config_and_the_extract_stage_load_without_torch():
    """Validating a config and running `lstmcast ingest` need no PyTorch: it is imported when a model is."""
    code = (
        "import sys, lstm_model, lstm_model.config, tasks.extract; before = 'torch' in sys.modules; "
        "lstm_model.fit; print(before, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False True"
