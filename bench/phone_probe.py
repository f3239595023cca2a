"""The phone app's loading, measured in Debian's Chromium (Playwright with the DevTools protocol):
run by bench.phone in a process of its own (`python -m bench.phone_probe URL TOKEN OUT`).

A signed-in grid worker's phone (390×844) under DevTools' "Fast 3G" (562.5 ms latency,
180 KB/s down, 84 KB/s up) with the CPU slowed 4×: the first visit (nothing cached: bytes
transferred, time until the report form is usable), a second visit (from the app's own cache)
and a third one offline. "Usable" is the app's own mark `gf-ready`: the form is shown with the
catalogue and who is signed in, and takes input. Prints nothing; writes JSON to OUT.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
FAST_3G = {"offline": False, "latency": 562.5, "downloadThroughput": 180_000,
           "uploadThroughput": 84_375}
CPU_SLOWDOWN = 4
PHONE: Any = {"width": 390, "height": 844}  # playwright's ViewportSize / ScreenSize


def throttled(context: Any, page: Any, offline: bool = False) -> tuple[Any, dict[str, Any]]:
    """A DevTools session on the page with Fast 3G and the slowed CPU; counts what it loads."""
    cdp = context.new_cdp_session(page)
    seen: dict[str, Any] = {"bytes": 0, "requests": {}, "urls": {}}
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {**FAST_3G, "offline": offline})
    cdp.send("Emulation.setCPUThrottlingRate", {"rate": CPU_SLOWDOWN})

    def response(e: dict[str, Any]) -> None:
        seen["urls"][e["requestId"]] = e["response"]["url"]

    def finished(e: dict[str, Any]) -> None:
        size = int(e.get("encodedDataLength") or 0)
        seen["bytes"] += size
        url = seen["urls"].get(e["requestId"], e["requestId"])
        seen["requests"][url] = seen["requests"].get(url, 0) + size

    cdp.on("Network.responseReceived", response)
    cdp.on("Network.loadingFinished", finished)
    return cdp, seen


def visit(context: Any, url: str, offline: bool = False) -> dict[str, Any]:
    page = context.new_page()
    _, seen = throttled(context, page, offline)
    page.goto(f"{url}/m/", wait_until="commit", timeout=60_000)
    page.locator("body[data-ready='1']").wait_for(state="attached", timeout=60_000)
    page.locator("#view-report").wait_for(timeout=10_000)
    ready = page.evaluate("performance.getEntriesByName('gf-ready')[0].startTime")
    nav = page.evaluate("(() => { const n = performance.getEntriesByType('navigation')[0];"
                        " return {html_ms: n.responseEnd, dom_ms: n.domContentLoadedEventEnd,"
                        " from_sw: n.workerStart > 0}; })()")
    page.wait_for_load_state("load")
    out = {"ready_ms": ready, **nav, "bytes": seen["bytes"],
           "requests": dict(sorted(seen["requests"].items()))}
    return out | {"page": page}


def probe(url: str, token: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(viewport=PHONE, screen=PHONE, is_mobile=True,
                                      has_touch=True, locale="zh-CN",
                                      timezone_id="Asia/Shanghai")
        context.add_cookies([{"name": "gridflow_session", "value": token, "url": url}])
        first = visit(context, url)
        page = first.pop("page")
        # the service worker takes over and keeps the shell (not throttled, not counted above)
        # polled: wait_for_function evaluates with eval(), which the app's CSP forbids
        deadline = time.monotonic() + 60
        while not page.evaluate("navigator.serviceWorker.controller !== null"):
            if time.monotonic() > deadline:
                raise TimeoutError("the service worker never took over the page")
            time.sleep(0.1)
        page.evaluate("caches.keys().then(k => Promise.all(k.map(n => caches.open(n)"
                      ".then(c => c.keys()))))")
        page.close()
        second = visit(context, url)
        second.pop("page").close()
        context.set_offline(True)
        offline = visit(context, url, offline=True)
        offline.pop("page").close()
        browser.close()
    return {"first": first, "second": second, "offline": offline,
            "conditions": {"network": "Fast 3G", **FAST_3G, "cpu_slowdown": CPU_SLOWDOWN}}


def main() -> None:
    url, token, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    out.write_text(json.dumps(probe(url, token), ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
