"""What every route needs, wired once by the composition root (producers.app) and shared.

Routes reach it through `ctx(request)`; nothing in a route builds a client or reads the
environment, so tests and the demo hand in their own parts (clock, publisher, store).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine

from accounts.store import AccountStore
from gridflow import topics
from gridflow.clock import Clock
from gridflow.core.refdata import ReferenceData
from gridflow.settings import Settings
from producers.publisher import Publisher
from producers.store import ObjectStore
from producers.uploads import Inspector, PhotoLimits


@dataclass(frozen=True)
class Context:
    settings: Settings
    ref: ReferenceData
    accounts: AccountStore  # who is calling (accounts.access reads it from app.state)
    publisher: Publisher
    store: ObjectStore
    engine: Engine
    clock: Clock
    inspect: Inspector
    photo_limits: PhotoLimits
    receipt_wait_s: float = 3.0  # how long a concurrent retry waits for the first to finish

    def topic(self, spec: topics.TopicSpec) -> str:
        return spec.name(self.settings.topic_prefix)


def ctx(request: Request) -> Context:
    return request.app.state.ctx
