"""The worker's commit rules (processors.delivery): no offset committed past an unprocessed
record, none before the agents' output is delivered."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from faust.exceptions import ProducerSendError
from faust.types import TP

from processors.delivery import SendLedger, StallWatch, answered_within, contiguous_commit


def test_commits_the_run_that_starts_at_the_committed_offset():
    acked = [41, 42, 43, 45]
    assert contiguous_commit(acked, 41) == (44, 3)
    assert acked == [45]


def test_a_missing_record_right_after_the_committed_offset_blocks_the_commit():
    # faust accepts this (min(acked) - committed == 1 is "no gap"): the record at 41 was
    # fetched but never processed, and committing 44 would lose it for good.
    acked = [42, 43]
    assert contiguous_commit(acked, 41) == (None, 0)
    assert acked == [42, 43]


def test_a_new_group_counts_from_the_log_start_not_from_the_first_processed_record():
    # faust checks nothing while the committed offset is 0 or unknown.
    acked = [3, 4, 5]
    assert contiguous_commit(acked, 0) == (None, 0)
    acked = [0, 1, 2, 4]
    assert contiguous_commit(acked, 0) == (3, 3)


def test_acks_below_the_committed_offset_are_dropped_not_counted():
    # a record processed twice (read again after a rewind) acks an offset already committed
    acked = [7, 8, 10, 11]
    assert contiguous_commit(acked, 10) == (12, 4)
    assert acked == []


def test_a_hole_in_the_middle_commits_up_to_the_hole():
    acked = [5, 6, 8, 9]
    assert contiguous_commit(acked, 5) == (7, 2)
    assert acked == [8, 9]
    assert contiguous_commit(acked, 7) == (None, 0)


def _run(coro):
    return asyncio.run(coro)


def test_the_ledger_passes_delivered_sends_and_forgets_them():
    async def scenario():
        loop = asyncio.get_running_loop()
        ledger = SendLedger()
        done, pending = loop.create_future(), loop.create_future()
        done.set_result("metadata")
        ledger.track(done)
        ledger.track(pending)
        ledger.check()
        assert len(ledger) == 1  # the pending one is kept for the next commit
        pending.set_result("metadata")
        ledger.check()
        assert len(ledger) == 0

    _run(scenario())


def test_the_ledger_refuses_a_commit_when_a_send_failed():
    async def scenario():
        loop = asyncio.get_running_loop()
        ledger = SendLedger()
        failed = loop.create_future()
        failed.set_exception(RuntimeError("NotEnoughReplicas"))
        ledger.track(failed)
        with pytest.raises(ProducerSendError, match="NotEnoughReplicas"):
            ledger.check()

    _run(scenario())


def test_a_cancelled_send_counts_as_failed():
    async def scenario():
        loop = asyncio.get_running_loop()
        ledger = SendLedger()
        fut = loop.create_future()
        fut.cancel()
        ledger.track(fut)
        with pytest.raises(ProducerSendError):
            ledger.check()

    _run(scenario())


# --- the consumer that applies these rules (no broker needed to build it) -----------------

@pytest.fixture
def consumer():
    from faust.types import TP

    from processors.delivery import GridflowApp, GridflowConsumer

    app = GridflowApp("delivery-test", broker="kafka://127.0.0.1:1", store="memory://",
                      web_enabled=False, dense_topics=["p.reports"])
    c = app.consumer
    assert isinstance(c, GridflowConsumer)
    return c, TP("p.reports", 0), TP("p-processor-__assignor-__leader", 0)


def _acked(c, tp, offsets):
    c._acked[tp] = list(offsets)
    c._acked_index[tp] = set(offsets)


def test_the_consumer_never_commits_over_an_unprocessed_head(consumer):
    c, tp, _ = consumer
    c._committed_offset[tp] = 41
    _acked(c, tp, [42, 43])
    assert c._new_offset(tp) is None
    _acked(c, tp, [41, 42, 43])
    assert c._new_offset(tp) == 44
    assert c._acked_index[tp] == set()


def test_a_new_group_counts_from_where_the_seek_put_it(consumer):
    c, tp, _ = consumer
    _acked(c, tp, [1, 2])
    assert c._new_offset(tp) is None  # no committed offset and no seek yet: nothing known
    c._base[tp] = 0  # seek_to_committed: no commit, log starts at 0
    assert c._new_offset(tp) is None
    _acked(c, tp, [0, 1, 2])
    assert c._new_offset(tp) == 3


def test_fetch_gaps_are_not_filled_on_dense_topics(consumer):
    c, tp, _ = consumer
    c._committed_offset[tp] = 13
    asyncio.run(c._add_gap(tp, 14, 16))
    assert not c._gap.get(tp)
    _acked(c, tp, [17, 18])
    assert c._new_offset(tp) is None


def test_other_topics_keep_fausts_rules(consumer):
    c, _, leader = consumer
    _acked(c, leader, [5, 6])
    assert c._new_offset(leader) == 7


def test_a_record_skipped_as_stale_is_not_counted_as_processed(consumer):
    from faust.types import Message

    c, tp, _ = consumer
    c.app.consumer_generation_id = 3
    msg = Message(tp.topic, tp.partition, 41, 0.0, 0, None, b"k", b"v", None, tp=tp,
                  generation_id=2)
    assert c.ack(msg) is False
    assert 41 not in c._acked_index[tp]


def test_a_commit_waits_for_sends_still_under_way():
    async def scenario():
        loop = asyncio.get_running_loop()
        ledger = SendLedger()
        slow = loop.create_future()
        ledger.track(slow)
        loop.call_later(0.05, slow.set_result, "metadata")
        await ledger.settle(timeout_s=5)
        assert slow.done() and len(ledger) == 0

    _run(scenario())


def test_a_send_that_never_finishes_refuses_the_commit():
    async def scenario():
        loop = asyncio.get_running_loop()
        ledger = SendLedger()
        ledger.track(loop.create_future())
        with pytest.raises(ProducerSendError, match="not acknowledged"):
            await ledger.settle(timeout_s=0.05)

    _run(scenario())


def test_table_changelog_writes_are_tracked(consumer):
    c, _, _ = consumer
    app = c.app
    before = len(app.send_ledger)
    app.producer.buffer.put(asyncio.Future(loop=asyncio.new_event_loop()))
    assert len(app.send_ledger) == before + 1


def test_a_record_without_a_value_is_a_dead_letter_not_a_crash():
    # A null record on an input topic would otherwise crash the worker on every restart.
    from datetime import UTC, datetime

    from gridflow.core.refdata import load_reference_data
    from processors import steps

    now = datetime(2026, 1, 5, tzinfo=UTC)
    out = steps.intake_step(None, load_reference_data(), now, "p.reports", 0, 7)  # type: ignore[arg-type]
    assert [s[0] for s in out.sends] == ["dead-letters"]
    assert b"no value" in out.sends[0][2]
    out, _ = steps.case_step(None, None, None, now, "p.case-commands", "k", 0, 8)  # type: ignore[arg-type]
    assert [s[0] for s in out.sends] == ["dead-letters"]


def test_acks_that_are_all_below_the_committed_offset_commit_nothing_and_raise_nothing(consumer):
    # a record read again after a rewind, acked once more after its offset was committed
    c, tp, _ = consumer
    c._committed_offset[tp] = 50
    _acked(c, tp, [47, 48])
    assert c._new_offset(tp) is None
    assert c._acked[tp] == [] and tp not in c._hole_since


# --- the stall watchdog's judgement (processors.delivery.StallWatch) ---------------------

TP0 = TP("t.reports", 0)


def _look(watch: StallWatch, at: float, **kw: object) -> bool:
    seen: dict[str, object] = {"start": 5, "position": 9, "acked": False, "busy": False}
    seen.update(kw)
    return watch.look(TP0, now=at, **seen)  # type: ignore[arg-type]


def test_a_partition_fetched_past_its_commit_with_nothing_processed_is_stalled_after_a_while() -> None:
    watch = StallWatch(after_s=6.0)
    assert not _look(watch, 100.0)
    assert not _look(watch, 105.9)
    assert _look(watch, 106.0)
    # its clock starts again: a rewind that did not help is tried again later, not at once
    assert not _look(watch, 107.0)
    assert _look(watch, 112.0)


def test_no_stall_while_anything_is_in_hand_processed_or_not_yet_fetched() -> None:
    for kw in ({"busy": True}, {"acked": True}, {"position": 5}, {"position": None},
               {"start": None}):
        watch = StallWatch(after_s=6.0)
        assert not _look(watch, 100.0, **kw)
        assert not _look(watch, 200.0, **kw), kw


def test_a_moving_commit_or_a_busy_moment_starts_the_count_again() -> None:
    watch = StallWatch(after_s=6.0)
    assert not _look(watch, 100.0)
    assert not _look(watch, 105.0, start=6)  # committed further: counted from here
    assert not _look(watch, 110.0, start=6)
    assert _look(watch, 111.0, start=6)
    watch = StallWatch(after_s=6.0)
    assert not _look(watch, 100.0)
    assert not _look(watch, 104.0, busy=True)
    assert not _look(watch, 108.0)
    assert _look(watch, 114.0)


def test_answered_within_gives_up_on_a_call_that_never_returns() -> None:
    async def run() -> tuple[tuple[bool, object], tuple[bool, object], bool]:
        never = asyncio.Event()
        forever = asyncio.ensure_future(never.wait())
        lost = await answered_within(forever, 0.05)
        answered = await answered_within(asyncio.sleep(0, result={"tp": [1]}), 1.0)
        await asyncio.sleep(0)
        return lost, answered, forever.cancelled()

    lost, answered, cancelled = asyncio.run(run())
    assert lost == (False, None)
    assert answered == (True, {"tp": [1]})
    assert cancelled  # the lost call is not left running


def test_a_table_write_waits_for_the_sends_made_before_it():
    # The case's events first, its state after: the state's changelog record is handed to the
    # producer only once the events are acknowledged, never in an earlier produce request.
    from processors.delivery import StateAfterOutput

    async def scenario():
        loop = asyncio.get_running_loop()
        put: list[str] = []
        gate = StateAfterOutput(put.append)
        events = [loop.create_future(), loop.create_future()]
        for fut in events:
            gate.output(fut)
        gate.state("case state")
        gate.state("clock")  # no send in between: waits with the one before, in order
        later = loop.create_future()
        gate.output(later)
        gate.state("next case state")
        await asyncio.sleep(0.01)
        assert put == [] and len(gate) == 3
        events[1].set_result("ok")
        await asyncio.sleep(0.01)
        assert put == []  # one of the two still unacknowledged
        later.set_result("ok")  # acknowledged out of order: the older writes still go first
        await asyncio.sleep(0.01)
        assert put == []
        events[0].set_result("ok")
        await asyncio.sleep(0.01)
        assert put == ["case state", "clock", "next case state"] and len(gate) == 0
        gate.state("with nothing outstanding")  # straight through
        assert put[-1] == "with nothing outstanding"

    _run(scenario())


def test_a_failed_send_fails_the_table_writes_after_it_and_refuses_the_commit():
    from processors.delivery import StateAfterOutput

    async def scenario():
        loop = asyncio.get_running_loop()
        put: list[object] = []
        ledger = SendLedger()
        ledger.gate = StateAfterOutput(put.append)
        event = loop.create_future()
        ledger.track(event)
        write = loop.create_future()
        ledger.track_state(write)
        event.set_exception(RuntimeError("broker gone"))
        with pytest.raises(ProducerSendError):
            await ledger.settle(timeout_s=5)
        await asyncio.sleep(0.01)
        assert put == [] and write.done()
        assert isinstance(write.exception(), ProducerSendError)
        assert "failed" in str(write.exception())

    _run(scenario())


def test_the_case_processor_sends_the_output_before_it_writes_the_state():
    # processors.app.decide: emit, then the clocks and the case state (read from the source,
    # so that a reordering there fails here and not only under kill -9).
    import inspect

    from processors import app as app_module

    src = inspect.getsource(app_module._install_pipeline)
    decide = src[src.index("async def decide"):src.index("@app.agent(source")]
    assert decide.index("await emit(out, follower is not None)\n        if follower") \
        < decide.index("cases[key] = state")
    assert decide.index("await emit(out, follower is not None)  # a refusal") \
        < decide.index("evicted[key] = kept")


def test_a_fetch_is_handed_to_the_agents_oldest_first_each_partition_in_its_own_order(consumer):
    # After a crash the case processor reads a partition's reports and commands again; taken
    # oldest first, a report made after a command is decided after it, as it was the first time.
    from types import SimpleNamespace

    from processors.delivery import OldestFirst

    c, _, _ = consumer
    assert isinstance(c.scheduler, OldestFirst)  # the app's consumer uses it

    def recs(topic, *stamps):
        return [SimpleNamespace(topic=topic, offset=n, timestamp=t) for n, t in enumerate(stamps)]

    reports, commands, ticks = TP("p.reports", 2), TP("p.case-commands", 2), TP("p.ticks", 2)
    fetched = {reports: recs("r", 100, 300, 301, 250), commands: recs("c", 200, 299, 400),
               ticks: recs("t", 50)}
    order = [(tp.topic, r.offset) for tp, r in OldestFirst().iterate(fetched)]
    assert order == [("p.ticks", 0), ("p.reports", 0), ("p.case-commands", 0),
                     ("p.case-commands", 1), ("p.reports", 1), ("p.reports", 2),
                     ("p.reports", 3),  # an older stamp later in its partition stays there
                     ("p.case-commands", 2)]
    for tp, batch in fetched.items():  # nothing lost, nothing twice, each partition in order
        assert [r.offset for t, r in OldestFirst().iterate(fetched) if t == tp] == \
            [r.offset for r in batch]
    single = recs("r", 5, 1)
    assert [r for _, r in OldestFirst().iterate({reports: single})] == single
    assert list(OldestFirst().iterate({})) == []


class _ChangelogWrite(asyncio.Future):
    """A faust FutureMessage's shape: a future with the topic it goes to."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        from types import SimpleNamespace
        self.message = SimpleNamespace(channel=SimpleNamespace(get_topic_name=lambda: topic))


