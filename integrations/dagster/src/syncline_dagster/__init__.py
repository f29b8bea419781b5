"""Dagster assets for syncline pipelines.

``@syncline_assets(config=...)`` reads the pipeline's streams from ``syncline plan --json`` and
declares one asset per stream (with its reconciliation check); the decorated function runs
``syncline run`` through Dagster Pipes with :class:`SynclineResource`, so each stream's load
arrives as a materialization with its row counts, and each check as a check result.
"""

from syncline_dagster.assets import stream_of, syncline_assets, syncline_model_assets
from syncline_dagster.exit_codes import Outcome, outcome_of
from syncline_dagster.resource import SynclineResource, read_plan

__all__ = [
    "Outcome",
    "SynclineResource",
    "outcome_of",
    "read_plan",
    "stream_of",
    "syncline_assets",
    "syncline_model_assets",
]
