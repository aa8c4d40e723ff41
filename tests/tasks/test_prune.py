import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import tomli_w
from typer.testing import CliRunner

from lstmcast.cli import app
from tasks.config import ConfigError, parse_config
from tasks.files import models_dir, run_dir
from tasks.parsing import parse_as_of
from tasks.prune import run_prune
from tasks.publish import write_forecasts
from tasks.publish.partitioned import partition_name
from tasks.schemas import accuracy_table, models_table
from tests.helpers import OUTPUT_KINDS, sensor_config_dict
from tests.tasks.test_publish import forecasts, quality, record

OLD, OLDER, NEW = "2020-01-05T00:00:00+00:00", "2020-01-01T00:00:00+00:00", "2020-01-20T00:00:00+00:00"
CUTOFF = "2020-01-10T00:00:00+00:00"  # NEW minus keep = "10D"


@dataclass
class Outputs:
    url: str
    suffix: str = ""  # PostgreSQL: every table of one test gets its own name
    partitioned: bool = True

    def names(self) -> dict[str, str]:
        s = self.suffix
        return {"table": f"fc{s}", "runs_table": f"runs{s}", "quality_table": f"quality{s}",
                "accuracy_table": f"accuracy{s}"}  # fmt: skip

    @property
    def by_partition(self) -> bool:
        return self.partitioned and self.url.startswith("postgresql")

    def query(self, sql: str) -> list[tuple]:
        engine = sa.create_engine(self.url)
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.text(sql))]
        engine.dispose()
        return rows

    def as_ofs(self, table: str) -> list[tuple[str, str]]:
        """(pipeline, as-of) of every row of `table`, as UTC ISO strings, sorted."""
        rows = self.query(f'select pipeline, as_of from "{self.names()[table]}"')
        return sorted((p, parse_as_of(a).isoformat()) for p, a in rows)


@pytest.fixture(params=OUTPUT_KINDS)
def outputs(request, sqlite_url):
    """SQLite; PostgreSQL with the partitioned forecast table; PostgreSQL with a plain one."""
    if request.param == "sqlite":
        yield Outputs(sqlite_url)
        return
    out = Outputs(request.getfixturevalue("pg_url"), f"_{uuid.uuid4().hex[:8]}", request.param == "postgres")
    try:
        yield out
    finally:
        engine = sa.create_engine(out.url)
        with engine.begin() as conn:
            tables = [*out.names().values(), f"models{out.suffix}"]
            conn.execute(sa.text("drop table if exists " + ", ".join(f'"{t}"' for t in tables)))
        engine.dispose()


def config_dict(out: Outputs, tmp_path: Path, name: str = "sensors", **retention) -> dict:
    return sensor_config_dict(
        out.url, tmp_path / "work", name=name,
        output={"url": out.url, "partitioned": out.partitioned, **out.names()},
        registry={"table": f"models{out.suffix}"},
        retention={"keep": "10D", **retention},
    )  # fmt: skip


def config(out: Outputs, tmp_path: Path, name: str = "sensors", **retention):
    return parse_config(config_dict(out, tmp_path, name, **retention))


def publish(out: Outputs, cfg, as_of: str) -> None:
    names = out.names()
    write_forecasts(
        out.url, names["table"], names["runs_table"], forecasts(as_of=as_of), record(cfg, as_of=as_of),
        quality=quality(), quality_name=names["quality_table"], partitioned=out.partitioned,
    )  # fmt: skip
    folder = run_dir(cfg, pd.Timestamp(as_of))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.parquet").write_bytes(b"x")


def add_accuracy(out: Outputs, cfg, *as_ofs: str) -> None:
    engine = sa.create_engine(out.url)
    table = accuracy_table(out.names()["accuracy_table"], sa.MetaData())
    with engine.begin() as conn:
        table.create(conn, checkfirst=True)
        ts = datetime(2020, 1, 2, tzinfo=UTC)
        conn.execute(sa.insert(table), [
            {"pipeline": cfg.name, "as_of": pd.Timestamp(a).to_pydatetime(), "model_version": "lstm-a",
             "n_series": 2, "n_points": 6, "mae": 1.0, "rmse": 1.0, "smape": 1.0, "mase": 1.0,
             "coverage": 0.8, "first_ts": ts, "last_ts": ts, "scored_at": ts}
            for a in as_ofs
        ])  # fmt: skip
    engine.dispose()


def add_models(out: Outputs, cfg, models: list[tuple[str, str, str, str]]) -> dict[str, Path]:
    """Registry rows (version, as-of, status, checkpoint file name) and their checkpoint files."""
    folder = models_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    table = models_table(cfg.registry.table, sa.MetaData())
    engine = sa.create_engine(out.url)
    with engine.begin() as conn:
        table.create(conn, checkfirst=True)
        for version, as_of, status, file in models:
            (folder / file).write_bytes(b"weights")
            when = pd.Timestamp(as_of).to_pydatetime()
            conn.execute(sa.insert(table).values(
                pipeline=cfg.name, version=version, created_at=when, as_of=when, kind="trained",
                config_hash="h", checkpoint_path=str(folder / file), device="cpu", epochs=1, backtest="{}",
                status=status, run_id="r",
            ))  # fmt: skip
    engine.dispose()
    return {file: folder / file for *_, file in models}


