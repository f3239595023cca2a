"""The configured working calendar (GRIDFLOW_CALENDAR_DIR): a year added as a file is picked up
by a worker restart, and `gridflow status`, the worker's log and the supervisors' board warn
in Chinese 60 days before its last day, as of their own clock's date (a simulated one here:
never today's real date)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from bootstrap import bootstrap
from dashboard.app import create_dashboard
from gridflow.calendars import calendar_notices
from gridflow.clock import scaled_spec
from gridflow.core.calendar import REFDATA_DIR
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings, load_settings, settings_env
from infra.cli import status
from processors.worker import runtime_for_role
from sinks.models import make_engine

IN_WINDOW = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # 45 days before 2026-12-31
OUTSIDE = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
WARNING = "工作日历仅配置到 2026-12-31"
# Test data only: NOT the State Council's notice for 2027, which is not known here.
FICTIONAL_2027 = {
    "timezone": "Asia/Shanghai",
    "working_hours": [["08:30", "12:00"], ["14:00", "17:30"]],
    "weekend": [6, 7],
    "unknown_years": "error",
    "years": {"2027": {"holidays": [{"name": "元旦", "off": ["2027-01-01"]}]}},
}


@pytest.fixture
def cal_dir(tmp_path: Path) -> Path:
    """A deployment's calendar directory, starting as a copy of the bundled one."""
    folder = tmp_path / "calendar"
    folder.mkdir()
    for path in REFDATA_DIR.glob("calendar_*.json"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def add_2027(folder: Path) -> None:
    (folder / "calendar_2027.json").write_text(json.dumps(FICTIONAL_2027), encoding="utf-8")


def frozen(at: datetime) -> str:
    return scaled_spec(at, 0)


def test_the_directory_is_a_setting_passed_on_to_child_processes(monkeypatch, cal_dir) -> None:
    monkeypatch.setenv("GRIDFLOW_CALENDAR_DIR", str(cal_dir))
    settings = load_settings()
    assert settings.calendar_dir == cal_dir
    assert settings_env(settings)["GRIDFLOW_CALENDAR_DIR"] == str(cal_dir)
    monkeypatch.delenv("GRIDFLOW_CALENDAR_DIR")
    assert load_settings().calendar_dir is None  # the bundled calendar


def test_a_worker_restart_picks_up_an_added_year_and_warns_by_its_clock(cal_dir, caplog) -> None:
    settings = Settings(calendar_dir=cal_dir, clock=frozen(IN_WINDOW), topic_prefix="cal")
    with caplog.at_level(logging.WARNING, logger="gridflow.worker"):
        before = runtime_for_role(bootstrap(settings), "pipeline")
    assert before.planner.calendar.years == frozenset({2026})
    assert any(WARNING in r.getMessage() and str(cal_dir) in r.getMessage()
               for r in caplog.records)
    new_year = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
    assert before.planner.calendar.is_working_day(new_year)  # unknown year: plain weekday

    add_2027(cal_dir)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gridflow.worker"):
        after = runtime_for_role(bootstrap(settings), "pipeline")  # the restart
    assert after.planner.calendar.years == frozenset({2026, 2027})
    assert not after.planner.calendar.is_working_day(new_year)
    assert not any("工作日历" in r.getMessage() for r in caplog.records)


def test_a_worker_far_from_the_end_does_not_warn(cal_dir, caplog) -> None:
    settings = Settings(calendar_dir=cal_dir, clock=frozen(OUTSIDE), topic_prefix="cal")
    with caplog.at_level(logging.WARNING, logger="gridflow.worker"):
        runtime_for_role(bootstrap(settings), "pipeline")
    assert not any("工作日历" in r.getMessage() for r in caplog.records)


def run_status(tmp_path: Path, cal_dir: Path, at: datetime, *args: str) -> str:
    env = {"GRIDFLOW_STATE_DIR": str(tmp_path / "state"), "GRIDFLOW_CACHE_DIR": str(tmp_path / "c"),
           "GRIDFLOW_CALENDAR_DIR": str(cal_dir), "GRIDFLOW_CLOCK": frozen(at)}
    result = CliRunner().invoke(status, ["--only", "minio", *args], env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_status_warns_within_60_days_of_the_end(tmp_path, cal_dir) -> None:
    text = run_status(tmp_path, cal_dir, IN_WINDOW)
    assert "注意：" + WARNING in text and "calendar_2027.json" in text and str(cal_dir) in text
    notices = json.loads(run_status(tmp_path, cal_dir, IN_WINDOW, "--json"))["notices"]
    assert len(notices) == 1 and notices[0].startswith(WARNING)
    assert json.loads(run_status(tmp_path, cal_dir, OUTSIDE, "--json"))["notices"] == []
    assert WARNING not in run_status(tmp_path, cal_dir, OUTSIDE)
    add_2027(cal_dir)  # no restart of anything: the next status reads the directory
    assert json.loads(run_status(tmp_path, cal_dir, IN_WINDOW, "--json"))["notices"] == []


def test_status_reports_a_broken_calendar_file_and_still_exits_0(tmp_path, cal_dir) -> None:
    (cal_dir / "calendar_2027.json").write_text(json.dumps(
        {**FICTIONAL_2027, "years": {"2027": {"holidays": [
            {"name": "元旦", "off": ["2027-01-01"], "makeup_workdays": ["2027-01-04"]}]}}}),
        encoding="utf-8")  # a Monday as make-up working day
    notices = json.loads(run_status(tmp_path, cal_dir, OUTSIDE, "--json"))["notices"]
    assert len(notices) == 1 and "工作日历无法加载" in notices[0]
    assert "calendar_2027.json" in notices[0] and "2027-01-04" in notices[0]


def test_notices_take_the_callers_date_in_the_calendars_zone(cal_dir) -> None:
    settings = Settings(calendar_dir=cal_dir)
    # 2026-11-01 00:30 in Beijing is still 10-31 in UTC: 60 days before the end, not 61.
    assert calendar_notices(settings, datetime(2026, 10, 31, 16, 30, tzinfo=UTC))
    assert calendar_notices(settings, datetime(2026, 10, 31, 15, 30, tzinfo=UTC)) == []


@pytest.fixture
def board(tmp_path: Path, cal_dir: Path):  # type: ignore[no-untyped-def]
    now = {"at": IN_WINDOW}
    settings = Settings(state_dir=tmp_path, calendar_dir=cal_dir)
    engine = make_engine(f"sqlite:///{tmp_path / 'board.db'}")
    app = create_dashboard(settings, engine, load_reference_data(), lambda: now["at"])
    from accounts.sample import SampleSessions

    supervisor = SampleSessions(app.state.accounts, "test").bearer("sv0001")  # the board is theirs
    yield TestClient(app, headers=supervisor), now
    engine.dispose()


def test_the_board_warns_in_chinese_by_its_clock_and_clears_once_the_year_is_added(
        board, cal_dir) -> None:
    client, now = board
    page = client.get("/").text
    assert WARNING in page and "请系统管理员" in page and "2027年" in page
    # the server's directory and files are the operators' (gridflow status), not the page's
    for internal in (str(cal_dir), "calendar_2027.json", "GRIDFLOW_CALENDAR_DIR", "refdata"):
        assert internal not in page
    assert client.get("/api/board").json()["notices"][0].startswith(WARNING)
    now["at"] = OUTSIDE
    assert WARNING not in client.get("/").text
    assert client.get("/api/board").json()["notices"] == []
    now["at"] = IN_WINDOW
    add_2027(cal_dir)  # picked up without restarting the board
    assert WARNING not in client.get("/").text



def test_a_broken_calendar_is_named_to_operators_and_not_shown_on_a_page(cal_dir) -> None:
    (cal_dir / "calendar_2027.json").write_text("{not json", encoding="utf-8")
    settings = Settings(calendar_dir=cal_dir)
    (for_status,) = calendar_notices(settings, OUTSIDE)
    assert "工作日历无法加载" in for_status and "calendar_2027.json" in for_status
    (for_page,) = calendar_notices(settings, OUTSIDE, staff=True)
    assert "工作日历无法加载" in for_page and "系统管理员" in for_page
    assert "calendar_2027.json" not in for_page and str(cal_dir) not in for_page


def test_the_pages_notice_says_what_the_operators_one_says_without_the_server(cal_dir) -> None:
    settings = Settings(calendar_dir=cal_dir)
    (ops,) = calendar_notices(settings, IN_WINDOW)
    (staff,) = calendar_notices(settings, IN_WINDOW, staff=True)
    assert ops.startswith(WARNING) and staff.startswith(WARNING)
    assert "还剩 45 天" in ops and "还剩 45 天" in staff
    assert "2027-01-01 起的期限按周一至周五计算" in ops and "2027-01-01 起的期限按周一至周五计算" in staff
    assert str(cal_dir) in ops and str(cal_dir) not in staff
    assert calendar_notices(settings, OUTSIDE, staff=True) == []