def test_a_case_state_waits_for_its_clocks_which_go_at_once():
    # The deadline book's writes are outputs themselves (SendLedger.outputs_first): sent with
    # the events, not behind them, and the case's state written after them waits for both. A
    # state on the changelog without its clocks would drop the command as a repeat after a
    # crash and never file them; a clock ahead of its state is filed again under its key.
    from types import SimpleNamespace

    from processors.delivery import StateAfterOutput

    async def scenario():
        loop = asyncio.get_running_loop()
        put: list[object] = []
        ledger = SendLedger()
        ledger.gate = StateAfterOutput(put.append)
        book = SimpleNamespace(changelog_topic=SimpleNamespace(get_topic_name=lambda: "p-book"))
        ledger.outputs_first(book)
        event = loop.create_future()
        ledger.track(event)
        clock = _ChangelogWrite("p-book")
        ledger.track_state(clock)
        assert put == [clock]  # at once: not behind the event
        state = _ChangelogWrite("p-cases")
        ledger.track_state(state)
        await asyncio.sleep(0.01)
        assert put == [clock]
        event.set_result("ok")
        await asyncio.sleep(0.01)
        assert put == [clock]  # the clock is not acknowledged yet
        clock.set_result("ok")
        await asyncio.sleep(0.01)
        assert put == [clock, state]
        # a clock whose write fails fails the state behind it, and the commit is refused
        clock2 = _ChangelogWrite("p-book")
        ledger.track_state(clock2)
        state2 = _ChangelogWrite("p-cases")
        ledger.track_state(state2)
        clock2.set_exception(RuntimeError("broker gone"))
        await asyncio.sleep(0.01)
        assert put == [clock, state, clock2] and isinstance(state2.exception(),
                                                              ProducerSendError)
        with pytest.raises(ProducerSendError):
            await ledger.settle(timeout_s=5)

    _run(scenario())


