"""``SynclineResource``: runs the ``syncline`` binary under Dagster Pipes."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Union

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    ConfigurableResource,
    Failure,
    MaterializeResult,
    PipesSubprocessClient,
    RetryRequested,
    open_pipes_session,
)

from syncline_dagster.exit_codes import Outcome, outcome_of

Result = Union[MaterializeResult[Any], AssetCheckResult]

#: Metadata keys on each stream's AssetSpec that tie the asset to its pipeline.
CONFIG_KEY = "syncline/config"
STREAM_KEY = "syncline/stream"
#: ... and on each model's AssetSpec (``@syncline_model_assets``).
MODEL_KEY = "syncline/model"


def read_plan(config: str, binary: str = "syncline", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``syncline plan --config CONFIG --json``: the pipeline's streams, tables, keys and checks."""
    done = subprocess.run(
        [binary, "plan", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise Failure(
            description=f"syncline plan failed (exit {done.returncode}): {done.stderr.strip()}",
            allow_retries=False,
        )
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


class SynclineResource(ConfigurableResource[Any]):
    """Runs ``syncline run`` for the selected streams of a ``@syncline_assets`` definition.

    The binary speaks Dagster Pipes itself: each stream is reported as a materialization as
    soon as its load commits, with ``dagster/row_count`` (the table's live rows), the rows
    inserted/updated/deleted, the load id as data version, the cursor and the column schema.
    """

    #: The ``syncline`` binary (a path, or a name on PATH).
    binary: str = "syncline"
    #: Extra environment for the process (secrets the config reads with ``${VAR}``).
    env: dict[str, str] = {}
    #: A stopped run on a used-up API quota is asked again this much later ...
    quota_wait_seconds: int = 900
    #: ... this many times.
    quota_max_retries: int = 4

    def plan(self, config: str) -> dict[str, Any]:
        return read_plan(config, self.binary, self.env)

    def run(
        self,
        context: AssetExecutionContext,
        *,
        full_refresh: bool = False,
        extra_args: Sequence[str] = (),
    ) -> Iterator[Result]:
        """Loads the streams (or builds the models) selected in this step and yields their
        results; maps the exit code to Dagster's semantics (see ``exit_codes``)."""
        specs = context.assets_def.specs_by_key
        selected = sorted(context.selected_asset_keys, key=lambda k: k.to_user_string())
        configs = {specs[key].metadata[CONFIG_KEY] for key in selected}
        if len(configs) != 1:
            raise Failure(description=f"selected assets span configs {sorted(configs)}", allow_retries=False)
        config = configs.pop()
        models = [str(specs[key].metadata[MODEL_KEY]) for key in selected if MODEL_KEY in specs[key].metadata]
        if models:
            if len(models) != len(selected):
                raise Failure(description="a step selects streams and models at once", allow_retries=False)
            names = models
            command = [self.binary, "models", "run", "--config", str(config), "--select", ",".join(models)]
            if full_refresh:
                command.append("--full-refresh")
            what = f"syncline models run --select {','.join(models)}"
        else:
            names = [str(specs[key].metadata[STREAM_KEY]) for key in selected]
            command = [self.binary, "run", "--config", str(config), "--streams", ",".join(names)]
            if full_refresh:
                command.append("--full-refresh")
            what = f"syncline run --streams {','.join(names)}"
        command.extend(extra_args)
        extras = {
            "syncline_asset_keys": {name: key.to_user_string() for name, key in zip(names, selected)},
            "syncline_checks": [
                {"asset_key": check.asset_key.to_user_string(), "check_name": check.name}
                for check in context.selected_asset_check_keys
            ],
        }
        # The client's own context injector and message reader (temp files), in a session we
        # hold ourselves: PipesSubprocessClient.run raises on a non-zero exit before the results
        # that did arrive (a failed check, the streams loaded before a quota stop) are yielded.
        client = PipesSubprocessClient(env=self.env)
        with open_pipes_session(
            context=context,
            context_injector=client.context_injector,
            message_reader=client.message_reader,
            extras=extras,
        ) as session:
            process = subprocess.Popen(
                command,
                env={**os.environ, **self.env, **session.get_bootstrap_env_vars()},
            )
            returncode = process.wait()
        outcome = outcome_of(returncode)
        # Pipes would add a bare materialization for every selected asset the process did not
        # report: right for a stream that had nothing new, wrong for one that failed or a model
        # whose tests failed (its previous table stays). So only when the process succeeded.
        yield from session.get_results(implicit_materializations=outcome is Outcome.SUCCESS)
        context.log.info(f"{what} exited {returncode} ({outcome.value})")
        message = f"{what} exited {returncode}"
        if outcome is Outcome.FAIL:
            raise Failure(description=message, allow_retries=False)
        if outcome is Outcome.QUOTA:
            raise RetryRequested(
                max_retries=self.quota_max_retries, seconds_to_wait=self.quota_wait_seconds
            )
        if outcome is Outcome.RETRY:
            raise Failure(description=message, allow_retries=True)