MODELS = [
    ("lstm-retired", OLDER, "retired", "lstm-retired.pt"),
    ("lstm-rejected", OLD, "rejected", "lstm-rejected.pt"),
    ("lstm-champion", OLDER, "champion", "lstm-champion.pt"),  # old, but the champion
    ("lstm-same", OLD, "rejected", "lstm-champion.pt"),  # the champion's checkpoint under another row
    ("lstm-recent", "2020-01-15", "retired", "lstm-recent.pt"),
]


@pytest.fixture
def pipeline(outputs, tmp_path):
    """Forecasts, runs and quality of three as-ofs (two older than keep), accuracy rows, registry rows
    with their checkpoints and run folders of `sensors`; the same old as-ofs of another pipeline."""
    cfg, other = config(outputs, tmp_path), config(outputs, tmp_path, name="other")
    for as_of in (OLDER, OLD, NEW):
        publish(outputs, cfg, as_of)
    for as_of in (OLDER, OLD):
        publish(outputs, other, as_of)
    add_accuracy(outputs, cfg, OLDER, NEW)
    files = add_models(outputs, cfg, MODELS)
    return cfg, other, files


def test_a_dry_run_changes_nothing_and_lists_what_would_go(outputs, pipeline):
    cfg, _, files = pipeline
    before = {t: outputs.as_ofs(t) for t in ("table", "runs_table", "quality_table", "accuracy_table")}
    result = run_prune(cfg, NEW, dry_run=True)
    assert (result.as_of, result.cutoff, result.dry_run) == (NEW, CUTOFF, True)
    assert result.forecast_as_ofs == (OLDER, OLD)
    assert (result.forecast_rows, result.runs, result.quality_rows, result.accuracy_rows) == (12, 2, 6, 0)
    names = tuple(partition_name(f"fc{outputs.suffix}", "sensors", pd.Timestamp(a)) for a in (OLDER, OLD))
    assert result.partitions == (names if outputs.by_partition else ())
    assert result.checkpoints == (str(files["lstm-rejected.pt"]), str(files["lstm-retired.pt"]))
    work = Path(cfg.data.data_dir) / "sensors"
    assert result.run_dirs == (str(work / "as_of=20200101T000000"), str(work / "as_of=20200105T000000"))
    assert {t: outputs.as_ofs(t) for t in before} == before
    assert all(path.is_file() for path in files.values())
    assert all(Path(folder).is_dir() for folder in result.run_dirs)
    assert result.lines()[0] == (
        f"sensors: as-of {NEW} - keep 10D: before {CUTOFF} would go (dry run: nothing changed)"
    )


def test_prune_removes_what_is_older_than_keep_and_leaves_the_rest(outputs, pipeline):
    cfg, other, files = pipeline
    result = run_prune(cfg, NEW)
    assert (result.forecast_rows, result.runs, result.quality_rows, result.accuracy_rows) == (12, 2, 6, 0)
    assert result.forecast_as_ofs == (OLDER, OLD) and not result.dry_run
    kept = [("other", OLDER), ("other", OLD), ("sensors", NEW)]
    assert sorted(set(outputs.as_ofs("table"))) == kept
    assert sorted(set(outputs.as_ofs("runs_table"))) == kept
    assert sorted(set(outputs.as_ofs("quality_table"))) == kept
    assert len(outputs.as_ofs("table")) == 18 and len(outputs.as_ofs("quality_table")) == 9
    assert outputs.as_ofs("accuracy_table") == [("sensors", OLDER), ("sensors", NEW)]  # not asked
    gone = {"lstm-retired.pt", "lstm-rejected.pt"}
    assert {name for name, path in files.items() if not path.exists()} == gone
    assert files["lstm-champion.pt"].is_file() and files["lstm-recent.pt"].is_file()
    work = Path(cfg.data.data_dir)
    assert sorted(p.name for p in (work / "sensors").glob("as_of=*")) == ["as_of=20200120T000000"]
    assert len(list((work / "other").glob("as_of=*"))) == 2
    registry = outputs.query(f'select version from "models{outputs.suffix}" order by version')
    assert [v for (v,) in registry] == sorted(v for v, *_ in MODELS)  # the model history stays
    if outputs.by_partition:
        left = outputs.query(
            "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
            f"where i.inhparent = 'fc{outputs.suffix}'::regclass order by 1"
        )
        assert [n for (n,) in left] == sorted(
            partition_name(f"fc{outputs.suffix}", p, pd.Timestamp(a)) for p, a in kept
        )
    again = run_prune(cfg, NEW)
    assert (again.forecast_as_ofs, again.runs, again.checkpoints, again.run_dirs) == ((), 0, (), ())


def test_the_accuracy_history_goes_only_when_asked(outputs, pipeline, tmp_path):
    cfg = config(outputs, tmp_path, accuracy=True)
    result = run_prune(cfg, NEW)
    assert result.accuracy_rows == 1
    assert outputs.as_ofs("accuracy_table") == [("sensors", NEW)]
    assert result.lines()[3] == "runs: 2 rows; quality: 6 rows; accuracy: 1 rows"


