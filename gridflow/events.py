"""The message contract under its older name (`from gridflow import events as ev`): every name
of gridflow.contract, the one home of the typed messages, their encoding and their hash."""

from gridflow.contract import *  # noqa: F403
