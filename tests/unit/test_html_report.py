"""The HTML report (prefixbench.html_report): the page's structure, that it needs no network, and, in a real headless
Chromium with the network off, that a recorded run's page loads with no console error, draws every Vega view, and
shows a first screen that is not blank.

Chromium is Debian's package (`./run.sh test` installs it). Without it the browser tests fail, so a CI image that
lost it is noticed; PREFIXBENCH_NO_BROWSER=1 skips them on purpose. PREFIXBENCH_SCREENSHOT_DIR=DIR keeps the
first-screen screenshots there, for a person to look at.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from prefixbench.html_report import page_title, render_html

ROOT = Path(__file__).resolve().parents[2]
RUNS = ["h200-2026-12-01-paired-smollm2", "h200-2026-12-01-paired"]  # the published H200 runs
WIDTH, HEIGHT = 1280, 900  # the first screen
WAIT_S = 60  # the longest any wait on the browser may take
BLANK_STDDEV = 20  # gray levels: a first screen with text and a table varies far more (about 40)


def tiny_png(width: int = 4, height: int = 3) -> bytes:
    """A valid RGB PNG (gray), for charts that need a file."""
    raw = b"".join(b"\x00" + b"\x80\x80\x80" * width for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def bar_spec(mark: str = "bar") -> dict:
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.4.1.json",
        "data": {"values": [{"cache": "cache off", "ttft_ms": 30}, {"cache": "cache on", "ttft_ms": 12}]},
        "mark": mark,
        "encoding": {"x": {"field": "cache", "type": "nominal"}, "y": {"field": "ttft_ms", "type": "quantitative"}},
    }


def chart_dir(tmp_path: Path, specs: dict[str, dict | None]) -> Path:
    charts = tmp_path / "charts"
    charts.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        (charts / f"{name}.png").write_bytes(tiny_png())
        if spec is not None:
            (charts / f"{name}.vl.json").write_text(json.dumps(spec))
    return charts


NETWORK_ATTR = re.compile(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
BUNDLE_MARK = "window.vegaEmbed"  # the bundle's last statement assigns it: once per bundle


# --- render_html ----------------------------------------------------------------------------------------------------


def test_tables_get_borders_and_right_aligned_numbers(tmp_path):
    md = "# R\n\n| point | TTFT | note |\n|---|---|---|\n| c=1 | 12 ms | fine |\n| c=64 | 1.20× (0.95–1.10) | n/a |\n"
    page = render_html(md, chart_dir(tmp_path, {}), title="R")
    assert '<div class="table-wrap"><table>' in page
    assert '<th class="num">TTFT</th>' in page and '<td class="num">12 ms</td>' in page
    assert '<td class="num">1.20× (0.95–1.10)</td>' in page
    assert "<th>point</th>" in page and "<td>c=1</td>" in page and "<td>fine</td>" in page  # text stays left
    keyvalue = render_html("| | |\n|---|---|\n| Engine | vLLM |\n", chart_dir(tmp_path, {}), title="R")
    assert '<thead class="blank">' in keyvalue and '<thead class="blank">' not in page  # an empty header row hidden


def test_headings_are_anchored_and_listed(tmp_path):
    md = "# Title\n\n## What was measured, and on what\n\ntext\n\n## Charts\n\n### Charts\n"
    page = render_html(md, chart_dir(tmp_path, {}), title="T & co")
    assert "<title>T &amp; co</title>" in page
    assert '<h2 id="what-was-measured-and-on-what">' in page
    assert '<h2 id="charts">' in page and '<h3 id="charts-1">' in page  # unique ids
    assert '<a class="anchor" href="#charts-1"' in page
    toc = page[page.index('<nav class="toc"') : page.index("</nav>")]
    assert '<a href="#what-was-measured-and-on-what">' in toc and "#charts-1" not in toc  # sections only


def test_page_title_is_the_first_heading():
    assert page_title("intro\n\n# Prefix caching: `vLLM` results\n\n# Other\n") == "Prefix caching: vLLM results"
    assert page_title("no heading") == "prefixbench report"


def test_charts_with_a_spec_become_vega_views_with_one_bundle(tmp_path):
    charts = chart_dir(tmp_path, {"ttft": bar_spec(), "speedup": bar_spec("point"), "ideal": None})
    md = "# R\n\n![TTFT vs concurrency](charts/ttft.png)\n\ntext\n\n![Speed-up](charts/speedup.png)\n\n![Ideal](charts/ideal.png)\n"
    page = render_html(md, charts, title="R")
    assert page.count('class="vega-view"') == 2
    assert 'data-spec="vl-spec-ttft"' in page and 'id="vl-spec-ttft"' in page
    assert page.count(BUNDLE_MARK) == 1  # the libraries once, however many charts
    # the chart without a spec: its PNG, embedded; none of the PNGs is linked
    assert page.count('<img src="data:image/png;base64,') == 1
    assert "charts/" not in re.sub(r"<script.*?</script>", "", page, flags=re.S).replace('class="chart"', "")
    assert "<figcaption>TTFT vs concurrency</figcaption>" in page
    assert "<p><figure" not in page  # a figure stands alone, not inside a paragraph
    twice = render_html(md + "\n![TTFT again](charts/ttft.png)\n", charts, title="R")
    assert 'id="chart-ttft"' in twice and 'id="chart-ttft-1"' in twice and twice.count('id="vl-spec-ttft"') == 1


def test_without_specs_no_bundle_and_pngs_embedded(tmp_path):
    page = render_html(
        "# R\n\n![A](charts/a.png)\n\nInline ![B](charts/b.png) image.\n", chart_dir(tmp_path, {"a": None, "b": None}), title="R"
    )
    assert BUNDLE_MARK not in page and "<script" not in page
    assert page.count("data:image/png;base64,") == 2
    assert base64.b64encode(tiny_png()).decode() in page


@pytest.mark.parametrize("run", RUNS)
def test_published_report_needs_no_network(run, tmp_path):
    """Nothing in the page points at the network: no src/href/action to http(s) or a protocol-relative URL, the
    images are data: URIs, and the page's Content Security Policy forbids fetches besides."""
    folder = ROOT / "docs/results" / run
    charts = tmp_path / "charts"
    shutil.copytree(folder / "charts", charts)
    (charts / "ttft_vs_concurrency.vl.json").write_text(json.dumps(bar_spec()))
    md = (folder / "prefix_caching_results.md").read_text()
    page = render_html(md, charts, title=page_title(md))
    assert NETWORK_ATTR.findall(page) == []
    assert not re.search(r"""\b(?:src|href)\s*=\s*["']?(?!["'#]|data:)""", re.sub(r"<script.*?</script>", "", page, flags=re.S))
    assert "connect-src 'none'" in page and "default-src 'none'" in page
    assert page.count(BUNDLE_MARK) == 1
    for heading in re.findall(r"^#+ (.+)$", md, flags=re.M):
        assert re.sub(r"[`*_]", "", heading).split(":")[0] in page  # every heading carried over


