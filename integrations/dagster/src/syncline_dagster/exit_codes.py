"""What each ``syncline run`` exit code means to Dagster (README, "Exit codes")."""

from __future__ import annotations

import enum


class Outcome(enum.Enum):
    """How a step treats a finished ``syncline run``."""

    SUCCESS = "success"
    #: A fault that may pass (network, a lost lease, a crash, a kill): the op's RetryPolicy retries.
    RETRY = "retry"
    #: The config or the data is wrong (2), or the destination does not match the source (3):
    #: retrying cannot help, so the step fails for good.
    FAIL = "fail"
    #: The source's API quota ran out (4): what was read is merged; ask again later.
    QUOTA = "quota"


def outcome_of(returncode: int) -> Outcome:
    """The outcome of a process exit status as ``subprocess`` gives it (negative: a signal)."""
    if returncode == 0:
        return Outcome.SUCCESS
    if returncode in (2, 3):
        return Outcome.FAIL
    if returncode == 4:
        return Outcome.QUOTA
    # 1, 101 (a panic), 137/143 (SIGKILL/SIGTERM through a shell) and -9/-15 (the same signals
    # seen directly): every one of these leaves the stream safe to run again.
    return Outcome.RETRY
