"""The message contract: every event, command and intake message as a typed class
(`payloads`), the envelope they travel in, its one canonical encoding and its one hash
(`envelope`). gridflow.events is the same contract under its older name."""

from gridflow.contract.envelope import *  # noqa: F403
from gridflow.contract.payloads import *  # noqa: F403
