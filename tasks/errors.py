"""The errors that are the user's, not the code's: a config, source, data or as-of that cannot be used.

They end a run like any error (a failed Prefect state with the full traceback in its logs), but the CLI
shows only their message, so a newcomer reads what to fix instead of a traceback. Every other exception
is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave; the message names the file, table, column or value at fault."""


class SourceError(UserError, LookupError):
    """The source is not what the config says: a missing table or column."""


class DataError(UserError, ValueError):
    """The data cannot be forecast as asked: no rows, none up to the as-of, no series long enough."""


class AsOfError(UserError, ValueError):
    """An as-of that is not a timestamp."""


class SourceTypeError(UserError, TypeError):
    """A source column whose database type can hold no timestamp or no number."""
