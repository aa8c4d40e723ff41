"""Schedules and parameters for running the flows unattended."""