def test_the_network_check_can_fail(tmp_path):
    page = '<img src="https://example.com/a.png"><a href="//cdn.example/x.js">'
    assert len(NETWORK_ATTR.findall(page)) == 2


def test_network_or_missing_images_and_url_data_are_refused(tmp_path):
    charts = chart_dir(tmp_path, {"a": {**bar_spec(), "data": {"url": "https://example.com/d.csv"}}})
    with pytest.raises(ValueError, match="no network"):
        render_html("![x](https://example.com/x.png)\n", charts, title="R")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        render_html("![x](charts/missing.png)\n", charts, title="R")
    with pytest.raises(ValueError, match="inline"):
        render_html("![x](charts/a.png)\n", charts, title="R")


def test_a_spec_cannot_end_its_script_element(tmp_path):
    spec = bar_spec()
    spec["title"] = "</script><script>alert(1)</script>"
    page = render_html("![x](charts/a.png)\n", chart_dir(tmp_path, {"a": spec}), title="R")
    data = re.search(r'<script type="application/json" id="vl-spec-a">(.*?)</script>', page, flags=re.S)
    assert data is not None and json.loads(data.group(1))["title"] == spec["title"]
    assert "</script><script>alert" not in page


def test_rendering_is_byte_identical(tmp_path):
    charts = chart_dir(tmp_path, {"a": bar_spec()})
    md = "# R\n\n![A](charts/a.png)\n"
    assert render_html(md, charts, title="R") == render_html(md, charts, title="R")


# --- A real headless Chromium, no network ---------------------------------------------------------------------------