def test_a_commit_sends_the_tables_unsent_changes_before_it_waits_and_commits(consumer,
                                                                              monkeypatch):
    # processors.tablestore keeps each changed key's last value until the commit: it must be
    # on its way before the ledger is waited for, and the offsets committed only after that.
    from faust.transport.drivers import aiokafka as faust_aiokafka

    from processors import delivery

    c, tp, _ = consumer
    order: list[object] = []
    monkeypatch.setattr(delivery, "send_unsent_changes",
                        lambda tables: order.append(("tables", list(tables))) or 0)

    async def settle(timeout_s: float = 0) -> None:
        order.append("settle")

    async def base_commit(self, offsets):
        order.append(("commit", dict(offsets)))
        return True

    monkeypatch.setattr(c.app.send_ledger, "settle", settle)
    monkeypatch.setattr(faust_aiokafka.Consumer, "_commit", base_commit)
    assert _run(c._commit({tp: 5}))
    assert order == [("tables", list(c.app.tables.values())), "settle", ("commit", {tp: 5})]


# --- records no agent reads are acknowledged by the conductor (GridflowConductor) ----------

class _Channel:
    """An agent's source as the conductor sees it: its topic names."""

    def __init__(self, *topics: str) -> None:
        self.topics = topics


def _record(app, offset, value, headers=()):
    from faust.types.tuples import ConsumerMessage as TransportMessage

    return TransportMessage("p.reports", 0, offset, 0.0, 0, list(headers), b"k", value, None,
                            generation_id=app.consumer_generation_id)


