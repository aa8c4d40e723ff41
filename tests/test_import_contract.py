"""The layers point one way (lstmcast -> deployments -> flows -> tasks -> lstm_model), and no pipeline stage
imports another: what stages share lives in plumbing modules (tasks/config.py, db.py, files.py, ...).

Imports are read from the source (every `import` and `from ... import`, inside functions too), so a lazy
import cannot slip past the way it would past a check of `sys.modules`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lstmcast", "deployments", "flows", "tasks", "lstm_model")
# Each stage of the pipeline is one module or package under tasks/.
STAGES = frozenset(
    {"extract", "clean", "validate", "train", "registry", "forecast", "publish", "score", "report", "prune"}
)
# What each layer may not import (the layers above it, and Prefect for the model code).
FORBIDDEN = {
    "lstm_model": ("prefect", "tasks", "flows", "deployments", "lstmcast"),
    "tasks": ("flows", "deployments", "lstmcast"),
    "flows": ("deployments", "lstmcast"),
    "deployments": ("lstmcast",),
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, name: str) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "tasks" and parts[1] in STAGES else None


def violations(root: Path) -> list[str]:
    """Every import that breaks the contract, as `file:line: module imports target (why)`."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            where = f"{path.relative_to(root)}"
            for line, target in imported(path, name):
                top = target.split(".")[0]
                if top in FORBIDDEN.get(package, ()):
                    found.append(f"{where}:{line}: {name} imports {target} (a layer {package} may not use)")
                mine, theirs = stage_of(name), stage_of(target)
                if mine and theirs and mine != theirs:
                    found.append(f"{where}:{line}: stage {mine} imports stage {theirs} ({target})")
    return sorted(set(found))


def test_the_layers_and_stages_import_as_the_contract_says():
    assert violations(ROOT) == []


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("tasks/score.py", "from tasks.report import artifact_key\n",
         "tasks/score.py:1: stage score imports stage report (tasks.report)"),
        ("tasks/publish/plain.py", "def f():\n    from tasks.extract import store\n",
         "tasks/publish/plain.py:2: stage publish imports stage extract (tasks.extract)"),
        ("lstm_model/model.py", "import prefect\n",
         "lstm_model/model.py:1: lstm_model.model imports prefect (a layer lstm_model may not use)"),
        ("tasks/db.py", "from flows.nightly import nightly_flow\n",
         "tasks/db.py:1: tasks.db imports flows.nightly (a layer tasks may not use)"),
    ],
)  # fmt: skip
def test_the_check_finds_an_import_that_breaks_the_contract(tmp_path, module, source, expected):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    path = tmp_path / module
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert expected in violations(tmp_path)


def test_imports_within_a_stage_and_of_plumbing_are_allowed(tmp_path):
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "tasks" / "publish").mkdir()
    (tmp_path / "tasks" / "publish" / "plain.py").write_text(
        "from tasks.publish.copy import load_staging\nfrom tasks.schemas import FORECAST_KEY\n"
        "from . import sql\n"
    )
    assert violations(tmp_path) == []


def decorated(path: Path) -> list[tuple[str, str | None]]:
    """(name, docstring) of every function decorated with Prefect's @task or @flow."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                func = dec.func if isinstance(dec, ast.Call) else dec
                if isinstance(func, ast.Name) and func.id in ("task", "flow"):
                    out.append((node.name, ast.get_docstring(node)))
    return out


def test_every_task_and_flow_says_what_it_does_in_one_line():
    found = [(path, *d) for package in ("tasks", "flows") for path in (ROOT / package).rglob("*.py")
             for d in decorated(path)]  # fmt: skip
    assert len(found) >= 15
    bad = [f"{p.relative_to(ROOT)}: {name}" for p, name, doc in found if not doc or "\n" in doc.strip()]
    assert bad == []


def test_each_task_wraps_the_plain_function_named_after_it():
    """A `@task` named `x` in tasks/ returns `run_x(...)`: tests and the CLI call `run_x` without Prefect."""
    wrong = []
    for path in (ROOT / "tasks").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or not any(
                isinstance(d.func if isinstance(d, ast.Call) else d, ast.Name)
                and (d.func if isinstance(d, ast.Call) else d).id == "task"
                for d in node.decorator_list
            ):
                continue
            last = node.body[-1]
            called = (
                last.value.func.id
                if isinstance(last, ast.Return) and isinstance(last.value, ast.Call)
                else None
            )
            if called != f"run_{node.name}":
                wrong.append(f"{path.relative_to(ROOT)}: {node.name} returns {called}")
    assert wrong == []
