"""gridflow.heap.settle: start-up's heap is frozen, what comes later is still collected; the
API freezes its heap only as a server's app (never in a process that makes many apps)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from gridflow import heap


def test_settle_freezes_the_start_up_heap_and_later_garbage_is_still_collected() -> None:
    # in a process of its own: freezing is for the whole process
    script = textwrap.dedent("""
        import gc, weakref
        from gridflow import heap

        class Node:
            pass

        kept = [Node() for _ in range(1000)]
        frozen = heap.settle()
        assert frozen >= 1000, frozen
        assert gc.get_count()[0] < 50  # collected just before freezing
        later = Node()
        later.me = later  # a cycle made after start-up
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None, "garbage made after settle() is collected"
        assert len(kept) == 1000
        print("ok", frozen)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")


@pytest.mark.parametrize("server", [True, False])
def test_the_api_settles_its_heap_only_as_a_server(monkeypatch, server: bool) -> None:
    from tests.unit.test_api_http import Api

    calls: list[int] = []
    monkeypatch.setattr(heap, "settle", lambda: calls.append(1) or 0)
    api = Api(server=server)
    with api.client:  # start-up, one request, shut-down
        assert api.client.get("/api/v1/health").status_code == 200
    assert calls == ([1] if server else [])
