"""掌上巡检: a grid worker signs in on a phone-sized Chromium and reports with photos and the
phone's location, offline too; against the real API and stack, the pipeline pumped behind it.
What a worker would check: the ticket on the page, the case's steps, and the read models
holding each report exactly once."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Site, wait_for
from PIL import Image

from demo import images
from demo.live import read_topic
from gridflow import topics
from gridflow.events import decode_message
from sinks.models import Photo, Report
from tests.support.api import report_id_of

WORKER = "gw0001"  # 赵建军, 石门村一组网格 (421099101201001)
IN_GRID = {"latitude": 32.16, "longitude": 109.96, "accuracy": 12}
OTHER_GRID = {"latitude": 32.20, "longitude": 109.96, "accuracy": 20}  # 石门村二组网格


def jpeg(name: str, seed: int, width: int = 3200, height: int = 2400) -> dict[str, Any]:
    return {"name": name, "mimeType": "image/jpeg",
            "buffer": images.make_jpeg(width, height, seed=seed, gps=(32.16, 109.96))}


def sign_in(site: Site, page: Any, shoot: Callable[[Any, str], Path] | None = None) -> None:
    page.goto(f"{site.url}/m/sign-in")
    page.get_by_label("账号或手机号").fill(WORKER)
    page.get_by_label("密码").fill(site.password(WORKER))
    if shoot:
        shoot(page, "worker-sign-in")
    page.get_by_role("button", name="登录").click()
    page.wait_for_url("**/m/")
    page.locator("#view-report").wait_for()
    ready(page)


def ready(page: Any) -> None:
    page.locator("body[data-ready='1']").wait_for(state="attached")


def fill_report(page: Any, photos: list[dict[str, Any]], search: str, category: str,
                description: str) -> None:
    ready(page)
    page.locator("#album").set_input_files(photos)
    page.locator("#thumbs figure").nth(len(photos) - 1).wait_for()
    page.get_by_label("问题类别").fill(search)
    page.locator("#cat-list li", has_text=category).first.click()
    page.get_by_label("问题描述").fill(description)
    page.locator("#loc .grid").wait_for()


def outbox_item(page: Any, description: str) -> Any:
    page.goto(page.url.split("#")[0] + "#outbox")
    return page.locator("#outbox-list li", has_text=description)


def reports_with(site: Site, description: str) -> list[Any]:
    return site.rows(Report, Report.description == description)


def test_a_worker_reports_with_two_photos_and_follows_the_case(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    phone = new_phone(geolocation=OTHER_GRID, permissions=["geolocation"])
    page = phone.new_page()
    sign_in(site, page, shoot)
    fill_report(page, [jpeg("a.jpg", 1), jpeg("b.jpg", 2)], "井盖", "污水井盖",
                "石门村二组路口井盖缺失, 已放置警示")
    page.get_by_text("跨网格").wait_for()  # outside the worker's own grid: allowed, said
    shoot(page, "worker-report")
    page.evaluate("document.getElementById('f-location').scrollIntoView({block: 'center'})")
    shoot(page, "worker-report-location")
    page.get_by_role("button", name="提交").click()
    item = page.locator("#outbox-list li", has_text="污水井盖")
    item.locator(".state", has_text="已受理").wait_for()
    ticket = item.locator(".ticket-line").inner_text().removeprefix("受理编号 ").strip()
    assert ticket.startswith("AJ")
    shoot(page, "worker-outbox")
    [report] = wait_for("the report filed", lambda: site.rows(Report, Report.case_id == ticket))
    assert report.photo_count == 2 and report.reporter.startswith("worker:GW0001@")
    [submitted] = [decode_message(r.value) for r in read_topic(
        site.settings.kafka_bootstrap, topics.REPORTS.name(site.settings.topic_prefix),
        lambda rs: any(report_id_of(r) == report.report_id for r in rs))
        if report_id_of(r) == report.report_id]
    device = submitted.data["device"]  # the phone's facts: accuracy, the originals' EXIF
    assert device["location_accuracy_m"] == 20 and device["location_source"] == "gps"
    assert [(p["lat"], p["lon"]) for p in device["photo_exif"]] == [(32.16, 109.96)] * 2
    for photo in site.rows(Photo, Photo.report_id == report.report_id):  # scaled on the phone
        stored = site.app.state.ctx.store.client.get_object(photo.incoming_bucket,
                                                            photo.incoming_key)
        try:
            assert Image.open(io.BytesIO(stored.read())).size == (2560, 1920)
        finally:
            stored.close()
            stored.release_conn()
    page.goto(f"{site.url}/m/#mine")
    mine = page.locator(f"#mine-list li[data-case='{ticket}']")
    mine.locator(".state", has_text="已派遣").wait_for()
    assert "立案" in mine.locator(".steps li.done").all_inner_texts()[0]
    shoot(page, "worker-my-reports")
    assert site.pump.errors == []


def test_offline_reports_survive_closing_the_page_and_are_filed_once(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    phone = new_phone(geolocation=IN_GRID, permissions=["geolocation"])
    page = phone.new_page()
    sign_in(site, page)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    phone.set_offline(True)
    texts = ["离线上报一: 河道漂浮物", "离线上报二: 路灯不亮"]
    for n, text in enumerate(texts):
        page.goto(f"{site.url}/m/#report")
        fill_report(page, [jpeg(f"o{n}.jpg", 10 + n, 1200, 900)], "垃圾", "暴露垃圾", text)
        page.get_by_role("button", name="提交").click()
        outbox = page.locator("#outbox-list li", has_text=text)
        outbox.locator(".state", has_text="待发送").wait_for()
    page.get_by_text("当前离线").wait_for()
    shoot(page, "worker-offline-outbox")
    page.close()
    assert all(reports_with(site, t) == [] for t in texts)

    page = phone.new_page()
    page.goto(f"{site.url}/m/#outbox")  # from the service worker's cache: still offline
    page.locator("#outbox-list li", has_text=texts[0]).wait_for()
    phone.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    for text in texts:
        page.locator("#outbox-list li", has_text=text).locator(
            ".state", has_text="已受理").wait_for(timeout=60_000)
    for text in texts:
        wait_for(f"{text} filed", lambda t=text: reports_with(site, t))
    assert [len(reports_with(site, t)) for t in texts] == [1, 1]


def test_a_retry_after_the_answer_was_lost_files_the_report_once(
    site: Site, new_phone: Callable[..., Any]
) -> None:
    phone = new_phone(geolocation=IN_GRID, permissions=["geolocation"])
    page = phone.new_page()
    sign_in(site, page)
    answers: list[int] = []

    def drop_the_first_answer(route: Any) -> None:
        if answers:
            route.continue_()
            return
        response = route.fetch()  # the upload reaches the API and is accepted ...
        answers.append(response.status)
        route.abort("connectionreset")  # ... and the answer is lost on the way back

    page.route("**/api/v1/reports", drop_the_first_answer)
    text = "断网重传: 村口垃圾堆放"
    fill_report(page, [jpeg("r.jpg", 21, 1600, 1200)], "垃圾", "暴露垃圾", text)
    page.get_by_role("button", name="提交").click()
    item = page.locator("#outbox-list li", has_text=text)
    item.locator(".state", has_text="已受理").wait_for(timeout=60_000)
    assert answers == [202]
    wait_for("the report filed", lambda: reports_with(site, text))
    assert len(reports_with(site, text)) == 1


def test_a_fake_image_is_refused_in_chinese_then_replaced_and_sent(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    phone = new_phone(geolocation=IN_GRID, permissions=["geolocation"])
    page = phone.new_page()
    sign_in(site, page)
    fake = {"name": "fake.jpg", "mimeType": "image/jpeg", "buffer": images.text_as_jpg()}
    text = "假照片: 占道经营"
    fill_report(page, [fake], "摆摊", "占道经营", text)
    page.get_by_role("button", name="提交").click()
    item = page.locator("#outbox-list li", has_text=text)
    item.locator(".state", has_text="被拒").wait_for()
    reason = item.locator(".reason").inner_text()
    assert reason.startswith("第1张照片: ") and "图片" in reason, reason
    shoot(page, "worker-rejected")
    item.get_by_role("button", name="修改后重发").click()
    page.get_by_text("上次被拒").wait_for()
    page.locator("#thumbs figure button").first.click()
    page.locator("#camera").set_input_files([jpeg("real.jpg", 31, 1600, 1200)])
    page.locator("#thumbs figure img[src^='data:']").wait_for()
    page.get_by_role("button", name="提交").click()
    page.locator("#outbox-list li", has_text=text).locator(
        ".state", has_text="已受理").wait_for(timeout=60_000)
    wait_for("the report filed", lambda: reports_with(site, text))
    assert len(reports_with(site, text)) == 1


def test_a_new_worker_sets_a_password_with_the_one_time_code_and_is_signed_in(
    site: Site, phone: Any
) -> None:
    store = site.people()
    code = store.reset_password("gw0003", "browser-tests")
    page = phone.new_page()
    page.goto(f"{site.url}/m/sign-in")
    page.get_by_role("link", name="设置密码").click()
    page.get_by_label("账号或手机号").fill("gw0003")
    page.get_by_label("一次性验证码").fill(code)
    page.get_by_label("新密码(至少 10 位, 不含账号名)").fill("青山巡检-新密码-0003")
    page.get_by_label("再次输入新密码").fill("青山巡检-新密码-0004")
    page.get_by_role("button", name="设置密码并登录").click()
    assert "两次输入的新密码不一致" in page.locator("#error-summary").inner_text()
    page.get_by_label("一次性验证码").fill(code)
    page.get_by_label("新密码(至少 10 位, 不含账号名)").fill("青山巡检-新密码-0003")
    page.get_by_label("再次输入新密码").fill("青山巡检-新密码-0003")
    page.get_by_role("button", name="设置密码并登录").click()
    page.wait_for_url("**/m/")
    ready(page)
    assert "梁志刚" in page.locator("#who").inner_text()


def test_a_report_made_after_the_session_ended_waits_for_sign_in_and_is_then_sent(
    site: Site, new_phone: Callable[..., Any], shoot: Callable[[Any, str], Path]
) -> None:
    phone = new_phone(geolocation=IN_GRID, permissions=["geolocation"])
    page = phone.new_page()
    sign_in(site, page)
    text = "登录过期: 井盖松动"
    fill_report(page, [jpeg("s.jpg", 51, 1200, 900)], "井盖", "污水井盖", text)
    [cookie] = [c for c in phone.cookies() if c["name"] == "gridflow_session"]
    site.accounts.sign_out(cookie["value"])  # e.g. idle too long on patrol
    page.get_by_role("button", name="提交").click()
    page.get_by_text("请先登录").wait_for()
    shoot(page, "worker-session-ended")
    page.get_by_role("link", name="查看手机上待发送的上报").click()
    item = page.locator("#outbox-list li", has_text=text)
    item.locator(".state", has_text="待发送").wait_for()
    assert "登录已失效" in item.locator(".reason").inner_text()
    assert reports_with(site, text) == []
    sign_in(site, page)
    page.goto(f"{site.url}/m/#outbox")
    page.locator("#outbox-list li", has_text=text).locator(
        ".state", has_text="已受理").wait_for(timeout=60_000)
    wait_for("the report filed", lambda: reports_with(site, text))
    assert len(reports_with(site, text)) == 1


def test_a_report_outside_the_county_is_sent_and_shown_as_not_filed_with_the_reason(
    site: Site, new_phone: Callable[..., Any]
) -> None:
    far = {"latitude": 30.5928, "longitude": 114.3055, "accuracy": 15}  # 武汉, not this county
    page = new_phone(geolocation=far, permissions=["geolocation"]).new_page()
    sign_in(site, page)
    text = "县外上报: 路灯不亮"
    fill_report(page, [jpeg("f.jpg", 61, 1200, 900)], "路灯", "路灯", text)
    page.get_by_text("该位置不在本县网格内").wait_for()  # said before sending; allowed
    page.get_by_role("button", name="提交").click()
    page.locator("#outbox-list li", has_text=text).locator(
        ".state", has_text="已受理").wait_for(timeout=60_000)
    page.goto(f"{site.url}/m/#mine")
    item = page.locator("#mine-list li", has_text=text)
    item.locator(".state", has_text="不予立案").wait_for(timeout=30_000)
    assert "上报位置不在本县任何网格内" in item.locator(".reason").inner_text()
