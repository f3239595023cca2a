"""The kill-worker scenario's report: how long each restarted worker took to be ready, read from
the worker log that the scenario's worker processes write one after another."""

from __future__ import annotations

from chaos.kill_worker import KillReport, readiness

LOG = """\
[2026-12-05 06:59:25,275] [18519] [INFO] [^Worker]: Starting...
[2026-12-05 06:59:25,276] [18519] [INFO] [^-GridflowApp]: Starting...
[2026-12-05 06:59:26,452] [18519] [INFO] [^---GridflowRecovery]: Starting...
[2026-12-05 06:59:26,790] [18519] [INFO] [^---GridflowRecovery]: Worker ready
2026-12-05 06:59:27,000 INFO kafka.cluster: Starting metadata refresh loop
[2026-12-05 06:59:32,498] [18899] [INFO] [^Worker]: Starting...
[2026-12-05 06:59:38,392] [18899] [INFO] [^---GridflowRecovery]: Seek stream partitions
[2026-12-05 06:59:39,901] [19391] [INFO] [^Worker]: Starting...
[2026-12-05 06:59:40,978] [19391] [INFO] [^---GridflowRecovery]: Starting...
[2026-12-05 06:59:42,701] [19391] [INFO] [^---GridflowRecovery]: Worker ready
"""


def test_each_start_that_got_ready_is_timed_from_faust_s_worker_start():
    starts, ready = readiness(LOG)
    assert starts == 3  # 18899 was killed before it was ready
    assert ready == [1.515, 2.8]


def test_a_log_with_no_faust_lines_has_no_starts():
    assert readiness("") == (0, [])
    assert readiness("2026-12-05 06:59:27,000 INFO kafka.cluster: Worker ready\n") == (0, [])


def test_the_report_says_how_soon_restarted_workers_were_ready():
    report = KillReport(prefix="p", cycles=3, sink_kills=1, worker_starts=3,
                        ready_after_s=[2.8, 0.7])
    line = next(x for x in report.lines() if "ready after their start" in x)
    assert "median 2.8 s, longest 2.8 s (2 of 3 starts ready before their kill)" in line
    assert not any("ready after" in x for x in KillReport("p", 3, 1).lines())
