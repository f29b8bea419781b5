"""Airflow operator for syncline pipelines.

``SynclineOperator`` runs ``syncline run`` for a config and a set of streams, maps its exit code
to Airflow's task semantics, pushes the run report to XCom and records one asset event per
loaded stream (with the report's figures) through an asset alias.
"""

from syncline_airflow.operator import (
    Outcome,
    SynclineOperator,
    outcome_of,
    read_plan,
    stream_asset,
)

__all__ = ["Outcome", "SynclineOperator", "outcome_of", "read_plan", "stream_asset"]
