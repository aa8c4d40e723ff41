"""Calendar, holiday and event features: known in advance for any timestamp, so they are future covariates."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

# (name, period) of each cycle, and the span (in hours) a step must be clearly shorter than for the
# cycle to carry information: hour of day is constant on a daily grid, day of week on a weekly grid.
_CYCLES = (
    ("hour_of_day", 24.0, 24.0),
    ("day_of_week", 7.0, 24.0 * 7),
    ("day_of_year", 365.25, 24.0 * 365.25),
)


def calendar_names(freq: str) -> tuple[str, ...]:
    """Feature column names for data on `freq` (a pandas offset alias): a sin and cos per useful cycle."""
    offset = pd.tseries.frequencies.to_offset(freq)
    first = pd.Timestamp("2001-01-01") + offset  # on the grid, so anchored offsets (W, MS) step a full period
    step_hours = ((first + offset) - first).total_seconds() / 3600
    # "Clearly": a yearly step (365 days) is a hair under 365.25, yet day of year barely moves on it.
    useful = [name for name, _, span in _CYCLES if step_hours < 0.99 * span]
    return tuple(f"{name}_{fn}" for name in useful for fn in ("sin", "cos"))


def calendar_features(ts: pd.Series | pd.DatetimeIndex, freq: str) -> pd.DataFrame:
    """Sin/cos encodings of each cycle shorter than the series' natural span, one row per timestamp.

    Sin/cos pairs keep 23:00 next to 00:00 and Sunday next to Monday, which a plain integer would not.
    The frame keeps the Series' index (to join back onto its frame), or is indexed by the timestamps.
    """
    index = pd.DatetimeIndex(ts)
    values = {
        "hour_of_day": index.hour + index.minute / 60.0,
        "day_of_week": index.day_of_week + (index.hour + index.minute / 60.0) / 24.0,
        "day_of_year": index.day_of_year - 1 + index.hour / 24.0,
    }
    periods = {name: period for name, period, _ in _CYCLES}
    out: dict[str, np.ndarray] = {}
    for column in calendar_names(freq):
        name, fn = column.rsplit("_", 1)
        angle = 2 * np.pi * np.asarray(values[name], dtype=np.float64) / periods[name]
        out[column] = (np.sin if fn == "sin" else np.cos)(angle).astype(np.float32)
    return pd.DataFrame(out, index=ts.index if isinstance(ts, pd.Series) else index)


# Known-future day marks (public holidays, a user's events): the day itself, and how near the next and the
# last one are, so that the model can learn the days of shopping before a closed day and the days after.
HOLIDAY_NAMES = ("holiday", "holiday_before", "holiday_after")
NEAR_DAYS = 7  # a mark this many days away or further is not "near"


def split_calendar(spec: str) -> tuple[str, str | None]:
    """ "IT" -> ("IT", None); "US-CA" -> ("US", "CA"): a country code and an optional subdivision."""
    country, _, subdiv = spec.partition("-")
    return country, subdiv or None


def check_calendar(spec: str) -> tuple[str, str | None]:
    """(country, subdivision) of `spec` as the holidays library spells them ("it" -> ("IT", None)) when it
    has that calendar; ValueError naming the unknown part otherwise."""
    import holidays

    if spec.count("-") > 1 or spec.endswith("-"):
        raise ValueError(f"{spec!r} is not a country code ('IT') or a country and subdivision ('US-CA')")
    country, subdiv = split_calendar(spec)
    supported = holidays.list_supported_countries()
    if country.upper() not in supported:
        raise ValueError(
            f"country code {country!r} is not one the holidays library knows (ISO 3166-1 alpha-2 such as "
            "'IT', 'US', 'CN'; holidays.list_supported_countries() lists them)"
        )
    country = country.upper()
    if subdiv is None:
        return country, None
    known = supported[country]
    spelled = {code.upper(): code for code in known}
    if subdiv.upper() not in spelled:
        hint = f"choose from {known[:20]}{' ...' if len(known) > 20 else ''}" if known else "it has none"
        raise ValueError(f"subdivision {subdiv!r} of {country!r} is unknown to the holidays library; {hint}")
    return country, spelled[subdiv.upper()]


def calendar_spec(spec: str) -> str:
    """`spec` spelled as the holidays library spells it: "it" -> "IT", "us-ca" -> "US-CA"."""
    country, subdiv = check_calendar(spec)
    return country if subdiv is None else f"{country}-{subdiv}"


def holiday_dates(spec: str, first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """The public holidays of calendar `spec` ("IT", "US-CA") from the year before `first` to the year
    after `last`: the marks just outside the span still make the days near them "near"."""
    import holidays

    country, subdiv = check_calendar(spec)
    years = range(first.year - 1, last.year + 2)
    return pd.DatetimeIndex(sorted(holidays.country_holidays(country, subdiv=subdiv, years=years)))


def day_marks(ts: pd.Series | pd.DatetimeIndex, marks: pd.DatetimeIndex) -> np.ndarray:
    """(on, before, after) for each timestamp's calendar day -> (n, 3) float32: 1 on a marked day; before
    and after fall from 1 on the adjacent day to 0 at NEAR_DAYS days from the next or last mark."""
    days = _day_numbers(pd.DatetimeIndex(ts))
    marked = np.unique(_day_numbers(marks))
    if marked.size == 0:
        return np.zeros((len(days), 3), np.float32)
    nxt = np.searchsorted(marked, days, side="right")  # first mark after the day
    prev = np.searchsorted(marked, days, side="left") - 1  # last mark before the day
    on = np.isin(days, marked)
    until = np.where(
        nxt < marked.size, marked[np.minimum(nxt, marked.size - 1)] - days, np.iinfo(np.int64).max
    )
    since = np.where(prev >= 0, days - marked[np.maximum(prev, 0)], np.iinfo(np.int64).max)
    near = lambda gap: np.clip(1.0 - (np.minimum(gap, NEAR_DAYS + 1) - 1) / NEAR_DAYS, 0.0, 1.0)  # noqa: E731
    return np.stack([on, near(until), near(since)], axis=1).astype(np.float32)


def holiday_features(ts: pd.Series | pd.DatetimeIndex, spec: str) -> pd.DataFrame:
    """The HOLIDAY_NAMES columns for calendar `spec`, one row per timestamp (indexed as calendar_features).

    Holidays are fixed years ahead, so they are known-future inputs; a timestamp counts on its own wall-clock
    date, as stored."""
    index = pd.DatetimeIndex(ts)
    if len(index) == 0:
        values = np.zeros((0, 3), np.float32)
    else:
        values = day_marks(index, holiday_dates(spec, index.min(), index.max()))
    return pd.DataFrame(
        values, columns=list(HOLIDAY_NAMES), index=ts.index if isinstance(ts, pd.Series) else index
    )


def _day_numbers(index: pd.DatetimeIndex) -> np.ndarray:
    """Days since the epoch of each timestamp's wall-clock date."""
    if index.tz is not None:
        index = index.tz_localize(None)
    return index.normalize().to_numpy("datetime64[D]").astype(np.int64)


EVENT_PREFIX = "event:"  # column name of an event: the prefix, then its name as the events table spells it


def event_names(columns: Iterable[str]) -> tuple[str, ...]:
    """The event columns among `columns`, in their order."""
    return tuple(c for c in columns if c.startswith(EVENT_PREFIX))


def event_features(ts: pd.Series | pd.DatetimeIndex, events: pd.DataFrame) -> pd.DataFrame:
    """One 0/1 column per event name ("event:<name>", names sorted): 1 on every timestamp whose wall-clock
    date is one of that event's dates. `events` has columns date (datetime64) and name."""
    days = _day_numbers(pd.DatetimeIndex(ts))
    out = {
        f"{EVENT_PREFIX}{name}": np.isin(days, _day_numbers(pd.DatetimeIndex(group["date"]))).astype(
            np.float32
        )
        for name, group in events.groupby("name", sort=True)
    }
    return pd.DataFrame(out, index=ts.index if isinstance(ts, pd.Series) else pd.DatetimeIndex(ts))
