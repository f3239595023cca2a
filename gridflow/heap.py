"""What a long-running gridflow process does with its heap once it has started.

A server builds most of its heap at start-up (modules, the web app, table metadata, the
reference data) and keeps it for its life. Python's collector walks every tracked object
again at each full collection, so that heap cost the ingest API about a twentieth of its CPU
(docs/PERFORMANCE.md). Frozen (gc.freeze), it is left out of every collection; what the
process allocates afterwards is collected as before.
"""

from __future__ import annotations

import gc


def settle() -> int:
    """Collect what start-up left as garbage, then freeze the rest; returns how many objects
    are frozen. Call once, when the process is ready to serve."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
