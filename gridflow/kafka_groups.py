"""A Kafka consumer group's committed offsets and whether it exists, read with kafka-python's
admin client, whose API changed between 2.x and 3.x: both are handled here, in one place
(`gridflow status`, the metrics collector and `audit verify` read groups through it)."""

from __future__ import annotations

from typing import Any

Offsets = dict[tuple[str, int], int]  # (topic, partition) -> committed (next) offset


def committed_offsets(admin: Any, group: str) -> Offsets:
    """What `group` has committed, per partition ({} when nothing)."""
    if hasattr(admin, "list_group_offsets"):  # kafka-python 3
        found = admin.list_group_offsets({group: None}).get(group, {})
    else:  # kafka-python 2
        found = admin.list_consumer_group_offsets(group)
    return {(tp.topic, tp.partition): int(meta.offset) for tp, meta in found.items()
            if meta is not None and meta.offset is not None and meta.offset >= 0}


def group_exists(admin: Any, group: str) -> bool:
    """Whether Kafka knows `group` (in any state but Dead)."""
    if hasattr(admin, "describe_groups"):  # kafka-python 3: {group: {"group_state": ...}}
        state = admin.describe_groups([group]).get(group, {}).get("group_state", "Dead")
    else:  # kafka-python 2: [GroupInformation(error_code, group, state, ...)]
        described = admin.describe_consumer_groups([group])
        state = described[0].state if described else "Dead"
    return str(state) not in ("Dead", "")
