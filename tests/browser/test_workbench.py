"""部门工作台 and 督办台 in a real browser: Debian's Chromium driven by Playwright against the real
API, worker and SQL sink (child processes, as `gridflow api`, `gridflow worker` and
`gridflow sink` run) on the real stack, with the sample county's departments and supervisors.

What each person would check: the task in their inbox and nobody else's; each form saying what
happened (done, or why not); the deadline moved by an approved extension; each department of a
whistle-up seeing its own task; the XLSX holding the board's numbers. Screenshots of each page
go into docs/screenshots/ with GRIDFLOW_SCREENSHOTS=1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SCREENSHOTS
from openpyxl import load_workbook

from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo import images
from gridflow.core import geo
from gridflow.core.refdata import load_reference_data
from infra import services
from tests.support.tenant import tenant

REF = load_reference_data()
VILLAGE = "421099101201.cwh"  # 石门村村委会: E0102 in 石门村一组网格 goes here
CENTRE = "421099101.zongzhi"  # 青石镇综治中心
DESKTOP = {"width": 1280, "height": 860}


# --- the county behind the browser: real API, worker and sink -----------------------------------


@dataclass
class County:
    url: str
    settings: Any
    sessions: SampleSessions
    procs: list[services.Service]
    browser: Any
    keep: bool
    script_errors: list[str] = field(default_factory=list)

    def check(self) -> None:
        for p in self.procs:
            p.check()

    def wait(self, what: str, probe: Callable[[], Any], timeout_s: float = 60) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            self.check()
            last = probe()
            if last:
                return last
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last: {last!r}")

    def person(self, login: str) -> Any:
        """A desktop browser signed in as the person (their session cookie)."""
        context = self.browser.new_context(viewport=DESKTOP, locale="zh-CN",
                                           timezone_id="Asia/Shanghai")
        context.set_default_timeout(30_000)
        context.add_cookies([{"name": "gridflow_session", "value": self.sessions.token(login),
                              "url": self.url}])
        page = context.new_page()
        page.on("pageerror", lambda exc: self.script_errors.append(f"{page.url}: {exc}"))
        return page

    def bearer(self, login: str) -> dict[str, str]:
        return self.sessions.bearer(login)

    def report(self, worker_id: str = "GW0001", category: str = "E0102",
               description: str = "村口垃圾堆积, 影响通行", offset: float = 0.0) -> str:
        """A grid worker's photo report through the API, filed by the pipeline: its case id."""
        worker = REF.workers[worker_id]
        lat, lon = geo.representative_point(REF.grids[worker.grid_code])
        lat += offset
        now = datetime.now(UTC)
        report = {"report_id": f"wbb-{uuid.uuid4().hex[:16]}", "category_code": category,
                  "description": description, "lat": lat, "lon": lon,
                  "captured_at": (now - timedelta(minutes=2)).isoformat()}
        taken = now.replace(tzinfo=None) + timedelta(hours=8)
        r = httpx.post(f"{self.url}/api/v1/reports", headers=self.bearer(worker_id.lower()),
                       timeout=60, files=[
                           ("report", (None, json.dumps(report, ensure_ascii=False).encode(),
                                       "application/json")),
                           ("photos", ("IMG_1.jpg", images.make_jpeg(
                               640, 480, seed=len(description), gps=(lat, lon), taken_at=taken),
                               "image/jpeg"))])
        assert r.status_code == 202, r.text

        def filed() -> str | None:
            s = httpx.get(f"{self.url}/api/v1/reports/{report['report_id']}",
                          headers=self.bearer(worker_id.lower()), timeout=30).json()
            return s["case_id"] if s.get("status") == "filed" and s.get("tasks") else None

        return str(self.wait(f"report {report['report_id']} filed", filed))

    def shoot(self, page: Any, name: str, full: bool = True) -> Path:
        if not full:
            page.evaluate("window.scrollTo(0, 0)")  # the decision is announced at the top
        target = (SCREENSHOTS if self.keep else Path("/tmp/gridflow-shots")) / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=full, animations="disabled", caret="hide")
        return target


