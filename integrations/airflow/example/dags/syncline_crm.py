"""Example DAG: every stream of the pipeline in ``$SYNCLINE_CONFIG`` loaded by its own task,
fanned out with dynamic task mapping over the streams ``syncline plan`` lists.

Each mapped task runs ``syncline run --streams STREAM``: streams load in parallel on as many
workers as the pool allows, and syncline's per-stream lease keeps two runs of one stream apart.
"""

import datetime
import os

from airflow.sdk import AssetAlias, dag, task

from syncline_airflow import SynclineOperator, read_plan

BINARY = os.environ.get("SYNCLINE_BIN", "syncline")
CONFIG = os.environ.get("SYNCLINE_CONFIG", "/etc/syncline/crm.toml")


@dag(
    dag_id="syncline_crm",
    schedule="@hourly",
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    default_args={"retries": 2, "retry_delay": datetime.timedelta(seconds=30)},
)
def syncline_crm() -> None:
    @task
    def streams() -> list[list[str]]:
        return [[s["name"]] for s in read_plan(CONFIG, BINARY)["streams"]]

    # A mapped operator's outlets are fixed at parse time, before any __init__ runs: name the
    # alias the operator records each stream's asset event through.
    SynclineOperator.partial(
        task_id="load", config=CONFIG, binary=BINARY, outlets=[AssetAlias("syncline")]
    ).expand(streams=streams())


syncline_crm()
