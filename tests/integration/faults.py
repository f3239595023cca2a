"""A loopback TCP proxy that can be switched off and on: a real server going down and back,
as a client sees it (connections refused, open connections cut), without stopping the server
the rest of the test session shares. It lives in chaos.proxy, beside KafkaProxy, for the fault
scenarios (`gridflow chaos`) and the tests alike."""

from __future__ import annotations

from chaos.proxy import FlakyProxy, KafkaProxy

__all__ = ["FlakyProxy", "KafkaProxy"]
