"""The worker's roles: which agents and which consumer group each runs."""

from __future__ import annotations

import click
import pytest

from gridflow.settings import load_settings
from processors.app import build_app
from processors.worker import runtime_for_role


def agents_and_group(role: str) -> tuple[set[str], str]:
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(settings, role))
    names = {agent.name.rsplit(".", 1)[-1] for agent in app.agents.values()}
    return names, app.conf.id


def test_all_runs_every_agent_in_the_pipeline_group():
    names, group = agents_and_group("all")
    assert {"intake", "filing", "case_processor", "photo_archive", "deadlines"} <= names
    assert group == "roles-processor"


def test_pipeline_runs_everything_but_the_archive_in_the_same_group():
    names, group = agents_and_group("pipeline")
    assert {"intake", "filing", "case_processor", "deadlines"} <= names
    assert "photo_archive" not in names
    assert group == "roles-processor"  # so a worker can switch between all and pipeline


def test_archive_runs_the_archive_alone_in_a_group_of_its_own():
    names, group = agents_and_group("archive")
    assert names == {"photo_archive"}
    assert group == "roles-archive"


def test_an_unknown_role_is_refused():
    with pytest.raises(click.BadParameter, match="role must be one of"):
        runtime_for_role(load_settings(), "everything")


def test_group_membership_settings_reach_the_consumer(monkeypatch):
    monkeypatch.setenv("GRIDFLOW_WORKER_INSTANCE_ID", "host1-pipeline")
    monkeypatch.setenv("GRIDFLOW_WORKER_SESSION_TIMEOUT_S", "9")
    settings = load_settings().with_(topic_prefix="roles")
    app = build_app(runtime_for_role(settings, "pipeline"))
    assert app.conf.consumer_group_instance_id == "host1-pipeline"
    assert app.conf.broker_session_timeout == 9.0
    assert app.conf.broker_heartbeat_interval == 3.0
    default = build_app(runtime_for_role(load_settings().with_(
        topic_prefix="roles", worker_instance_id=""), "pipeline"))
    assert default.conf.consumer_group_instance_id is None  # dynamic membership
