"""The worker's roles: which agents and which consumer group each runs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bootstrap import bootstrap
from gridflow.settings import load_settings
from processors.app import build_app
from processors.delivery import GridflowConsumerThread
from processors.tablestore import consumer_instance_id, instance_id_for, resolve_instance_id
from processors.worker import runtime_for_role


def agents_and_group(role: str) -> tuple[set[str], str]:
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(bootstrap(settings), role))
    names = {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}
    return names, app.conf.id


def test_all_runs_every_agent_in_the_pipeline_group():
    names, group = agents_and_group("all")
    assert names == {"filing", "case_processor", "photo_archive", "deadlines"}
    assert group == "roles-processor"


def test_the_case_processor_reads_reports_commands_and_ticks_in_one_stream():
    """Issue 16: one agent takes a report to its case's events, so the reports, the case
    commands and the ticks are one ordered stream per partition, read together."""
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(bootstrap(settings), "pipeline"))
    agent = next(a for a in app.agents.values() if a.name.endswith("case_processor"))
    assert set(agent.channel.topics) == {"roles.reports", "roles.case-commands",
                                         "roles.deadline-ticks"}


def test_pipeline_runs_everything_but_the_archive_in_the_same_group():
    names, group = agents_and_group("pipeline")
    assert names == {"filing", "case_processor", "deadlines"}
    assert group == "roles-processor"  # so a worker can switch between all and pipeline


def test_archive_runs_the_archive_alone_in_a_group_of_its_own():
    names, group = agents_and_group("archive")
    assert names == {"photo_archive"}
    assert group == "roles-archive"


def test_an_unknown_role_is_refused():
    with pytest.raises(ValueError, match="role must be one of"):
        runtime_for_role(bootstrap(load_settings()), "everything")


def test_group_membership_settings_reach_the_consumer(monkeypatch):
    monkeypatch.setenv("GRIDFLOW_WORKER_INSTANCE_ID", "host1-pipeline")
    monkeypatch.setenv("GRIDFLOW_WORKER_SESSION_TIMEOUT_S", "9")
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(bootstrap(settings), "pipeline"))
    assert app.conf.consumer_group_instance_id == "host1-pipeline"
    assert app.conf.broker_session_timeout == 9.0
    assert app.conf.broker_heartbeat_interval == 3.0
    dynamic = build_app(runtime_for_role(bootstrap(load_settings().with_(
        topic_prefix="roles", worker_instance_id="dynamic")), "pipeline"))
    assert dynamic.conf.consumer_group_instance_id is None  # dynamic membership


def test_static_membership_is_the_default_with_an_id_of_the_worker_s_own(tmp_path):
    data_dir = tmp_path / "roles-processor" / "w0"
    derived = resolve_instance_id("", "pipeline", data_dir)
    assert derived == instance_id_for("pipeline", data_dir)  # host, role, data directory
    assert resolve_instance_id("dynamic", "pipeline", data_dir) == "dynamic"
    assert resolve_instance_id("host1-pipeline", "pipeline", data_dir) == "host1-pipeline"
    assert consumer_instance_id(derived) == derived
    assert consumer_instance_id("dynamic") is None and consumer_instance_id("") is None


def test_a_static_member_forgets_its_instance_id_when_it_stops_cleanly():
    # so aiokafka sends LeaveGroup (it sends none for a static member) and the group hands
    # the partitions over at once
    class Coordinator:
        _group_instance_id = "host1-pipeline-0123456789"

    thread = GridflowConsumerThread.__new__(GridflowConsumerThread)
    thread._consumer = SimpleNamespace(_coordinator=Coordinator())
    thread._leave_on_close()
    assert thread._consumer._coordinator._group_instance_id is None


def test_the_deadline_book_s_writes_go_before_the_case_state_they_were_decided_with():
    # processors.delivery.SendLedger.outputs_first: the book's two changelogs, and no other
    # table's (those wait for the outputs before them).
    settings = load_settings()
    app = build_app(runtime_for_role(bootstrap(settings), "pipeline"))
    early = app.send_ledger._output_topics
    assert len(early) == 2 and all("deadline-" in name for name in early)
    others = {t.changelog_topic.get_topic_name() for t in app.tables.values()} - early
    assert others and not any("deadline-" in name for name in others)


def test_the_worker_runs_on_the_event_loop_it_is_given(monkeypatch):
    import asyncio
    import builtins
    import logging

    import uvloop

    from processors.worker import use_event_loop

    try:
        assert use_event_loop("uvloop") == "uvloop"
        assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
        loop = asyncio.new_event_loop()
        assert isinstance(loop, uvloop.Loop)
        loop.close()
        assert use_event_loop("asyncio") == "asyncio"
        assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)

        # uvloop missing (no Windows build): asyncio's loop, and the log says so
        real_import = builtins.__import__

        def no_uvloop(name, *args, **kwargs):
            if name == "uvloop":
                raise ImportError("No module named 'uvloop'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_uvloop)
        records = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("gridflow.worker").addHandler(handler)
        try:
            assert use_event_loop("uvloop") == "asyncio"
        finally:
            logging.getLogger("gridflow.worker").removeHandler(handler)
        assert any("uvloop is not installed" in r.getMessage() for r in records)
        assert not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(None)


def test_the_worker_s_event_loop_is_a_setting(monkeypatch, tmp_path):
    import pytest

    from gridflow.settings import Settings, load_settings, settings_env

    assert Settings().worker_loop == "uvloop"
    monkeypatch.setenv("GRIDFLOW_WORKER_LOOP", "asyncio")
    s = load_settings()
    assert s.worker_loop == "asyncio"
    assert settings_env(s)["GRIDFLOW_WORKER_LOOP"] == "asyncio"
    with pytest.raises(ValueError, match="GRIDFLOW_WORKER_LOOP must be uvloop or asyncio"):
        Settings(worker_loop="trio")


def test_the_worker_s_fetch_is_held_briefly_so_a_recovery_s_offset_queries_do_not_wait():
    """faust's consumer asks the broker to hold an empty fetch for 1.5 s; a restarted worker's
    recovery sends its offset queries on the same connection, behind the held fetch, three
    times over (processors.delivery.FETCH_MAX_WAIT_MS)."""
    import asyncio

    from processors.delivery import FETCH_MAX_WAIT_MS

    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(bootstrap(settings), "pipeline"))

    async def created() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.consumer.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()  # never started: nothing to close but its client

    assert FETCH_MAX_WAIT_MS <= 250
    assert asyncio.run(created()) == FETCH_MAX_WAIT_MS
    # the attribute set is the one aiokafka keeps the setting in and hands its fetcher at start
    import inspect

    from aiokafka import AIOKafkaConsumer

    async def kept() -> int:
        consumer = AIOKafkaConsumer(fetch_max_wait_ms=1234)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(kept()) == 1234
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_faust_s_monitor_is_not_a_sensor_of_the_worker():
    """faust's Monitor keeps per-record statistics that nothing here reads; the worker's app
    leaves it out of the sensors (processors.delivery.GridflowApp.on_init_dependencies), and
    the object is still there for the consumer's bookkeeping."""
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(bootstrap(settings), "pipeline"))
    list(app.on_init_dependencies())
    assert app.monitor not in set(app.sensors)
    assert app.monitor.messages_received_total == 0  # still there, unstarted
    list(app.on_init_dependencies())  # again (a restart of the app's service): still fine
    assert app.monitor not in set(app.sensors)