def _handler(app, monkeypatch, channels):
    from faust.transport.conductor import Conductor

    delivered: list[int] = []

    async def deliver(message):  # faust's own handler: events, queues, streams
        delivered.append(message.offset)

    monkeypatch.setattr(Conductor, "_build_handler", lambda self, tp, chans: deliver)
    conductor = app.topics
    conductor._acking_topics.add("p.reports")
    app.flow_control.resume()
    return conductor._build_handler(TP("p.reports", 0), channels), delivered


def test_a_record_every_agent_would_skip_is_acknowledged_without_being_handed_out(
        consumer, monkeypatch):
    c, tp, _ = consumer
    app = c.app
    app.reads_only(["p.reports"], lambda m: b"photo" in m.value)
    app.reads_only(["p.reports", "p.deadline-ticks"], lambda m: m.headers == [])
    archive, deadlines = _Channel("p.reports"), _Channel("p.reports", "p.deadline-ticks")
    handler, delivered = _handler(app, monkeypatch, {archive, deadlines})
    records = [_record(app, 0, b"plain", [("gf-clocks", b"1")]),
               _record(app, 1, b"a photo", [("gf-clocks", b"1")]),  # the archive reads it
               _record(app, 2, b"plain", []),  # the deadline agent reads it
               _record(app, 3, b"plain", [("gf-clocks", b"1")])]
    for record in records:
        _run(handler(record))
    assert delivered == [1, 2]  # to every agent, as before: each skips what it does not read
    assert c._acked[tp] == [0, 3]  # the others counted as processed, in the strict commit
    assert records[0].acked and not records[1].acked


def test_a_record_is_handed_out_when_an_agent_reads_everything_or_the_flow_is_held(
        consumer, monkeypatch):
    c, tp, _ = consumer
    app = c.app
    app.reads_only(["p.reports"], lambda m: False)
    filtered = _Channel("p.reports")
    everything = _Channel("p.reports", "p.case-commands")  # no filter
    handler, delivered = _handler(app, monkeypatch, {filtered, everything})
    _run(handler(_record(app, 0, b"x")))
    handler2, delivered2 = _handler(app, monkeypatch, {filtered})
    app.flow_control.suspend()  # a rebalance: faust's handler waits; nothing counted here
    _run(handler2(_record(app, 1, b"x")))
    assert delivered == [0] and delivered2 == [1]
    assert not c._acked[tp]


def test_what_the_photo_archive_and_the_deadline_agent_read():
    from types import SimpleNamespace

    from processors.app import _has_photo
    from processors.deadlines import FOLLOWED_HEADERS, _needs_following

    def rec(value, headers=None):
        return SimpleNamespace(value=value, headers=headers or [], topic="p.case-events")

    assert _has_photo(b'{"data":{"photos":[{"sha256":"ab"}]},"type":"CaseFiled"}')
    assert not _has_photo(b'{"data":{"photos":[]},"type":"CaseFiled"}')
    assert not _has_photo(None)
    dispatched = b'{"data":{},"type":"TaskDispatched"}'
    assert _needs_following(rec(dispatched))
    assert not _needs_following(rec(dispatched, FOLLOWED_HEADERS))  # filed in the case's step
    assert not _needs_following(rec(b'{"data":{},"type":"PhotoArchived"}'))  # moves no clock
    assert _needs_following(rec(b"not canonical"))  # read in full to be sure


