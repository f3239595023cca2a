"""MinIO unreachable during uploads and archiving, then PostgreSQL under the sink and the API's
receipts: the API says 503 with Retry-After while it cannot keep its promise, nothing
acknowledged is lost, every photo is archived, everything catches up. The short form of
`gridflow chaos --scenario storage-outage` (15 s outages instead of 60)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos import storage_outage

pytestmark = pytest.mark.integration


@pytest.mark.timeout(400)
def test_store_and_database_outages_lose_nothing(stack_settings, tmp_path: Path) -> None:
    result = storage_outage.run(stack_settings, tmp_path, outage_s=15.0, rate=3.0,
                                warmup_s=4.0, after_s=2.0, seed=9, echo=print)
    print("\n".join(result.lines()))
    assert result.acknowledged > 40
    assert result.lost == []
    assert result.counts.duplicate_rows == 0
    assert result.counts.archived == result.counts.photos == len(result.counts.reports)
    assert result.problems == []  # every refusal a 503 with Retry-After, all acknowledged
    assert sum("× 503" in line for line in result.api) == 2, "both outages felt by the API"
    assert result.dead_letters == 0
    assert all(seconds == seconds for _, seconds in result.recovery)  # caught up (not NaN)
    assert result.audit_clean, "\n".join(result.audit_lines)
