"""syncline-airflow: exit codes, the command line, asset events (unit, with a stand-in binary),
and the example DAG under the real Airflow (live: driven by tests/it/orchestrators.rs)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRescheduleException

from syncline_airflow import Outcome, SynclineOperator, outcome_of

REPORT = {
    "pipeline": "crm",
    "status": "success",
    "exit_code": 0,
    "streams": [
        {"stream": "contacts", "status": "success", "load_id": "L1", "rows_inserted": 7, "mode": "full"},
        {"stream": "deals", "status": "failed", "load_id": None, "error": "boom"},
    ],
}


@pytest.mark.parametrize(
    "code,outcome",
    [(0, Outcome.SUCCESS), (1, Outcome.RETRY), (2, Outcome.FAIL), (3, Outcome.FAIL), (4, Outcome.QUOTA), (99, Outcome.RETRY), (101, Outcome.RETRY), (137, Outcome.RETRY), (-15, Outcome.RETRY)],
)
def test_exit_codes_map_to_airflow_outcomes(code: int, outcome: Outcome) -> None:
    assert outcome_of(code) is outcome


def stand_in(tmp_path: Path, code: int) -> str:
    """A `syncline` that writes REPORT to --report and exits `code`, logging its arguments."""
    script = tmp_path / "syncline"
    script.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(tmp_path / 'args.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "path = sys.argv[sys.argv.index('--report') + 1]\n"
        f"open(path, 'w').write({json.dumps(json.dumps(REPORT))})\n"
        f"sys.exit({code})\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


class Events:
    def __init__(self) -> None:
        self.added: list[tuple[Any, dict[str, Any]]] = []

    def add(self, asset: Any, extra: dict[str, Any]) -> None:
        self.added.append((asset, extra))


class OutletEvents(dict):  # type: ignore[type-arg]
    def __missing__(self, key: Any) -> Events:
        self[key] = Events()
        return self[key]


def test_success_returns_the_report_and_records_an_event_per_loaded_stream(tmp_path: Path) -> None:
    op = SynclineOperator(task_id="t", config="/c.toml", streams=["contacts", "deals"], full_refresh=True, binary=stand_in(tmp_path, 0))
    outlet_events = OutletEvents()
    assert op.execute({"outlet_events": outlet_events}) == REPORT
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[:3] == ["run", "--config", "/c.toml"]
    assert args[args.index("--streams") + 1] == "contacts,deals"
    assert "--full-refresh" in args
    (events,) = outlet_events.values()
    assert [(a.uri, e["rows_inserted"], e["load_id"]) for a, e in events.added] == [("syncline://crm/contacts", 7, "L1")]


@pytest.mark.parametrize(
    "code,error",
    [(2, AirflowFailException), (3, AirflowFailException), (4, AirflowRescheduleException), (1, AirflowException), (99, AirflowException)],
)
def test_failures_raise_what_airflow_expects(tmp_path: Path, code: int, error: type[Exception]) -> None:
    op = SynclineOperator(task_id="t", config="/c.toml", binary=stand_in(tmp_path, code))
    with pytest.raises(error) as raised:
        op.execute({})
    if code == 1:
        assert not isinstance(raised.value, AirflowFailException)
        assert "deals: boom" in str(raised.value)