def test_without_an_as_of_retention_is_measured_from_the_newest_run(outputs, pipeline):
    cfg, *_ = pipeline
    result = run_prune(cfg, dry_run=True)
    assert (result.as_of, result.cutoff, result.forecast_as_ofs) == (NEW, CUTOFF, (OLDER, OLD))


def test_retention_off_prunes_nothing(sqlite_url, tmp_path):
    cfg = parse_config(sensor_config_dict(sqlite_url, tmp_path / "work"))
    assert cfg.retention.keep is None and cfg.retention.accuracy is False
    result = run_prune(cfg, NEW)
    assert (result.keep, result.cutoff, result.forecast_as_ofs) == (None, None, ())
    assert result.lines() == ["sensors: retention is off (no retention.keep): nothing pruned"]


def test_a_pipeline_without_runs_has_nothing_to_prune(sqlite_url, tmp_path):
    cfg = parse_config(sensor_config_dict(sqlite_url, tmp_path / "work", retention={"keep": "400D"}))
    result = run_prune(cfg)
    assert result.lines() == ["sensors: no runs yet, no as-of to measure retention.keep from: nothing pruned"]


@pytest.mark.parametrize(
    ("keep", "message"),
    [
        ("soon", "retention.keep must be a duration with a unit such as '400D' or '12h', got 'soon'"),
        ("400", "retention.keep must be a duration with a unit such as '400D' or '12h', got '400'"),
        ("-1D", "retention.keep must be positive, got '-1D'"),
        ("0h", "retention.keep must be positive, got '0h'"),
        (400, "'retention.keep': Input should be a valid string (got 400)"),
    ],
)
def test_a_malformed_keep_is_a_config_error_naming_key_and_value(tmp_path, keep, message):
    data = sensor_config_dict("sqlite:///x.db", tmp_path / "work", retention={"keep": keep})
    with pytest.raises(ConfigError) as err:
        parse_config(data, "p.toml")
    assert str(err.value) == f"p.toml: {message}"


def test_prune_dry_run_command_lists_what_would_go_and_changes_nothing(sqlite_url, tmp_path):
    out = Outputs(sqlite_url)
    cfg = config(out, tmp_path)
    for as_of in (OLD, NEW):
        publish(out, cfg, as_of)
    path = tmp_path / "p.toml"
    path.write_bytes(tomli_w.dumps(config_dict(out, tmp_path)).encode())
    result = CliRunner().invoke(app, ["prune", "--config", str(path), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    folder = Path(cfg.data.data_dir) / "sensors" / "as_of=20200105T000000"
    assert result.output.splitlines() == [
        f"sensors: as-of {NEW} - keep 10D: before {CUTOFF} would go (dry run: nothing changed)",
        f"forecasts: 6 rows of 1 as-ofs ({OLD})",
        "partitions: 0",
        "runs: 1 rows; quality: 3 rows; accuracy: kept (retention.accuracy = false)",
        f"run folders: 1 ({folder})",
        "checkpoints: 0",
    ]
    assert out.as_ofs("table") == [("sensors", OLD)] * 6 + [("sensors", NEW)] * 6
    assert folder.is_dir()


def test_prune_command_with_a_malformed_keep_ends_with_exit_code_2(sqlite_url, tmp_path):
    path = tmp_path / "p.toml"
    data = sensor_config_dict(sqlite_url, tmp_path / "work", retention={"keep": "soon"})
    path.write_bytes(tomli_w.dumps(data).encode())
    result = CliRunner().invoke(app, ["prune", "--config", str(path)], env={"COLUMNS": "300"})
    assert result.exit_code == 2
    assert result.output.splitlines()[0] == (
        f"error: stage 'config' failed: {path}: retention.keep must be a duration with a unit such as "
        "'400D' or '12h', got 'soon'"
    )


def test_the_nightly_run_prunes_last_from_its_own_as_of(sensor_db, tmp_path):
    from flows.nightly import nightly_forecast

    path = tmp_path / "sensors.toml"
    data = sensor_config_dict(sensor_db, tmp_path / "work", retention={"keep": "3D"})
    path.write_bytes(tomli_w.dumps(data).encode())
    for as_of in ("2016-07-10", "2016-07-12", "2016-07-14"):
        nightly_forecast(str(path), as_of)
    out = Outputs(sensor_db)
    kept = ["2016-07-12T00:00:00+00:00", "2016-07-14T00:00:00+00:00"]  # 07-10 is older than 07-14 - 3D
    for table in ("forecasts", "lstmcast_runs", "lstmcast_quality"):
        as_ofs = {parse_as_of(a).isoformat() for (a,) in out.query(f"select as_of from {table}")}
        assert sorted(as_ofs) == kept
    folders = sorted(p.name for p in (tmp_path / "work" / "sensors").glob("as_of=*"))
    assert folders == ["as_of=20160712T000000", "as_of=20160714T000000"]
