"""A consumer group's committed offsets through either kafka-python admin API (2.x and 3.x)."""

from __future__ import annotations

from types import SimpleNamespace as NS

from kafka import TopicPartition

from gridflow.kafka_groups import committed_offsets, group_exists

FOUND = {TopicPartition("p.reports", 0): NS(offset=12), TopicPartition("p.reports", 1): NS(offset=-1),
         TopicPartition("p.case-events", 3): None}


class Admin2:
    def list_consumer_group_offsets(self, group: str):
        return FOUND if group == "g" else {}

    def describe_consumer_groups(self, groups: list[str]):
        return [NS(state="Stable" if groups[0] == "g" else "Dead")]


class Admin3:
    def list_group_offsets(self, request: dict):
        return {g: (FOUND if g == "g" else {}) for g in request}

    def describe_groups(self, groups: list[str]):
        return {g: {"group_state": "Empty"} for g in groups if g == "g"}


def test_both_admin_apis_give_the_committed_offsets_and_leave_out_none_and_negative():
    for admin in (Admin2(), Admin3()):
        assert committed_offsets(admin, "g") == {("p.reports", 0): 12}
        assert committed_offsets(admin, "other") == {}


def test_a_group_exists_unless_kafka_calls_it_dead_or_does_not_know_it():
    for admin in (Admin2(), Admin3()):
        assert group_exists(admin, "g") and not group_exists(admin, "nobody")
