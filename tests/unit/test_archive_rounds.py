"""`gridflow archive-log`'s rounds: a failed round is retried a round later by its retry policy
(logged with the policy's name), never skipped; `--once` raises instead."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from audit.cli import _rounds
from tests.support.stop import RecordingStop


def test_a_failed_round_waits_a_round_and_goes_on(caplog):
    stop = RecordingStop()
    calls: list[int] = []

    def run() -> SimpleNamespace:
        calls.append(1)
        if len(calls) <= 2:
            raise OSError("minio is down")
        stop.set()
        return SimpleNamespace(completed=[], written=[], records=0, pending={})

    with caplog.at_level(logging.WARNING, logger="gridflow.audit.archiver"):
        _rounds(run, once=False, interval=30.0, stop=stop, bucket="archive")
    assert len(calls) == 3
    assert stop.waited == [30.0, 30.0, 30.0]  # two failed rounds, then the next round's pace
    assert caplog.text.count("archiving failed (OSError: minio is down); retrying in 30.0s "
                             "[archive-log]") == 2


def test_once_raises_the_failure():
    def run() -> SimpleNamespace:
        raise OSError("minio is down")

    with pytest.raises(OSError):
        _rounds(run, once=True, interval=30.0, stop=RecordingStop(), bucket="archive")
