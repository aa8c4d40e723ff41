"""The task runner a pipeline's config asks for.

The default runs backtest folds and forecast groups one at a time in this process (each already uses
every core). `scale.runner = "dask"` sends them to a Dask cluster through prefect-dask: the cluster at
`scale.dask_address`, or a LocalCluster of `scale.dask_workers` processes. Workers read and write the
run's Parquet files by path, so on a real cluster `data.data_dir` must be storage every worker sees.
Training stays one global model in the flow's process.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from tasks.config import PipelineConfig


def task_runner(cfg: PipelineConfig) -> Any:
    if cfg.scale.runner != "dask":
        return ThreadPoolTaskRunner(max_workers=1)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise ImportError("scale.runner = 'dask' needs prefect-dask: pip install 'lstmcast[dask]'") from None
    if cfg.scale.dask_address:
        return DaskTaskRunner(address=cfg.scale.dask_address)
    workers = cfg.scale.dask_workers or 2
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
