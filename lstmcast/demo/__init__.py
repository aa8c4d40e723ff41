"""The demo: real sensor and sales data loaded into the embedded SQLite database, then forecast."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from tasks.db import create_engine

# (config, as_of): the sales run forecasts the last four weeks of the file, so the forecast can be compared
# with what was sold.
DEMO_RUNS = (("sensors.toml", None), ("sales.toml", "2018-12-03"))


def demo_file(name: str) -> Path:
    return Path(str(resources.files("lstmcast.demo").joinpath(name)))


def sensor_frame() -> pd.DataFrame:
    """ETTh1 in long format: one series per sensor column."""
    wide = pd.read_csv(demo_file("data/ETTh1.csv"))
    long = wide.melt(id_vars="date", var_name="series_id", value_name="value")
    return long.rename(columns={"date": "ts"})[["series_id", "ts", "value"]]


def sales_frame() -> pd.DataFrame:
    """pasta_sales in long format: one series per product, with the file's promotion flag (recorded from
    the sales, so the demo's config does not use it as an input)."""
    wide = pd.read_csv(demo_file("data/pasta_sales.csv"))
    qty = wide.melt(
        id_vars="DATE",
        value_vars=[c for c in wide if c.startswith("QTY_")],
        var_name="product",
        value_name="qty",
    )
    promo = wide.melt(
        id_vars="DATE",
        value_vars=[c for c in wide if c.startswith("PROMO_")],
        var_name="product",
        value_name="promo",
    )
    qty["product"] = qty["product"].str.removeprefix("QTY_")
    promo["product"] = promo["product"].str.removeprefix("PROMO_")
    long = qty.merge(promo, on=["DATE", "product"], how="left").rename(columns={"DATE": "day"})
    return long[["product", "day", "qty", "promo"]]


def build_demo_db(url: str = "sqlite:///data/demo.db") -> dict[str, int]:
    """(Re)load the demo source tables in one transaction; existing forecast tables are left alone."""
    frames = {"sensor_readings": sensor_frame(), "pasta_sales": sales_frame()}
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for table, frame in frames.items():
                frame.to_sql(table, conn, if_exists="replace", index=False, chunksize=50_000)
                conn.execute(sa.text(f'CREATE INDEX "ix_{table}_ts" ON "{table}" ("{frame.columns[1]}")'))
    finally:
        engine.dispose()
    return {table: len(frame) for table, frame in frames.items()}