# --- fetched records handed to the conductor without a task each (step_once, finish) -------

def test_a_coroutine_that_never_waits_finishes_in_its_first_step():
    from processors.delivery import step_once

    seen: list[int] = []

    async def deliver(n: int) -> None:
        seen.append(n)

    assert step_once(deliver(1)) == (True, None) and seen == [1]

    async def broken() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        step_once(broken())


def test_a_coroutine_that_waits_is_driven_to_its_end_as_a_task_would():
    from processors.delivery import finish, step_once

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        seen: list[Any] = []

        async def deliver() -> None:
            seen.append("start")
            seen.append(await first)
            await asyncio.sleep(0)  # a bare yield
            try:
                await second
            except KeyError as exc:
                seen.append(f"raised {exc}")
            seen.append("end")

        coro = deliver()
        done, awaited = step_once(coro)
        assert not done and awaited is first and seen == ["start"]
        task = asyncio.ensure_future(finish(coro, awaited))
        await asyncio.sleep(0)
        first.set_result("first")
        await asyncio.sleep(0.01)
        second.set_exception(KeyError("k"))
        await asyncio.wait_for(task, 1)
        return seen

    assert _run(scenario()) == ["start", "first", "raised 'k'", "end"]


def test_cancelling_the_rest_of_a_delivery_cancels_what_it_waits_for():
    from processors.delivery import finish, step_once

    async def scenario() -> tuple[list[str], bool, bool]:
        loop = asyncio.get_running_loop()
        blocked = loop.create_future()
        seen: list[str] = []

        async def deliver() -> None:
            try:
                await blocked
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
            seen.append("not reached")

        coro = deliver()
        _, awaited = step_once(coro)
        task = asyncio.ensure_future(finish(coro, awaited))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, blocked.cancelled(), task.cancelled()

    assert _run(scenario()) == (["cancelled"], True, True)


def _drain(consumer, monkeypatch, records, deliver):
    """Run GridflowConsumer._drain_messages over one fetch of `records`, delivering each with
    `deliver` (the conductor's part); returns the read offsets it set."""
    from types import SimpleNamespace

    c, tp, _ = consumer

    async def scenario() -> dict[Any, int]:
        from mode.utils.locks import Event

        c.loop = asyncio.get_running_loop()  # the service's loop: the one running here
        c.suspend_flow, c._stopped, c._crashed = Event(), Event(), Event()
        fetcher = SimpleNamespace(_stopped=asyncio.Event())

        async def getmany(timeout: float):
            for record in records:
                yield tp, record
            fetcher._stopped.set()

        monkeypatch.setattr(c, "getmany", getmany)
        monkeypatch.setattr(c, "callback", deliver)
        await asyncio.wait_for(c._drain_messages(fetcher), 5)
        return dict(c._read_offset)

    return _run(scenario()), tp


def test_the_drain_hands_records_on_in_order_including_one_that_waits(consumer, monkeypatch):
    seen: list[int] = []

    async def deliver(message) -> None:
        if message.offset == 1:
            await asyncio.sleep(0.01)  # a full queue, say
        seen.append(message.offset)

    app = consumer[0].app
    offsets, tp = _drain(consumer, monkeypatch, [_record(app, n, b"x") for n in range(4)],
                         deliver)
    assert seen == [0, 1, 2, 3] and offsets[tp] == 3


def test_a_delivery_stuck_when_the_flow_is_suspended_gives_way(consumer, monkeypatch):
    c = consumer[0]
    seen: list[Any] = []

    async def deliver(message) -> None:
        if message.offset == 1:
            asyncio.get_running_loop().call_later(0.02, lambda: c.suspend_flow.set())  # rebalance
            try:
                await asyncio.sleep(30)  # held behind the flow
            except asyncio.CancelledError:
                seen.append("given up")
                raise
        seen.append(message.offset)

    offsets, tp = _drain(consumer, monkeypatch, [_record(c.app, n, b"x") for n in range(3)],
                         deliver)
    # faust's behaviour: the drain moves on; the record is not processed (so not acked, and
    # read again from the committed offset after the rebalance)
    assert seen[:2] == [0, "given up"] and offsets[tp] == 2


def test_a_burst_of_unacknowledged_sends_is_not_scanned_again_at_each_send(monkeypatch):
    import processors.delivery as delivery
    from processors.delivery import StateAfterOutput

    looks = 0
    outstanding = delivery._outstanding

    def counting(fut):
        nonlocal looks
        looks += 1
        return outstanding(fut)

    monkeypatch.setattr(delivery, "_outstanding", counting)

    async def scenario() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        gate = StateAfterOutput(lambda write: None)
        burst = [loop.create_future() for _ in range(20_000)]
        for fut in burst:  # a commit's deadline book writes: none acknowledged yet
            gate.output(fut)
        kept_while_pending = len(gate._since)
        for fut in burst:
            fut.set_result(None)
        for _ in range(delivery.PRUNE_SENDS_AT * 8):  # later sends, acknowledged at once
            done = loop.create_future()
            done.set_result(None)
            gate.output(done)
        return kept_while_pending, len(gate._since)

    kept, later = _run(scenario())
    assert kept == 20_000  # nothing dropped that a later state write must wait for
    assert later < 2 * delivery.PRUNE_SENDS_AT  # the acknowledged ones are dropped again
    assert looks < 5 * (20_000 + delivery.PRUNE_SENDS_AT * 8)  # linear, not ~10^8 looks


