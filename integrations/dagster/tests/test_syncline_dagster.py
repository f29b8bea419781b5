"""syncline-dagster: exit-code mapping and asset specs (unit), and the real Dagster running the
real binary (live: skipped unless tests/it/orchestrators.rs provides a pipeline).

No `from __future__ import annotations` here: Dagster reads the asset function's `context`
annotation as a type."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    DagsterEventType,
    ExecuteInProcessResult,
    materialize,
)

from syncline_dagster import Outcome, SynclineResource, outcome_of, syncline_assets, syncline_model_assets
from syncline_dagster.assets import model_specs_from_plan, specs_from_plan

EXAMPLE = Path(__file__).resolve().parent.parent / "example" / "definitions.py"

PLAN: dict[str, Any] = {
    "pipeline": "crm",
    "source": "hubspot",
    "destination": "postgres",
    "models": [
        {
            "name": "deal_pipeline",
            "file": "models/deal_pipeline.sql",
            "materialized": "table",
            "key": None,
            "tests": [],
            "depends_on": ["deals"],
            "destination_table": "crm.deal_pipeline",
            "checks": [{"name": "not_null_deals", "description": "not_null(deals)", "severity": "ERROR"}],
        },
        {
            "name": "won_deals",
            "file": "models/won_deals.sql",
            "materialized": "incremental",
            "key": "id",
            "tests": [],
            "depends_on": ["contacts", "deal_pipeline"],
            "destination_table": "crm.won_deals",
            "checks": [],
        },
    ],
    "streams": [
        {
            "name": name,
            "destination_table": f"crm.{name}",
            "key": ["id"],
            "mode": "incremental",
            "deletes": "hard",
            "checks": [{"name": "reconciliation", "description": "hops agree", "severity": "ERROR"}],
        }
        for name in ("contacts", "deals")
    ],
}


@pytest.mark.parametrize(
    "code,outcome",
    [
        (0, Outcome.SUCCESS),
        (1, Outcome.RETRY),
        (2, Outcome.FAIL),
        (3, Outcome.FAIL),
        (4, Outcome.QUOTA),
        (101, Outcome.RETRY),
        (137, Outcome.RETRY),
        (143, Outcome.RETRY),
        (-9, Outcome.RETRY),
    ],
)
def test_exit_codes_map_to_dagster_outcomes(code: int, outcome: Outcome) -> None:
    assert outcome_of(code) is outcome


def test_each_stream_is_an_asset_with_its_reconciliation_check() -> None:
    specs, checks = specs_from_plan(PLAN, "/etc/crm.toml", ["crm"])
    assert [s.key for s in specs] == [AssetKey(["crm", "contacts"]), AssetKey(["crm", "deals"])]
    assert specs[0].metadata["syncline/stream"] == "contacts"
    assert specs[0].metadata["dagster/table_name"] == "crm.contacts"
    assert [(c.asset_key, c.name) for c in checks] == [
        (AssetKey(["crm", "contacts"]), "reconciliation"),
        (AssetKey(["crm", "deals"]), "reconciliation"),
    ]


def test_each_model_is_an_asset_downstream_of_what_it_reads_with_its_tests_as_checks() -> None:
    specs, checks = model_specs_from_plan(PLAN, "/etc/crm.toml", ["crm"])
    assert [s.key for s in specs] == [AssetKey(["crm", "deal_pipeline"]), AssetKey(["crm", "won_deals"])]
    assert [d.asset_key for d in specs[0].deps] == [AssetKey(["crm", "deals"])]
    assert [d.asset_key for d in specs[1].deps] == [AssetKey(["crm", "contacts"]), AssetKey(["crm", "deal_pipeline"])]
    assert specs[1].metadata["syncline/model"] == "won_deals"
    assert specs[1].metadata["dagster/table_name"] == "crm.won_deals"
    assert [(c.asset_key, c.name) for c in checks] == [(AssetKey(["crm", "deal_pipeline"]), "not_null_deals")]


# ---- live: the real binary, the simulator and PostgreSQL -------------------------------------


def build(live: dict[str, str]) -> Any:
    @syncline_assets(config=live["SYNCLINE_CONFIG"], binary=live["SYNCLINE_BIN"])
    def crm(context: AssetExecutionContext, syncline: SynclineResource):  # type: ignore[no-untyped-def]
        yield from syncline.run(context)

    return crm


def build_models(live: dict[str, str]) -> Any:
    @syncline_model_assets(config=live["SYNCLINE_CONFIG"], binary=live["SYNCLINE_BIN"])
    def crm_models(context: AssetExecutionContext, syncline: SynclineResource):  # type: ignore[no-untyped-def]
        yield from syncline.run(context)

    return crm_models


def run(live: dict[str, str], models: bool = False, **resource: Any) -> ExecuteInProcessResult:
    assets = [build(live)] + ([build_models(live)] if models else [])
    return materialize(
        assets,
        resources={"syncline": SynclineResource(binary=live["SYNCLINE_BIN"], **resource)},
        raise_on_error=False,
    )


def events(result: ExecuteInProcessResult, kind: DagsterEventType) -> list[Any]:
    return [e for e in result.all_events if e.event_type == kind]


def test_materialize_loads_every_stream(live: dict[str, str]) -> None:
    expected: dict[str, int] = json.loads(os.environ["SYNCLINE_EXPECTED_ROWS"])
    assets = build(live)
    assert assets.can_subset
    result = run(live)
    assert result.success
    materialized = result.get_asset_materialization_events()
    by_stream = {e.asset_key.path[-1]: e.materialization for e in materialized}
    assert len(materialized) == len(expected), materialized
    for stream, rows in expected.items():
        meta = by_stream[stream].metadata
        assert meta["dagster/row_count"].value == rows, (stream, meta)
        assert meta["dagster/table_name"].value == f"crm.{stream}"
        assert meta["rows_inserted"].value == rows
        assert meta["load_id"].value
        assert [c.name for c in meta["dagster/column_schema"].value.columns][0] == "id"
    checks = result.get_asset_check_evaluations()
    assert sorted(c.asset_key.path[-1] for c in checks) == sorted(expected)
    assert all(c.passed for c in checks), checks


def test_reconciliation_failure_fails_the_check_and_the_step_without_retry(live: dict[str, str]) -> None:
    broken = os.environ["SYNCLINE_BROKEN_STREAM"]
    result = run(live)
    assert not result.success
    checks = {c.asset_key.path[-1]: c for c in result.get_asset_check_evaluations()}
    assert checks[broken].passed is False
    assert checks[broken].severity == AssetCheckSeverity.ERROR
    assert events(result, DagsterEventType.STEP_FAILURE)
    assert not events(result, DagsterEventType.STEP_UP_FOR_RETRY)


def test_a_quota_stop_is_requested_again(live: dict[str, str]) -> None:
    result = run(live, quota_wait_seconds=0, quota_max_retries=1)
    assert not result.success
    # Asked again once (the simulator's daily limit does not reset, so the retry stops too).
    assert len(events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    assert events(result, DagsterEventType.STEP_RESTARTED)


def test_two_subset_runs_of_one_pipeline_run_at_once(live: dict[str, str]) -> None:
    dagster = Path(sys.executable).parent / "dagster"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    streams = os.environ["SYNCLINE_SUBSET_STREAMS"].split(",")
    # One Dagster home each, as two workers would have their own process and storage; the
    # stage and the destination are what they share.
    homes = [tempfile.TemporaryDirectory() for _ in streams]
    runs = [
        subprocess.Popen(
            [str(dagster), "asset", "materialize", "-f", str(EXAMPLE), "--select", f"crm/{stream}"],
            env={**env, "DAGSTER_HOME": home.name},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for stream, home in zip(streams, homes)
    ]
    outputs = [r.communicate()[0] for r in runs]
    for home in homes:
        home.cleanup()
    for r, out in zip(runs, outputs):
        assert r.returncode == 0, out
        assert "ASSET_MATERIALIZATION" in out, out


def test_pipes_messages_pass_dagster_pipes_own_checks(live: dict[str, str], tmp_path: Path) -> None:
    """The binary's raw messages, read as dagster-pipes defines them."""
    import dagster_pipes as pipes

    out = tmp_path / "messages.jsonl"
    context = {"asset_keys": ["crm/contacts"], "extras": {"syncline_checks": [{"asset_key": "crm/contacts", "check_name": "reconciliation"}]}, "run_id": "x"}
    done = subprocess.run(
        [live["SYNCLINE_BIN"], "run", "--config", live["SYNCLINE_CONFIG"], "--streams", "contacts"],
        env={
            **os.environ,
            pipes.DAGSTER_PIPES_CONTEXT_ENV_VAR: pipes.encode_param({"data": context}),
            pipes.DAGSTER_PIPES_MESSAGES_ENV_VAR: pipes.encode_param({"path": str(out)}),
        },
        check=False,
    )
    assert done.returncode == 0
    messages = [json.loads(line) for line in out.read_text().splitlines()]
    methods = [m["method"] for m in messages]
    assert methods[0] == "opened" and methods[-1] == "closed", methods
    for m in messages:
        assert set(m) == {pipes.PIPES_PROTOCOL_VERSION_FIELD, "method", "params"}, m
        assert m[pipes.PIPES_PROTOCOL_VERSION_FIELD] == pipes.PIPES_PROTOCOL_VERSION
        assert m["method"] in pipes.Method.__args__  # type: ignore[attr-defined]
        params = m["params"]
        if m["method"] == "report_asset_materialization":
            assert set(params) == {"asset_key", "data_version", "metadata"}
            # Each value passes dagster-pipes' own metadata check (type named, raw value given).
            pipes._normalize_param_metadata(params["metadata"], m["method"], "metadata")
        if m["method"] == "report_asset_check":
            assert set(params) == {"asset_key", "check_name", "passed", "severity", "metadata"}
            assert params["severity"] in pipes.PipesAssetCheckSeverity.__args__  # type: ignore[attr-defined]
            pipes._normalize_param_metadata(params["metadata"], m["method"], "metadata")
    assert methods.count("report_asset_materialization") == 1