@pytest.fixture(scope="module")
def county(stack: Any, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[County]:
    from demo.live import free_port
    from sinks.models import make_engine

    run_dir = tmp_path_factory.mktemp("workbench")
    with tenant(stack, f"w{uuid.uuid4().hex[:11]}") as own:
        settings = own.settings(stack.settings, api_port=free_port(), clock="wall",
                                faust_data_dir=run_dir / "faust", archive_retention_days=1)
        engine = make_engine(own.database_url)
        procs: list[services.Service] = []
        try:
            procs = [
                services.start("worker", ["worker", "--loglevel", "info"], settings, run_dir),
                services.start("sink", ["sink"], settings, run_dir),
                services.start("api", ["api", "--workers", "1"], settings, run_dir),
            ]
            url = settings.api_url
            county = County(url, settings, SampleSessions(AccountStore(engine, REF), "browser"),
                            procs, browser, os.environ.get("GRIDFLOW_SCREENSHOTS") == "1")
            county.wait("the API to answer", lambda: _healthy(url), timeout_s=90)
            yield county
        finally:
            for proc in procs:
                proc.stop()
            engine.dispose()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/v1/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def outcome(page: Any) -> str:
    """The decision the page announces, once the processor has made it."""
    page.locator(".outcome-accepted, .outcome-refused").first.wait_for(timeout=60_000)
    return " ".join(page.locator(".outcome").all_inner_texts())


def photo_file(name: str, seed: int) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg",
            "buffer": images.make_jpeg(1024, 768, seed=seed, gps=(32.16, 109.96))}


def task_card(page: Any, task_id: str) -> Any:
    return page.locator(f"#task-{task_id}")


# --- the closed loop -----------------------------------------------------------------------------


def test_a_department_signs_notes_progress_resolves_and_the_verification_closes_the_case(
    county: County,
) -> None:
    case_id = county.report()
    task = f"{case_id}-T01"
    staff = county.person("ds0019")

    staff.goto(f"{county.url}/w/sign-in")
    county.shoot(staff, "workbench-sign-in", full=False)
    staff.goto(f"{county.url}/w/")
    assert staff.url.endswith(f"/w/d/{VILLAGE}/inbox")
    row = staff.locator("tbody tr", has_text=case_id)
    county.shoot(staff, "workbench-inbox")
    row.get_by_role("button", name="签收").click()
    assert "签收已执行" in outcome(staff)

    staff.goto(f"{county.url}/w/cases/{case_id}")
    task_card(staff, task).get_by_role("link", name="填报进展").click()
    staff.get_by_role("button", name="提交进展").click()
    assert "请填写处置进展" in staff.locator(".error-summary").inner_text()
    county.shoot(staff, "workbench-form-error")
    staff.get_by_label("处置进展").fill("已到现场, 安排保洁员清运")
    staff.locator("#photos").set_input_files([photo_file("site.jpg", 11)])
    staff.get_by_role("button", name="提交进展").click()
    assert "填报进展已执行" in outcome(staff)

    task_card(staff, task).get_by_role("link", name="办结", exact=True).click()
    staff.get_by_label("办结说明").fill("垃圾已清运完毕, 现场恢复整洁")
    staff.locator("#photos").set_input_files([photo_file("after.jpg", 12)])
    county.shoot(staff, "workbench-resolve")
    staff.get_by_role("button", name="确认办结").click()
    assert "办结已执行" in outcome(staff)
    assert "已办结待核查" in task_card(staff, task).inner_text()

    r = httpx.post(f"{county.url}/api/v1/tasks/{task}/verify", json={"note": "现场已核实"},
                   headers=county.bearer("gw0001"), timeout=30)  # the reporter, on site
    assert r.status_code == 202, r.text

    def closed() -> bool:
        staff.goto(f"{county.url}/w/cases/{case_id}")
        return "已结案" in staff.locator("h1").inner_text()

    county.wait("the case to close", closed)
    steps = staff.locator("ol.steps").inner_text()
    for step in ("立案", "派遣", "签收", "处置进展", "办结", "核查通过", "结案"):
        assert step in steps
    def archived() -> bool:
        staff.reload()
        return "归档中" not in staff.locator("#h-photos").locator("..").inner_text()

    county.wait("the photos archived", archived, timeout_s=90)
    assert staff.locator("ul.photos img").count() == 3  # the report's, progress, after
    county.shoot(staff, "workbench-case")


def test_another_department_cannot_see_the_task_by_link_or_by_list(county: County) -> None:
    case_id = county.report(description="另一处垃圾堆放", offset=0.0012)
    other = county.person("ds0003")  # 城管局
    r = other.goto(f"{county.url}/w/cases/{case_id}")
    assert r.status == 404 and "未找到" in other.locator("main").inner_text()
    other.goto(f"{county.url}/w/d/county.chengguan/inbox")
    assert case_id not in other.locator("main").inner_text()
    assert other.goto(f"{county.url}/w/d/{VILLAGE}/inbox").status == 404