# --- an ordered agent decides each partition's records in order (GridflowConsumer.in_order) --

def _message(c, tp, offset):
    from faust.types.tuples import ConsumerMessage as TransportMessage

    return TransportMessage(tp.topic, tp.partition, offset, 0.0, 0, [], b"k", b"v", None, tp=tp,
                            generation_id=c.app.consumer_generation_id)


@pytest.fixture
def ordered(consumer, monkeypatch):
    """The consumer with one ordered agent, its partition committed at 10 and the flow
    running; the rewinds it asks for are recorded instead of sent to a broker."""
    c, tp, leader = consumer
    guard = c.app.in_order("case_processor", [tp.topic, leader.topic])
    c._committed_offset[tp] = 10
    c.app.topics._acking_topics.add(tp.topic)
    c.app.flow_control.resume()
    rewinds: list[tuple[TP, int]] = []

    async def rewind(tp_: TP, offset: int) -> None:
        rewinds.append((tp_, offset))
        c._rewinding.discard(tp_)

    monkeypatch.setattr(c, "_rewind", rewind)
    return c, tp, leader, guard, rewinds


def _handed(c, guard, message):
    """An agent's turn with one record, as faust's stream runs it: the check, then the ack."""
    c._unacked_messages.add(message)
    ok = guard(message)
    c.ack(message)
    return ok


def test_records_in_order_are_decided_and_counted(ordered):
    c, tp, _, guard, rewinds = ordered
    for offset in (10, 11, 12):
        assert _handed(c, guard, _message(c, tp, offset))
    assert c._acked[tp] == [10, 11, 12] and not rewinds
    assert c._new_offset(tp) == 13


def test_a_record_ahead_of_the_next_is_not_decided_nor_counted_and_the_partition_rewound(
        ordered):
    async def scenario():
        c, tp, _, guard, rewinds = ordered
        assert _handed(c, guard, _message(c, tp, 10))
        later = [_message(c, tp, o) for o in (12, 13, 14)]  # 11 was lost on its way
        assert [_handed(c, guard, m) for m in later] == [False, False, False]
        await asyncio.sleep(0)
        assert rewinds == [(tp, 11)]  # once, not once per record ahead
        assert c._acked[tp] == [10]  # the refused ones are not processed...
        assert all(m.acked for m in later)  # ...but done with: nothing waits for them
        assert not any(m in c._unacked_messages for m in later)
        assert c._new_offset(tp) == 11
        c._committed_offset[tp] = 11  # committed
        # The rewind brings 11 and what follows: decided, in order, and counted.
        assert [_handed(c, guard, _message(c, tp, o)) for o in (11, 12, 13, 14)] == [True] * 4
        assert c._new_offset(tp) == 15

    _run(scenario())


def test_a_rewind_for_order_is_asked_again_only_when_its_records_do_not_come(
        ordered, monkeypatch):
    import processors.delivery as delivery

    async def scenario():
        c, tp, _, guard, rewinds = ordered
        now = [1000.0]
        monkeypatch.setattr(delivery.time, "monotonic", lambda: now[0])
        assert not _handed(c, guard, _message(c, tp, 12))
        assert not _handed(c, guard, _message(c, tp, 13))  # fetched before the rewind
        await asyncio.sleep(0)
        assert rewinds == [(tp, 10)]
        now[0] += delivery.ORDER_REWIND_AGAIN_S + 1  # the rewind's records never came
        assert not _handed(c, guard, _message(c, tp, 14))
        await asyncio.sleep(0)
        assert rewinds == [(tp, 10), (tp, 10)]
        assert _handed(c, guard, _message(c, tp, 10))
        assert not _handed(c, guard, _message(c, tp, 12))  # a new hole at 11: at once
        await asyncio.sleep(0)
        assert rewinds == [(tp, 10), (tp, 10), (tp, 11)]

    _run(scenario())


def test_a_record_read_again_is_decided_again(ordered):
    # A rewind of the commit's own (a hole, the stall watchdog) reads records again: a
    # decision made again from the same input is the same, and the order holds from there.
    c, tp, _, guard, rewinds = ordered
    assert all(_handed(c, guard, _message(c, tp, o)) for o in (10, 11, 12))
    assert all(_handed(c, guard, _message(c, tp, o)) for o in (10, 11, 12, 13))
    assert not rewinds


def test_records_the_conductor_acknowledged_unread_count_as_handed(ordered):
    async def scenario():
        c, tp, _, guard, rewinds = ordered
        assert _handed(c, guard, _message(c, tp, 10))
        for offset in (11, 12):
            c.passed_unread(_message(c, tp, offset))
        assert _handed(c, guard, _message(c, tp, 13))
        assert not _handed(c, guard, _message(c, tp, 15))  # 14 was neither handed nor passed
        assert not c._passed[tp]  # the passed offsets it used are forgotten
        await asyncio.sleep(0)
        assert rewinds == [(tp, 14)]

    _run(scenario())


