"""Where a keyed record lands: Kafka's default partitioner, as a pure function.

The case-keyed topics share one partition count (`CASE_PARTITIONS`). The API keys a report by
its township (intake.report_key) and gives its case an id that lands on the same partition
(intake.case_id_for with a township), so the worker takes a report from upload to its case's
first events on one partition, in one step (issue 16). These functions let the pure core and
the producers compute that partition without a Kafka client.
"""

from __future__ import annotations

from functools import lru_cache

# Partition count of every case-keyed topic (gridflow.topics). Topics read together must agree.
CASE_PARTITIONS = 4

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as the unsigned 32-bit
    value kafka-python's returns (the Java client's int, read unsigned)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[whole + 2] << 16
    if rest >= 2:
        h ^= data[whole + 1] << 8
    if rest >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


@lru_cache(maxsize=16384)
def partition_of(key: str, partitions: int = CASE_PARTITIONS) -> int:
    """The partition Kafka's default partitioner puts a record with this key on. Remembered
    for the last keys asked: the worker asks for a case's partition several times a report
    (intake, its commands), and murmur2 in Python is ~10 µs for a case id."""
    return (murmur2(key.encode("utf-8")) & 0x7FFFFFFF) % partitions
