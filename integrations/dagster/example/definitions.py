"""An example Dagster code location: every stream of the pipeline in ``$SYNCLINE_CONFIG`` as an
asset, loaded by ``syncline run`` under Dagster Pipes, and every SQL model of its ``[models]``
as an asset downstream of the streams it reads, built by ``syncline models run``.

    dagster asset materialize -f definitions.py --select 'crm/contacts'
"""

import os

from dagster import AssetExecutionContext, Definitions

from syncline_dagster import SynclineResource, read_plan, syncline_assets, syncline_model_assets

BINARY = os.environ.get("SYNCLINE_BIN", "syncline")
CONFIG = os.environ["SYNCLINE_CONFIG"]


@syncline_assets(config=CONFIG, binary=BINARY)
def crm(context: AssetExecutionContext, syncline: SynclineResource):  # type: ignore[no-untyped-def]
    yield from syncline.run(context)


assets = [crm]
if read_plan(CONFIG, BINARY)["models"]:

    @syncline_model_assets(config=CONFIG, binary=BINARY)
    def crm_models(context: AssetExecutionContext, syncline: SynclineResource):  # type: ignore[no-untyped-def]
        yield from syncline.run(context)

    assets.append(crm_models)

defs = Definitions(
    assets=assets,
    resources={
        "syncline": SynclineResource(
            binary=BINARY,
            quota_wait_seconds=int(os.environ.get("SYNCLINE_QUOTA_WAIT_SECONDS", "900")),
            quota_max_retries=int(os.environ.get("SYNCLINE_QUOTA_MAX_RETRIES", "4")),
        )
    },
)