def test_the_offsets_passed_unread_stay_few_when_the_agent_is_handed_nothing(ordered):
    # With the deadlines filed inline, the conductor skips nearly every case event: the
    # ordered agent is handed none, and what it will never look back at must not pile up.
    import processors.delivery as delivery

    c, tp, _, guard, rewinds = ordered
    for offset in range(10, 10 + 10 * delivery.PASSED_KEPT):
        c.passed_unread(_message(c, tp, offset))
        if offset % 1000 == 0:
            c._committed_offset[tp] = offset  # the skipped records' acks are committed
    assert len(c._passed[tp]) <= 2 * delivery.PASSED_KEPT
    # and what is kept still carries the agent over the gap to its next record
    c._committed_offset[tp] = 10 + 10 * delivery.PASSED_KEPT - 500
    assert _handed(c, guard, _message(c, tp, 10 + 10 * delivery.PASSED_KEPT))


def test_the_offsets_passed_unread_stay_few_after_the_agent_was_handed_one(ordered):
    # The deadline agent is handed a case event now and then, and nothing for long stretches.
    import processors.delivery as delivery

    c, tp, _, guard, rewinds = ordered
    assert _handed(c, guard, _message(c, tp, 10))
    last = 11 + 10 * delivery.PASSED_KEPT
    for offset in range(11, last):
        c.passed_unread(_message(c, tp, offset))
        if offset % 1000 == 0:
            c._committed_offset[tp] = offset  # the skipped records' acks are committed
    assert len(c._passed[tp]) <= 2 * delivery.PASSED_KEPT
    assert _handed(c, guard, _message(c, tp, last))
    assert not rewinds


def test_after_a_rebalance_a_partition_is_counted_from_its_committed_offset(ordered):
    # The case from the scale-out test: the partition's new owner was handed the records after
    # the two at its committed offset, decided them, and the photo's first command after its
    # second one.
    async def scenario():
        c, tp, _, guard, rewinds = ordered
        assert all(_handed(c, guard, _message(c, tp, o)) for o in (10, 11, 12))
        await c.on_partitions_revoked({tp})
        c._committed_offset[tp] = 15  # another worker's commit while it had the partition
        assert _handed(c, guard, _message(c, tp, 15))
        await c.on_partitions_revoked({tp})
        c._committed_offset[tp] = 20
        assert not _handed(c, guard, _message(c, tp, 22))
        await asyncio.sleep(0)
        assert rewinds == [(tp, 20)]

    _run(scenario())


def test_an_ordered_agent_reads_other_topics_as_they_come(ordered):
    c, _, leader, guard, rewinds = ordered  # the leader topic is not dense: gaps are real
    assert guard(_message(c, leader, 3)) and guard(_message(c, leader, 9))
    assert not rewinds


def test_the_case_processor_and_the_deadline_agent_read_in_order():
    import inspect

    from processors import app as app_module
    from processors import deadlines

    source = inspect.getsource(app_module._install_pipeline)
    assert "if not case_in_order(m):" in source and "if not filing_in_order(m):" in source
    assert "if not in_order(m):" in inspect.getsource(deadlines)


# --- the producer's per-record shortcuts (RememberingPartitioner, aiokafka's loop lookup) ----

def test_the_remembering_partitioner_answers_as_kafkas_default_does():
    import random

    from aiokafka.partitioner import DefaultPartitioner

    from gridflow.core.partitioning import partition_of
    from processors.delivery import RememberingPartitioner

    ours, kafkas = RememberingPartitioner(size=64), DefaultPartitioner()
    rng = random.Random(7)
    keys = [f"AJ20261116-{rng.getrandbits(40):010X}".encode() for _ in range(300)]
    for count in (1, 3, 4, 12):
        partitions = list(range(count))
        for key in keys + keys:  # asked again: remembered (and forgotten past 64 keys)
            assert ours(key, partitions, partitions) == kafkas(key, partitions, partitions)
            if count == 4:
                assert ours(key, partitions, partitions) == partition_of(key.decode())
    # the index into the sorted partition list, as aiokafka's, not the partition number
    assert ours(keys[0], [10, 11, 12, 13], []) == 10 + partition_of(keys[0].decode())
    assert len(ours._known) <= 64
    for _ in range(20):  # no key: a random available partition
        assert ours(None, [0, 1, 2, 3], [2]) == 2


def test_aiokafka_s_loop_lookup_is_the_running_loop_and_refuses_outside_one():
    from aiokafka import util

    import processors.delivery  # noqa: F401 - installs it

    async def inside():
        return util.get_running_loop() is asyncio.get_running_loop(), util.create_future()

    same, fut = asyncio.run(inside())
    assert same and isinstance(fut, asyncio.Future)
    with pytest.raises(RuntimeError):
        util.get_running_loop()


# --- catching up after a seek: the first fetch waits for the first records of the agent's other
# topics of the same partition number (GridflowConsumer.gather_catch_up) -------------------------

REPORTS, COMMANDS, TICKS = "p.reports", "p.case-commands", "p.deadline-ticks"


