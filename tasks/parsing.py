"""How timestamps and values become UTC instants and floats: the as-of a user gives, and raw rows one by
one with what each row needed.

Shared by extract (which parses text columns while it reads) and clean (which counts the repairs per
series). Extract keeps the per-row marks in two columns of its Parquet files (`ZONE_COLUMN`,
`NON_NUMERIC_COLUMN`), so the counts reach the quality report however the rows were read.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tasks.errors import AsOfError

# What a row's timestamp needed to become UTC.
ZONE_UTC = 0  # it was UTC already (or is missing)
ZONE_CONVERTED = 1  # it carried another offset or zone and was converted
ZONE_MISSING = 2  # it carried no zone and was taken as UTC
ZONE_COLUMN = "_lstmcast_zone"
NON_NUMERIC_COLUMN = "_lstmcast_non_numeric"  # how many of the row's numeric columns held text
MARK_COLUMNS = (ZONE_COLUMN, NON_NUMERIC_COLUMN)

# A UTC offset at the end of a timestamp's text, after its time of day in any ISO 8601 form
# ("T10:00+02:00", " 10:00:00.5Z", "T100000+0200", "T10+02"), and the offsets that are UTC itself. The time
# must follow "T" or a space, so a date's "-01" is never taken for an offset. RE2 syntax, matched by Arrow
# over the whole column at once.
_TIME = r"[T\s]\d{2}(?::?\d{2}(?::?\d{2}(?:[.,]\d+)?)?)?\s*"
_OFFSET = _TIME + r"(?:Z|[+-]\d{1,2}(?::?\d{2})?)$"
_UTC_OFFSET = _TIME + r"(?:Z|[+-]0{1,2}(?::?00)?)$"
_UTC_ZONES = {"UTC", "Etc/UTC", "+00:00", "Z"}


def zone_of_type(tz: object | None, n: int) -> np.ndarray:
    """The zone marks of `n` values of a typed timestamp column in zone `tz` (None: naive)."""
    if tz is None:
        return np.full(n, ZONE_MISSING, dtype=np.int8)
    return np.full(n, ZONE_UTC if str(tz) in _UTC_ZONES else ZONE_CONVERTED, dtype=np.int8)


def to_utc(ts: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Timestamps in UTC, and each row's zone mark (ZONE_*): naive ones are taken as UTC, offsets converted.

    Text from SQLite may mix offsets and naive values in one column, so text is judged row by row.
    Unparseable values become NaT (marked ZONE_UTC: nothing was converted).
    """
    if isinstance(ts.dtype, pd.DatetimeTZDtype):
        zone = np.where(ts.notna().to_numpy(), zone_of_type(ts.dt.tz, len(ts)), ZONE_UTC)
        return ts.dt.tz_convert("UTC"), zone.astype(np.int8)
    if pd.api.types.is_datetime64_dtype(ts.dtype):
        zone = np.where(ts.notna().to_numpy(), ZONE_MISSING, ZONE_UTC)
        return ts.dt.tz_localize("UTC"), zone.astype(np.int8)
    parsed = pd.to_datetime(ts, utc=True, errors="coerce", format="ISO8601")
    text = pc.utf8_trim_whitespace(pa.array(ts.astype(str), pa.string()))
    zoned, utc = (
        pc.match_substring_regex(text, p, ignore_case=True).fill_null(False).to_numpy(zero_copy_only=False)
        for p in (_OFFSET, _UTC_OFFSET)
    )
    zone = np.where(~zoned, ZONE_MISSING, np.where(utc, ZONE_UTC, ZONE_CONVERTED))
    return parsed, np.where(parsed.notna().to_numpy(), zone, ZONE_UTC).astype(np.int8)


def zone_repairs(zone: np.ndarray) -> int:
    """Rows of one series whose time zone was repaired: every converted one, and the naive ones when the
    series also has zoned timestamps (mixed: the naive ones were ambiguous). A series whose timestamps are
    all naive follows the convention that naive means UTC; nothing was repaired."""
    zone = np.asarray(zone)
    missing = int((zone == ZONE_MISSING).sum())
    converted = int((zone == ZONE_CONVERTED).sum())
    mixed = missing < len(zone)
    return converted + (missing if mixed else 0)


def to_float(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Values as float64, and which were present but not numbers: text such as 'n/a' becomes missing."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = (numeric.isna() & values.notna()).to_numpy()
    return numeric.astype("float64").to_numpy(copy=True), bad


def parse_as_of(value: str | pd.Timestamp) -> pd.Timestamp:
    """An as-of as a UTC timestamp; one without a zone is taken as UTC."""
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise AsOfError(
            f"as_of {value!r} is not a timestamp (expected e.g. 2018-06-26 or 2018-06-26T19:00)"
        ) from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def utc(ts: pd.Timestamp | str) -> datetime:
    """An as-of as the timezone-aware datetime a database driver binds."""
    return parse_as_of(ts).to_pydatetime()
