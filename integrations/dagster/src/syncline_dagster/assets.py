"""``@syncline_assets``: one Dagster asset per stream of a syncline pipeline;
``@syncline_model_assets``: one per SQL model, downstream of what it reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster import (
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Backoff,
    RetryPolicy,
    multi_asset,
)

from syncline_dagster.resource import CONFIG_KEY, MODEL_KEY, STREAM_KEY, read_plan


def stream_of(spec: AssetSpec) -> str:
    """The syncline stream an asset loads."""
    return str(spec.metadata[STREAM_KEY])


def specs_from_plan(
    plan: Mapping[str, Any],
    config: str,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
) -> tuple[list[AssetSpec], list[AssetCheckSpec]]:
    """The asset and check specs of a ``syncline plan --json``."""
    specs: list[AssetSpec] = []
    checks: list[AssetCheckSpec] = []
    for stream in plan["streams"]:
        key = AssetKey([*key_prefix, stream["name"]])
        specs.append(
            AssetSpec(
                key=key,
                description=f"{plan['source']} stream {stream['name']} in {stream['destination_table']}",
                group_name=group_name,
                kinds={"syncline", str(plan["destination"])},
                metadata={
                    CONFIG_KEY: str(config),
                    STREAM_KEY: stream["name"],
                    "dagster/table_name": stream["destination_table"],
                    "syncline/key": ",".join(stream["key"] or []),
                    "syncline/mode": stream["mode"],
                },
            )
        )
        for check in stream["checks"]:
            checks.append(AssetCheckSpec(name=check["name"], asset=key, description=check["description"]))
    return specs, checks


def model_specs_from_plan(
    plan: Mapping[str, Any],
    config: str,
    key_prefix: Sequence[str] = (),
    group_name: str | None = None,
) -> tuple[list[AssetSpec], list[AssetCheckSpec]]:
    """One asset per model of a ``syncline plan --json``, depending on the streams and models
    it reads (under the same ``key_prefix`` as the streams), with one check per test."""
    specs: list[AssetSpec] = []
    checks: list[AssetCheckSpec] = []
    for model in plan.get("models", []):
        key = AssetKey([*key_prefix, model["name"]])
        specs.append(
            AssetSpec(
                key=key,
                deps=[AssetKey([*key_prefix, dep]) for dep in model["depends_on"]],
                description=f"SQL model {model['file']} ({model['materialized']})",
                group_name=group_name,
                kinds={"syncline", "sql", str(plan["destination"])},
                metadata={
                    CONFIG_KEY: str(config),
                    MODEL_KEY: model["name"],
                    "dagster/table_name": model["destination_table"],
                    "syncline/materialized": model["materialized"],
                },
            )
        )
        for check in model["checks"]:
            checks.append(AssetCheckSpec(name=check["name"], asset=key, description=check["description"]))
    return specs, checks


def syncline_assets(
    *,
    config: str,
    name: str | None = None,
    key_prefix: Sequence[str] | None = None,
    group_name: str | None = None,
    binary: str = "syncline",
    retry_policy: RetryPolicy | None = None,
    pool: str | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Declares one asset per stream of the pipeline at ``config`` (read with ``syncline plan``).

    The assets are subsettable: Dagster may run any selection of streams, in different steps on
    different workers at once (syncline's per-stream lease keeps two runs of one stream apart).
    ``key_prefix`` defaults to the pipeline's name. A failure that may pass (exit 1, a crash, a
    kill) is retried by ``retry_policy`` (default: 3 times, exponential from 30 s).
    """
    plan = read_plan(config, binary)
    prefix = list(key_prefix) if key_prefix is not None else [str(plan["pipeline"])]
    specs, checks = specs_from_plan(plan, config, prefix, group_name)

    def decorator(fn: Callable[..., Any]) -> AssetsDefinition:
        return multi_asset(
            name=name or f"syncline_{plan['pipeline']}".replace("-", "_"),
            specs=specs,
            check_specs=checks,
            can_subset=True,
            retry_policy=retry_policy or RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL),
            pool=pool,
            op_tags={"syncline/pipeline": str(plan["pipeline"])},
        )(fn)

    return decorator


def syncline_model_assets(
    *,
    config: str,
    name: str | None = None,
    key_prefix: Sequence[str] | None = None,
    group_name: str | None = None,
    binary: str = "syncline",
    retry_policy: RetryPolicy | None = None,
    pool: str | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """Declares one asset per SQL model of the pipeline at ``config`` (its ``[models]``),
    each downstream of the stream and model assets it reads, with one check per test.

    Materializing runs ``syncline models run --select`` for the selected models; each built
    model reports ``dagster/row_count`` (the table's rows) and each test its check result. A
    failing test fails its check and the step, without retry (the previous table stays).
    ``key_prefix`` defaults to the pipeline's name, as for ``@syncline_assets``.
    """
    plan = read_plan(config, binary)
    prefix = list(key_prefix) if key_prefix is not None else [str(plan["pipeline"])]
    specs, checks = model_specs_from_plan(plan, config, prefix, group_name)
    if not specs:
        raise ValueError(f"{config}: the pipeline has no models (a [models] table and models/*.sql)")

    def decorator(fn: Callable[..., Any]) -> AssetsDefinition:
        return multi_asset(
            name=name or f"syncline_{plan['pipeline']}_models".replace("-", "_"),
            specs=specs,
            check_specs=checks,
            can_subset=True,
            retry_policy=retry_policy or RetryPolicy(max_retries=3, delay=30, backoff=Backoff.EXPONENTIAL),
            pool=pool,
            op_tags={"syncline/pipeline": str(plan["pipeline"])},
        )(fn)

    return decorator