class _Record:
    def __init__(self, offset, timestamp):
        self.offset, self.timestamp = offset, timestamp

    def __repr__(self):
        return f"<{self.offset}@{self.timestamp}>"


@pytest.fixture
def catching_up(monkeypatch):
    """The case processor reading the reports, the commands and the ticks of partition 0,
    each committed at 10; `seek(ends)` notes which have records to read again."""
    from faust.types import TP

    from processors.delivery import GridflowApp, GridflowConsumer

    app = GridflowApp("catch-up-test", broker="kafka://127.0.0.1:1", store="memory://",
                      web_enabled=False, dense_topics=[REPORTS, COMMANDS, TICKS])
    c = app.consumer
    assert isinstance(c, GridflowConsumer)
    app.in_order("case_processor", [REPORTS, COMMANDS, TICKS])
    tps = {name: TP(name, 0) for name in (REPORTS, COMMANDS, TICKS)}
    for tp in tps.values():
        c._base[tp] = 10

    def seek(ends):
        async def highwaters(*partitions):
            return {tp: ends[tp.topic] for tp in partitions}

        monkeypatch.setattr(c, "highwaters", highwaters)
        _run(c._note_catch_up({tp: 10 for tp in tps.values()}))

    return c, tps, seek


def _fetches(*batches):
    """A fetch function answering with `batches` in turn, then nothing; and its calls."""
    calls = []

    async def fetch(timeout):
        calls.append(timeout)
        return batches[len(calls) - 1] if len(calls) <= len(batches) else {}

    return fetch, calls


def test_the_first_fetch_after_a_crash_waits_for_the_older_command_and_hands_it_first(
        catching_up):
    # The worker decided a sign (made at t=41) and was killed before its state was written;
    # its successor's first fetch brought the reports only, with one made at t=47.
    from processors.delivery import OldestFirst

    c, tps, seek = catching_up
    seek({REPORTS: 12, COMMANDS: 11, TICKS: 10})  # no tick to read again
    report, command = tps[REPORTS], tps[COMMANDS]
    first = {report: [_Record(10, 47.0), _Record(11, 48.0)]}
    fetch, calls = _fetches({}, {command: [_Record(10, 41.0)]})
    merged = _run(c.gather_catch_up(first, fetch))
    assert len(calls) == 2  # fetched until the commands came
    order = [(tp.topic, r.offset) for tp, r in OldestFirst().iterate(merged)]
    assert order == [(COMMANDS, 10), (REPORTS, 10), (REPORTS, 11)]
    assert not c._catch_up  # both came: the next fetches go as they are
    later = [_Record(12, 49.0)]
    assert _run(c.gather_catch_up({report: later}, fetch)) == {report: later}
    assert len(calls) == 2


def test_a_fetch_waits_for_nothing_when_the_other_topics_have_nothing_to_read_again(
        catching_up):
    c, tps, seek = catching_up
    seek({REPORTS: 13, COMMANDS: 10, TICKS: 10})  # the commands and ticks were all committed
    fetch, calls = _fetches()
    first = {tps[REPORTS]: [_Record(10, 50.0)]}
    assert _run(c.gather_catch_up(first, fetch)) == first
    assert calls == [] and not c._catch_up


def test_a_fetch_waits_for_each_other_topic_once_and_at_most_catch_up_wait_s(
        catching_up, monkeypatch):
    import processors.delivery as delivery

    c, tps, seek = catching_up
    seek({REPORTS: 12, COMMANDS: 11, TICKS: 11})
    now = [100.0]
    monkeypatch.setattr(delivery.time, "monotonic", lambda: now[0])

    async def fetch(timeout):  # the ticks come; the commands never do
        now[0] += timeout
        return {tps[TICKS]: [_Record(10, 45.0)]} if now[0] < 100.5 else {}

    merged = _run(c.gather_catch_up({tps[REPORTS]: [_Record(10, 47.0)]}, fetch))
    assert set(merged) == {tps[REPORTS], tps[TICKS]}
    assert now[0] >= 100.0 + delivery.CATCH_UP_WAIT_S  # waited its limit for the commands...
    assert not c._catch_up  # ...once: the next fetch goes on at once

    async def never(timeout):
        raise AssertionError("no wait")

    later = [_Record(11, 48.0)]
    assert _run(c.gather_catch_up({tps[REPORTS]: later}, never)) == {tps[REPORTS]: later}


def test_a_partition_not_being_fetched_is_not_waited_for(catching_up):
    c, tps, seek = catching_up
    seek({REPORTS: 12, COMMANDS: 11, TICKS: 10})

    async def never(timeout):
        raise AssertionError("no wait")

    first = {tps[REPORTS]: [_Record(10, 47.0)]}
    assert _run(c.gather_catch_up(first, never, active={tps[REPORTS], tps[TICKS]})) == first


def test_a_seek_or_a_revoke_forgets_the_catch_up(catching_up):
    c, tps, seek = catching_up
    seek({REPORTS: 12, COMMANDS: 11, TICKS: 10})
    assert set(c._catch_up) == {tps[REPORTS], tps[COMMANDS]}
    for tp in tps.values():
        c._forget_order(tp)
    assert not c._catch_up