def chromium() -> str:
    """Debian's chromium, or a failure saying how to get it (a skip only when asked for)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("PREFIXBENCH_NO_BROWSER") == "1":
        pytest.skip("PREFIXBENCH_NO_BROWSER=1: the headless-Chromium checks of the HTML report are skipped")
    pytest.fail(
        "chromium is not installed, so the HTML report cannot be checked in a browser: `./run.sh test` installs "
        "Debian's chromium (as root: apt-get install chromium); PREFIXBENCH_NO_BROWSER=1 skips these tests on purpose"
    )


@dataclass
class PageLoad:
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, error log entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for that is not file:/data:/blob:
    views: list[Any] = field(default_factory=list)  # per .vega-view: [data-rendered, holds an svg or canvas]
    screenshot: bytes = b""


class Chromium:
    """One headless Chromium in its own process group (killed whole on exit) with a fresh profile, DevTools on a
    port it picks (read from the profile's DevToolsActivePort), every host unresolvable."""

    def __init__(self, exe: str, workdir: Path):
        self.profile = workdir / "chromium-profile"
        self.log = workdir / "chromium.log"
        args = [
            exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-default-apps", "--mute-audio",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",  # no network, even if asked
            f"--user-data-dir={self.profile}", "--remote-debugging-port=0", f"--window-size={WIDTH},{HEIGHT}",
            "--hide-scrollbars", "about:blank",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log.open("w"), start_new_session=True)
        self.port = self._port()

    def _port(self) -> int:
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                pytest.fail(f"chromium exited ({self.proc.returncode}) before DevTools came up:\n{self.log.read_text()[-3000:]}")
            if active.exists() and active.read_text().strip():
                return int(active.read_text().split()[0])
            time.sleep(0.1)
        self.close()
        pytest.fail(f"chromium's DevTools did not come up within {WAIT_S} s:\n{self.log.read_text()[-3000:]}")

    def close(self) -> None:
        """The whole process group (the launcher script, the browser, its renderers and helpers): asked to stop,
        then killed, then waited for (a bounded wait: members may linger a moment as zombies of init)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def load(self, url: str, *, screenshot: bool = False) -> PageLoad:
        return asyncio.run(asyncio.wait_for(self._load(url, screenshot), timeout=WAIT_S * 2))

    async def _load(self, url: str, screenshot: bool) -> PageLoad:
        result = PageLoad()
        timeout = aiohttp.ClientTimeout(total=WAIT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = _Cdp(ws, result)
                reader = asyncio.create_task(cdp.read())
                try:
                    await self._drive(cdp, url, screenshot, result)
                finally:
                    reader.cancel()
        return result

    async def _drive(self, cdp: _Cdp, url: str, screenshot: bool, result: PageLoad) -> None:
        for domain in ("Runtime", "Log", "Page", "Network"):
            await cdp.call(f"{domain}.enable")
        await cdp.call("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                       uploadThroughput=-1)  # fmt: skip
        await cdp.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        loaded = cdp.wait_for("Page.loadEventFired")
        await cdp.call("Page.navigate", url=url)
        await asyncio.wait_for(loaded, timeout=WAIT_S)
        # every Vega view settled (drawn or failed), then a moment for late errors
        deadline = time.monotonic() + WAIT_S
        pending = "document.querySelectorAll('.vega-view:not([data-rendered])').length"
        while await cdp.evaluate(pending) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        views = "Array.from(document.querySelectorAll('.vega-view'), e => [e.dataset.rendered || '', !!e.querySelector('svg, canvas')])"
        result.views = await cdp.evaluate(views)
        if screenshot:
            await cdp.evaluate("window.scrollTo(0, 0)")
            shot = await cdp.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)
            result.screenshot = base64.b64decode(shot["data"])


class _Cdp:
    """Calls over the DevTools websocket, and the events this test reads (errors, requests)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, result: PageLoad):
        self.ws, self.result, self.next_id = ws, result, 0
        self.replies: dict[int, asyncio.Future] = {}
        self.waiting: dict[str, asyncio.Future] = {}

    async def call(self, method: str, **params: Any) -> dict:
        self.next_id += 1
        reply = self.replies[self.next_id] = asyncio.get_running_loop().create_future()
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        message = await asyncio.wait_for(reply, timeout=WAIT_S)
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message.get("result", {})

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply["result"].get("value")

    def wait_for(self, event: str) -> asyncio.Future:
        future = self.waiting[event] = asyncio.get_running_loop().create_future()
        return future

    async def read(self) -> None:
        async for msg in self.ws:
            message = json.loads(msg.data)
            if "id" in message:
                self.replies.pop(message["id"]).set_result(message)
                continue
            method, params = message.get("method"), message.get("params", {})
            self._record(method, params)
            waiter = self.waiting.pop(method, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(params)

    def _record(self, method: str, params: dict) -> None:
        errors = self.result.errors
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            errors.append("exception: " + details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            errors.append(f"log ({params['entry']['source']}): {params['entry']['text']}")
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if not url.startswith(("file:", "data:", "blob:", "about:")):
                self.result.requests.append(url)


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator[Chromium]:
    exe = chromium()
    started = Chromium(exe, tmp_path_factory.mktemp("chromium"))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture(scope="module", params=RUNS)
def published_page(request, tmp_path_factory) -> tuple[str, Path]:
    """A published H200 run's report as HTML: its markdown and chart PNGs, with each chart's Vega-Lite spec drawn
    by this checkout's charts code from the run's recorded CSVs where the folder holds none (published before the
    specs existed)."""
    from prefixbench.charts import draw_all

    run = request.param
    folder = ROOT / "docs/results" / run
    out = tmp_path_factory.mktemp(run)
    shutil.copytree(folder / "charts", out / "charts")
    md = (folder / "prefix_caching_results.md").read_text()
    names = re.findall(r"!\[[^\]]*\]\(charts/([\w-]+)\.png\)", md)
    missing = [n for n in names if not (out / "charts" / f"{n}.vl.json").exists()]
    if missing:
        drawn = out / "drawn"
        draw_all(summary_csv=folder / "summary.csv", speedup_csv=folder / "speedup.csv", outdir=drawn, names=missing,
                 slo={}, model_dir=None, block_size=16)  # fmt: skip
        for name in missing:
            if not (drawn / f"{name}.vl.json").exists():
                pytest.fail(f"the charts code wrote no {name}.vl.json: chart_specs.EXTENSIONS must declare the spec")
            shutil.copy(drawn / f"{name}.vl.json", out / "charts")
    page = out / "prefix_caching_results.html"
    page.write_text(render_html(md, out / "charts", title=page_title(md)))
    return run, page


@pytest.fixture(scope="module")
def published_load(browser, published_page) -> tuple[str, Path, PageLoad]:
    """The published page loaded once in Chromium, with its first screen captured."""
    run, page = published_page
    return run, page, browser.load(page.as_uri(), screenshot=True)


def test_published_report_renders_in_chromium(published_load):
    """The recorded run's page, network off: no console error, no uncaught exception, no request leaving the
    machine, and every chart drawn by Vega (an svg inside each view)."""
    run, page, load = published_load
    assert load.errors == [], f"{run}: the page logged errors"
    assert load.requests == [], f"{run}: the page asked the network"
    assert len(load.views) == page.read_text().count('class="vega-view"') >= 4
    assert all(v == ["true", True] for v in load.views), f"{run}: views not drawn: {load.views}"


def test_first_screen_screenshot(published_load):
    """The first screen at 1280×900 is a real page: a PNG of that size whose pixels vary (not blank)."""
    run, page, load = published_load
    shot = page.with_name(f"{run}-first-screen.png")
    shot.write_bytes(load.screenshot)
    if keep := os.environ.get("PREFIXBENCH_SCREENSHOT_DIR"):
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    width, height, pixels = decode_png(load.screenshot)
    assert (width, height) == (WIDTH, HEIGHT)
    assert gray_stddev(pixels) > BLANK_STDDEV, f"{shot}: the first screen looks blank"
    assert ink_share(pixels) > 0.02, f"{shot}: almost nothing drawn on the first screen"


def test_a_broken_page_is_caught(browser, tmp_path):
    """The browser checks can fail: a thrown error, a console error, a network request and a chart Vega cannot
    draw are each reported."""
    broken = tmp_path / "broken.html"
    broken.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='http://example.invalid/a.png'>"
        "<script>console.error('deliberate console error');</script>"
        "<script>throw new Error('deliberate uncaught error');</script></body></html>"
    )
    load = browser.load(broken.as_uri())
    assert any("deliberate console error" in e for e in load.errors)
    assert any("deliberate uncaught error" in e for e in load.errors)
    assert any("example.invalid" in u for u in load.requests)

    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    width, height, pixels = decode_png(browser.load(blank.as_uri(), screenshot=True).screenshot)
    assert (width, height) == (WIDTH, HEIGHT) and gray_stddev(pixels) <= BLANK_STDDEV  # a blank screen is caught

    bad_chart = render_html(
        "![x](charts/a.png)\n", chart_dir(tmp_path, {"a": {**bar_spec(), "mark": {"type": "no-such-mark"}}}), title="R"
    )
    (tmp_path / "bad_chart.html").write_text(bad_chart)
    load = browser.load((tmp_path / "bad_chart.html").as_uri())
    assert load.views == [["failed", False]]
    assert any("vl-spec-a" in e for e in load.errors)


# --- PNG pixels without Pillow -----------------------------------------------------------------------------------------


def decode_png(data: bytes) -> tuple[int, int, np.ndarray]:
    """Width, height and the RGB pixels (height × width × 3) of an 8-bit RGB/RGBA PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    assert depth == 8 and color in (2, 6) and not interlace, f"unexpected PNG: depth {depth}, color {color}"
    bpp = 3 if color == 2 else 4
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, width * bpp + 1)
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    prev = np.zeros(width * bpp, dtype=np.uint8)
    for y in range(height):
        out[y] = prev = _unfilter(int(raw[y, 0]), raw[y, 1:], prev, bpp)
    return width, height, out.reshape(height, width, bpp)[:, :, :3]


def _unfilter(kind: int, line: np.ndarray, prev: np.ndarray, bpp: int) -> np.ndarray:
    """One row's PNG filter undone: None, Sub (a running sum per channel), Up, Average, Paeth."""
    if kind == 0:
        return line
    if kind == 1:
        return (line.reshape(-1, bpp).astype(np.int64).cumsum(axis=0) % 256).astype(np.uint8).reshape(-1)
    if kind == 2:
        return line + prev  # uint8 wraps: modulo 256
    row, up = line.tolist(), prev.tolist()
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        corner = up[i - bpp] if i >= bpp else 0
        if kind == 3:
            row[i] = (row[i] + (left + up[i]) // 2) & 0xFF
        else:
            p = left + up[i] - corner
            pa, pb, pc = abs(p - left), abs(p - up[i]), abs(p - corner)
            row[i] = (row[i] + (left if pa <= pb and pa <= pc else up[i] if pb <= pc else corner)) & 0xFF
    return np.array(row, dtype=np.uint8)


def gray_stddev(pixels: np.ndarray) -> float:
    return float(pixels.mean(axis=2).std())


def ink_share(pixels: np.ndarray) -> float:
    """The share of pixels darker than the page's background (text, rules, chart marks)."""
    return float((pixels.mean(axis=2) < 200).mean())


def filtered_png(rows: list[tuple[int, bytes]], width: int) -> bytes:
    """An RGB PNG whose rows carry the given filter bytes (to check each filter's decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    raw = b"".join(bytes([kind]) + line for kind, line in rows)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_png_decoder_reads_what_it_is_given():
    width, height, pixels = decode_png(tiny_png(4, 3))
    assert (width, height) == (4, 3) and (pixels == 0x80).all()
    assert gray_stddev(pixels) == 0 and ink_share(pixels) == 1  # a flat image is blank to the screenshot check
    # each filter on a 2-pixel row under a known one: None, Sub, Up, Average, Paeth
    base = bytes([10, 20, 30, 40, 50, 60])
    rows = [(0, base), (1, bytes([1, 2, 3, 1, 1, 1])), (2, bytes([5] * 6)), (3, bytes([0] * 6)), (4, bytes([1] * 6))]
    _, _, px = decode_png(filtered_png(rows, 2))
    flat = px.reshape(5, 6).tolist()
    assert flat[0] == list(base)
    assert flat[1] == [1, 2, 3, 2, 3, 4]  # Sub: the left pixel's byte added
    assert flat[2] == [6, 7, 8, 7, 8, 9]  # Up: the byte above added
    assert flat[3] == [3, 3, 4, 5, 5, 6]  # Average: (left + up) // 2
    assert flat[4] == [4, 4, 5, 6, 6, 7]  # Paeth: the neighbour nearest left + up - corner (here: up)