def test_a_send_back_lands_in_the_township_centres_inbox(county: County) -> None:
    case_id = county.report(description="道路塌陷, 非村委会职责", offset=-0.0012)
    staff = county.person("ds0019")
    staff.goto(f"{county.url}/w/cases/{case_id}")
    task_card(staff, f"{case_id}-T01").get_by_role("link", name="退单").click()
    staff.get_by_label("退单理由").fill("属道路养护, 非村委会职责")
    assert staff.get_by_label("改派给").input_value() == CENTRE
    county.shoot(staff, "workbench-send-back")
    staff.get_by_role("button", name="确认退单").click()
    assert "退单已执行" in outcome(staff)

    centre = county.person("ds0015")
    centre.goto(f"{county.url}/w/d/{CENTRE}/inbox?tab=sign")
    row = centre.locator("tbody tr", has_text=f"{case_id}-T02")
    assert row.count() == 1 and "已派遣" in row.inner_text()


def test_an_approved_extension_moves_the_deadline_and_a_second_is_refused_with_the_reason(
    county: County,
) -> None:
    case_id = county.report(description="垃圾量大需外运", offset=0.0024)
    task = f"{case_id}-T01"
    staff = county.person("ds0019")
    staff.goto(f"{county.url}/w/cases/{case_id}")
    task_card(staff, task).get_by_role("button", name="签收").click()
    assert "签收已执行" in outcome(staff)
    before = task_card(staff, task).locator("table.stages tr", has_text="办结").inner_text()
    task_card(staff, task).get_by_role("link", name="申请延期").click()
    staff.get_by_label("延期工作日数").fill("2")
    staff.get_by_label("延期理由").fill("需协调外运车辆")
    staff.get_by_role("button", name="提交延期申请").click()
    assert "延期申请已执行" in outcome(staff)

    supervisor = county.person("sv0102")  # 青石镇
    supervisor.goto(f"{county.url}/s/")
    row = supervisor.locator("#q-extensions").locator("..").locator("tbody tr", has_text=task)
    county.shoot(supervisor, "console-queues")
    row.get_by_role("button", name="批准").click()
    assert "延期已批准" in outcome(supervisor)

    staff.goto(f"{county.url}/w/cases/{case_id}")
    after = task_card(staff, task).locator("table.stages tr", has_text="办结").inner_text()
    assert after != before and "已延期1次" in task_card(staff, task).inner_text()

    task_card(staff, task).get_by_role("link", name="申请延期").click()
    staff.get_by_label("延期工作日数").fill("3")
    staff.get_by_label("延期理由").fill("仍需协调")
    staff.get_by_role("button", name="提交延期申请").click()
    text = outcome(staff)
    assert "延期申请未执行" in text and "每项任务最多延期1次" in text
    county.shoot(staff, "workbench-extension-refused", full=False)


def test_a_whistle_to_two_departments_gives_each_its_task_and_each_sees_only_its_own(
    county: County,
) -> None:
    case_id = county.report(description="河道边垃圾倾倒并有违建", offset=0.0036)
    supervisor = county.person("sv0001")
    supervisor.goto(f"{county.url}/w/cases/{case_id}")
    supervisor.get_by_role("link", name="吹哨报到").click()
    supervisor.get_by_label("十堰市生态环境局青山分局").check()
    supervisor.get_by_label("青山县住房和城乡建设局").check()
    supervisor.get_by_label("吹哨事由").fill("河道垃圾与违建交织, 需环保、住建联合处置")
    county.shoot(supervisor, "console-whistle")
    supervisor.get_by_role("button", name="吹哨, 召集所选部门").click()
    assert "吹哨报到已执行" in outcome(supervisor)
    cards = supervisor.locator(".task-card h3").all_inner_texts()
    assert cards == ["青石镇石门村村民委员会", "十堰市生态环境局青山分局", "青山县住房和城乡建设局"]
    county.shoot(supervisor, "console-whistle-progress")

    for login, dept, own, other in (("ds0004", "county.huanjing", "T02", "T03"),
                                    ("ds0005", "county.zhujian", "T03", "T02")):
        page = county.person(login)
        page.goto(f"{county.url}/w/d/{dept}/inbox")
        inbox = page.locator("main").inner_text()
        assert f"{case_id}-{own}" in inbox and f"{case_id}-{other}" not in inbox
        page.goto(f"{county.url}/w/cases/{case_id}")
        assert page.locator(".task-card").count() == 1
        assert f"{case_id}-{own}" in page.locator(".task-card").inner_text()


