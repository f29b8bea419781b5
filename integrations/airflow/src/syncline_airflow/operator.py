"""``SynclineOperator``: one ``syncline run`` as an Airflow task."""

from __future__ import annotations

import datetime
import enum
import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import Asset, AssetAlias, BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowRescheduleException


class Outcome(enum.Enum):
    SUCCESS = "success"
    #: 1, a panic (101), a kill (137/143, or -9/-15 seen directly): the task's retries apply.
    RETRY = "retry"
    #: 2 (configuration) and 3 (the destination does not match the source): no retry helps.
    FAIL = "fail"
    #: 4: the API quota ran out; what was read is merged. Reschedule for later.
    QUOTA = "quota"


def outcome_of(returncode: int) -> Outcome:
    """The outcome of ``syncline run``'s exit status (as ``subprocess`` gives it)."""
    if returncode == 0:
        return Outcome.SUCCESS
    if returncode in (2, 3):
        return Outcome.FAIL
    if returncode == 4:
        return Outcome.QUOTA
    # Everything else, 99 included (which BashOperator would take as "skip"): a failure the
    # task's retries may cure. syncline itself never exits 99.
    return Outcome.RETRY


def read_plan(config: str, binary: str = "syncline", env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``syncline plan --config CONFIG --json``."""
    done = subprocess.run(
        [binary, "plan", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if done.returncode != 0:
        raise AirflowFailException(f"syncline plan failed (exit {done.returncode}): {done.stderr.strip()}")
    plan: dict[str, Any] = json.loads(done.stdout)
    return plan


def stream_asset(pipeline: str, stream: str) -> Asset:
    """The Airflow asset of one stream of a pipeline: ``syncline://PIPELINE/STREAM``."""
    return Asset(name=f"syncline/{pipeline}/{stream}", uri=f"syncline://{pipeline}/{stream}")


#: The figures of a stream's run report that go into its asset event.
FIGURES = (
    "load_id",
    "mode",
    "status",
    "rows_extracted",
    "rows_staged",
    "rows_inserted",
    "rows_updated",
    "rows_deleted",
    "rows_dead_lettered",
    "cursor_from",
    "cursor_to",
    "duration_ms",
)


class SynclineOperator(BaseOperator):
    """Runs ``syncline run --config CONFIG [--streams ...] [--full-refresh]``.

    Exit codes: 0 success; 2 and 3 fail the task without retry (``AirflowFailException``); 4
    (API quota used up, what was read is merged) reschedules the task ``quota_wait_seconds``
    later; anything else raises ``AirflowException`` so the task's ``retries`` apply. The run
    report (JSON) is the task's return value (XCom ``return_value``). Each stream whose load
    committed gets an asset event ``syncline://PIPELINE/STREAM`` through the outlet alias
    ``alias`` (default ``syncline-PIPELINE`` is not knowable before the plan is read, so the
    default alias is ``syncline``), its ``extra`` holding the report's figures.
    """

    template_fields: Sequence[str] = ("config", "streams")

    def __init__(
        self,
        *,
        config: str,
        streams: Sequence[str] | None = None,
        full_refresh: bool = False,
        binary: str = "syncline",
        env: Mapping[str, str] | None = None,
        alias: str = "syncline",
        quota_wait_seconds: int = 900,
        **kwargs: Any,
    ) -> None:
        self.alias = AssetAlias(alias)
        kwargs.setdefault("outlets", [self.alias])
        super().__init__(**kwargs)
        self.config = config
        self.streams = list(streams) if streams else None
        self.full_refresh = full_refresh
        self.binary = binary
        self.env = dict(env or {})
        self.quota_wait_seconds = quota_wait_seconds

    def command(self, report: str) -> list[str]:
        command = [self.binary, "run", "--config", str(self.config), "--report", report]
        if self.streams:
            command += ["--streams", ",".join(self.streams)]
        if self.full_refresh:
            command.append("--full-refresh")
        return command

    def execute(self, context: Any) -> dict[str, Any] | None:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "report.json")
            done = subprocess.run(self.command(path), env={**os.environ, **self.env}, check=False)
            report: dict[str, Any] | None = None
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    report = json.load(f)
        if report is not None:
            self.record_asset_events(context, report)
        outcome = outcome_of(done.returncode)
        streams = ",".join(self.streams or ["(all)"])
        message = f"syncline run --streams {streams} exited {done.returncode}"
        if outcome is Outcome.FAIL:
            raise AirflowFailException(message + self.errors(report))
        if outcome is Outcome.QUOTA:
            self.log.warning("%s: API quota used up; rescheduling in %ss", message, self.quota_wait_seconds)
            raise AirflowRescheduleException(
                reschedule_date=datetime.datetime.now(datetime.timezone.utc)
                + datetime.timedelta(seconds=self.quota_wait_seconds)
            )
        if outcome is Outcome.RETRY:
            raise AirflowException(message + self.errors(report))
        return report

    @staticmethod
    def errors(report: dict[str, Any] | None) -> str:
        if not report:
            return ""
        failed = [f"{s['stream']}: {s.get('error')}" for s in report.get("streams", []) if s.get("error")]
        return (": " + "; ".join(failed)) if failed else ""

    def record_asset_events(self, context: Any, report: dict[str, Any]) -> None:
        """One asset event per stream whose load committed, carrying the report's figures."""
        outlet_events = context.get("outlet_events") if hasattr(context, "get") else None
        if outlet_events is None:
            return
        events = outlet_events[self.alias]
        for stream in report.get("streams", []):
            if stream.get("status") not in ("success", "stopped") or not stream.get("load_id"):
                continue
            extra = {k: stream.get(k) for k in FIGURES}
            extra["pipeline"] = report.get("pipeline")
            events.add(stream_asset(str(report.get("pipeline")), stream["stream"]), extra=extra)