def outcome_file(result: ExecuteInProcessResult) -> None:
    """Writes what Dagster recorded for the Rust test to compare with the destination."""
    rows = {
        e.asset_key.path[-1]: getattr(e.materialization.metadata.get("dagster/row_count"), "value", None)
        for e in result.get_asset_materialization_events()
    }
    checks = {
        f"{c.asset_key.path[-1]}/{c.check_name}": c.passed for c in result.get_asset_check_evaluations()
    }
    Path(os.environ["SYNCLINE_RESULT_FILE"]).write_text(json.dumps({"rows": rows, "checks": checks}))


def test_streams_and_models_materialize_together(live: dict[str, str]) -> None:
    models = build_models(live)
    assert models.can_subset
    result = run(live, models=True)
    outcome_file(result)
    assert result.success
    materialized = [e.asset_key.path[-1] for e in result.get_asset_materialization_events()]
    # One materialization per stream and per model, the models after the streams they read.
    assert len(materialized) == len(set(materialized)), materialized
    checks = result.get_asset_check_evaluations()
    assert all(c.passed for c in checks), checks
    steps = [e.step_key for e in events(result, DagsterEventType.STEP_SUCCESS)]
    assert steps == ["syncline_crm", "syncline_crm_models"], steps


def test_a_failing_model_test_fails_its_check_and_the_step_without_retry(live: dict[str, str]) -> None:
    result = run(live, models=True)
    outcome_file(result)
    assert not result.success
    failed = [e for e in events(result, DagsterEventType.STEP_FAILURE)]
    assert [e.step_key for e in failed] == ["syncline_crm_models"], failed
    # The model whose test failed is not materialized (its previous table stays).
    materialized = [e.asset_key.path[-1] for e in result.get_asset_materialization_events()]
    assert "lifecycle_share" not in materialized, materialized
    assert not events(result, DagsterEventType.STEP_UP_FOR_RETRY)