def test_two_people_click_sign_at_once_one_wins_and_the_other_sees_why_not(
    county: County,
) -> None:
    case_id = county.report(worker_id="GW0001", category="P0101", description="井盖缺失",
                            offset=0.0048)  # 住建局's: two of its staff at once
    pages = [county.person("ds0005"), county.person("ds0028")]
    for page in pages:
        page.goto(f"{county.url}/w/cases/{case_id}")
        page.locator(f"#task-{case_id}-T01").get_by_role("button", name="签收").wait_for()
    at = int(time.time() * 1000) + 1500  # both pages click at this instant (one browser clock)
    for page in pages:
        page.evaluate("""at => setTimeout(() => document.querySelector(
            'form[action$="/sign"] button').click(), at - Date.now())""", at)
    time.sleep(2)
    results = [outcome(p) for p in pages]
    assert sorted("签收已执行" in r for r in results) == [False, True], results
    lost = next(r for r in results if "签收已执行" not in r)
    assert "签收未执行: 任务当前状态为「已签收」, 不能执行此操作" in lost
    county.shoot(pages[["签收已执行" in r for r in results].index(False)], "workbench-sign-race",
                 full=False)


def test_the_xlsx_export_opens_and_holds_the_boards_numbers(county: County) -> None:
    supervisor = county.person("sv0001")
    supervisor.goto(f"{county.url}/s/board?from=2026-01-01")
    rows = {}
    for tr in supervisor.locator("#indicators tbody tr").all():
        cells = [c.strip() for c in tr.locator("th, td").all_inner_texts()]
        rows[cells[0]] = cells[1:]
    assert rows["合计"][0] != "0"
    county.shoot(supervisor, "board")
    with supervisor.expect_download() as download:
        supervisor.get_by_role("link", name="导出 Excel(XLSX)").click()
    sheet = load_workbook(io.BytesIO(Path(download.value.path()).read_bytes()))["考核指标"]
    values = [[cell.value for cell in row] for row in sheet.iter_rows()]
    headings = values[0]
    for row in values[1:]:
        x = dict(zip(headings, row, strict=True))
        shown = rows[x["部门"]]
        assert [str(x["派遣数"]), str(x["在办数"]), str(x["结案数"])] == [
            shown[0], shown[2], shown[4]]
        for heading, i in (("结案率", 5), ("按期结案率", 8), ("退单率", 11)):
            text = "—" if x[heading] is None else f"{x[heading] * 100:.1f}%"
            assert text == shown[i], (x["部门"], heading)
    assert len(values) - 1 == len(rows)

    supervisor.goto(f"{county.url}/s/map")
    assert supervisor.locator("svg a circle.dot").count() >= 1
    county.shoot(supervisor, "board-map")
    supervisor.locator("svg a").first.click()
    assert re.search(r"/w/cases/AJ", supervisor.url)
    supervisor.goto(f"{county.url}/s/cases")
    county.shoot(supervisor, "board-cases")


def test_the_head_assigns_and_keeps_reply_templates(county: County) -> None:
    case_id = county.report(category="P0101", description="井盖松动", offset=-0.0036)
    head = county.person("ds0005")
    head.goto(f"{county.url}/w/d/county.zhujian/templates")
    head.get_by_label("标题").fill("已到场处置")
    head.get_by_label("内容").fill("已派员到现场核实, 正在组织维修, 预计两个工作日内完成。")
    head.get_by_label("处置进展").check()
    head.get_by_role("button", name="保存").click()
    county.shoot(head, "workbench-templates")

    head.goto(f"{county.url}/w/d/county.zhujian/inbox")
    head.locator("tbody tr", has_text=case_id).locator("input[type=checkbox]").check()
    head.get_by_label("分派选中的任务给").select_option(label="住建局城建监察员")
    head.get_by_role("button", name="二次派遣").click()
    assert "分派已执行" in outcome(head)

    staff = county.person("ds0028")
    staff.goto(f"{county.url}/w/d/county.zhujian/inbox")
    staff.get_by_role("link", name=re.compile("我的任务")).click()
    row = staff.locator("tbody tr", has_text=case_id)
    assert "住建局城建监察员" in row.inner_text()
    county.shoot(staff, "workbench-my-tasks")
    row.get_by_role("button", name="签收").click()
    assert "签收已执行" in outcome(staff)
    staff.goto(f"{county.url}/w/tasks/{case_id}-T01/progress")
    staff.locator("[data-template-picker]").select_option(label="已到场处置")
    assert staff.get_by_label("处置进展").input_value().startswith("已派员到现场核实")
    county.shoot(staff, "workbench-progress-template")
    staff.get_by_role("button", name="提交进展").click()
    assert "填报进展已执行" in outcome(staff)


@pytest.fixture(autouse=True)
def _children_alive(county: County) -> Iterator[None]:
    county.check()
    yield
    assert county.script_errors == [], "the pages' scripts failed"
    with contextlib.suppress(Exception):
        county.check()
