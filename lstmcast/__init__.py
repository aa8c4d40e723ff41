"""lstmcast: nightly batch forecasting from a SQL database with a global PyTorch LSTM on Prefect 3."""

import os

# The pipeline runs on closed networks; Prefect must not try to phone home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

__version__ = "0.1.0"
