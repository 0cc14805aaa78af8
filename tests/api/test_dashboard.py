"""Tests for the dashboard (`api.dashboard`): the page as served, then the page in a real browser.

The browser tests read what a person sees after the page's JavaScript ran: the health pill, the
problems banner and live connections, the unknown-coin message, each card's trade figures and
explain codes (with their meanings), the legend of every explain code, and a card's feature drill-
down once clicked open. Most run the real server (``python -m api.server --replay
data/sample.ndjson.gz --speed 1``, through a launcher that only adds `dashboard_router` when the
app does not serve ``/`` yet) and drives headless Chromium with chromedriver's W3C WebDriver HTTP
API, using only the stdlib (urllib + json). It waits until every coin's card shows a regime label
and its chart has drawn, with updates arriving over the SSE stream; the drill-down test saves a
full-page screenshot (default ``/tmp/dashboard.png``, or ``HLSL_DASHBOARD_SCREENSHOT``: the
README's ``docs/dashboard.png`` is made so). An unhealthy live service (every coin stale, a
connection down with its last error) and a finished replay are served in-process from hand-set
stores. Chromium's resolver maps every host but 127.0.0.1 to nothing, so the page must work
offline. Skipped with a reason when ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is absent
(Debian: ``chromium chromium-driver``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.dashboard import (
    CONTENT_SECURITY_POLICY,
    DOCS_PLACEHOLDER,
    EXPLAIN_DOCS,
    PAGE,
    dashboard_router,
    page_docs,
    render_page,
)
from api.schemas import Features
from api.security import OPEN_PATHS
from connectors.codes import Explain
from connectors.store import RunState, SignalStore
from flows.pipeline import Pipeline, build_pipeline, run_pipeline
from flows.settings import Settings
from tests.api.test_metrics import _conn, _live_store
from tests.api.test_stream import serve
from tests.conftest import REPO, SAMPLE

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT = Path(os.environ.get("HLSL_DASHBOARD_SCREENSHOT", "/tmp/dashboard.png"))
SAMPLE_COINS = {"BTC", "ETH", "SOL"}
REGIMES = {"TRENDING", "MEAN_REVERTING", "LIQUIDATION_RISK", "CHAOTIC", "UNKNOWN"}
DIRECTIONS = {"LONG", "SHORT", "FLAT"}
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    # a page left for about:blank must really close its stream (else the server's shutdown waits)
    "--disable-features=BackForwardCache",
    "--force-device-scale-factor=1",
    "--window-size=1400,1080",
    # offline: nothing but the local server resolves
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]

# `python -m api.server ARGS`, plus the dashboard router when the app does not serve `/` yet.
LAUNCHER = """
import sys
from starlette.routing import Match
import api.runtime as runtime
import api.server as server
from api.dashboard import dashboard_router

build = runtime.build_app
ROOT = {"type": "http", "path": "/", "method": "GET", "root_path": "", "headers": []}

def build_app(pipeline):
    app = build(pipeline)
    if not any(r.matches(ROOT)[0] is Match.FULL for r in app.router.routes):
        app.include_router(dashboard_router())
    return app

runtime.build_app = build_app
raise SystemExit(server.main(sys.argv[1:]))
"""

# What a person sees on each card (DOM text), plus how much of each chart canvas has ink.
READ_PAGE = """
const cards = [...document.querySelectorAll('.card')].map((c) => {
  const cv = c.querySelector('canvas.chart');
  let inked = 0;
  if (cv.width && cv.height) {
    const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) inked++;
  }
  const text = (sel) => (c.querySelector(sel) || {}).textContent || '';
  return {
    coin: c.dataset.coin, label: c.dataset.regime || null, regime: text('.regime-pill'),
    direction: text('.dir'), score: text('.score'), actionable: text('.act'),
    explain: [...c.querySelectorAll('.code')].map((e) => e.textContent),
    freshness: text('.fresh-pill'),
    streams: [...c.querySelectorAll('.stream')].map((e) => e.textContent),
    warming: !c.querySelector('.warm').hidden, ts: Number(c.dataset.ts || 0),
    points: Number(cv.dataset.points || 0), drawn: Number(cv.dataset.drawn || 0),
    inked, area: cv.width * cv.height,
    trade: Object.fromEntries([...c.querySelectorAll('.kv')].map(
      (k) => [k.dataset.k, k.querySelector('.v').textContent])),
    titles: [...c.querySelectorAll('.explain .code')].map((e) => e.title),
    updated: text('.updated'), drillOpen: c.querySelector('details.drill').open,
    drillRows: [...c.querySelectorAll('.frow')].map((r) => [r.dataset.feature,
      r.querySelector('.fv').textContent]),
    drillMeta: text('.drill-meta'), regimeTitle: (c.querySelector('.regime-pill') || {}).title,
  };
});
const h = window.hlsl || {};
const el = (id) => document.getElementById(id) || {};
return {mode: h.mode, reason: h.reason, events: h.events, polls: h.polls, lastId: h.lastId,
        errors: h.errors || ['no window.hlsl'], csp: h.csp || [],
        conn: el('conn').textContent, health: el('health').textContent,
        healthClass: el('health').className, problems: el('problems').innerText || '',
        conns: [...document.querySelectorAll('#conns .cx')].map((e) => e.textContent),
        unknown: el('unknown').textContent,
        glossary: [...document.querySelectorAll('#glossary .gl')].map(
          (g) => [g.dataset.code, g.querySelector('span:last-child').textContent]),
        cards};
"""

Page = dict[str, Any]


# -- the page as served --------------------------------------------------------------------------


def _app() -> FastAPI:
    app = create_app(SignalStore(), token=None)
    app.include_router(dashboard_router())
    return app


def test_root_serves_the_dashboard() -> None:
    r = TestClient(_app()).get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "connect-src 'self'" in CONTENT_SECURITY_POLICY
    assert r.text == render_page()
    assert DOCS_PLACEHOLDER in PAGE.read_text(encoding="utf-8")
    assert DOCS_PLACEHOLDER not in r.text
    assert "<title>Hyperliquid Signal Layer</title>" in r.text
    assert TestClient(_app()).head("/").status_code == 200


def test_page_is_self_contained() -> None:
    """No build step, no external scripts, styles, fonts or fetches: it must work offline."""
    html = render_page()  # the docs put in: meanings must not smuggle URLs in either
    assert not re.search(r"<script[^>]+src=", html), "scripts are inline"
    assert not re.search(r"<link[^>]+stylesheet", html), "styles are inline"
    assert not re.search(r"@import|url\(", html), "no imported CSS or fonts"
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.I), "no external URLs"
    assert "new EventSource(url)" in html
    for path in ("'/v1/stream'", "'/v1/signals?view=full'", "'/v1/state'", "/history?"):
        assert path in html


def test_the_page_carries_the_legend_and_feature_docs() -> None:
    """Every explain code has a meaning and a tone; every feature its description."""
    assert set(EXPLAIN_DOCS) == {e.value for e in Explain}, "describe each explain code"
    docs = page_docs()
    for code, doc in docs["explain"].items():
        assert doc["tone"] in ("good", "info", "warn", "bad"), code
        assert len(doc["text"]) > 10, code
    assert set(docs["features"]) == set(Features.model_fields)
    html = render_page()
    blob = html.split('<script id="hlsl-docs" type="application/json">', 1)[1].split("</script>")[0]
    assert json.loads(blob) == docs


def test_router_serves_only_the_page() -> None:
    router = dashboard_router()
    routes = [(getattr(r, "path", None), sorted(getattr(r, "methods", ()))) for r in router.routes]
    assert routes == [("/", ["GET", "HEAD"])]
    app = create_app(SignalStore(), token=None, extra_routers=[router])
    assert "/" not in app.openapi()["paths"]
    assert TestClient(app).get("/").status_code == 200


# -- the page in headless Chromium ---------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _http(
    method: str, url: str, body: Any = None, timeout: float = 15.0
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as ex:
        return ex.code, json.loads(ex.read() or b"{}")


def _wait(what: str, check: Callable[[], Any], timeout_s: float, every_s: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last answer on timeout."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            last = check()
            if last:
                return last
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}; last: {last!r}")


def _stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # children (renderers) that outlived their parent


class WebDriver:
    """The few W3C WebDriver commands the test needs, over chromedriver's HTTP API."""

    def __init__(self, base: str, user_data_dir: Path) -> None:
        self.base = base
        caps = {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": str(CHROMIUM),
                "args": [*CHROMIUM_ARGS, f"--user-data-dir={user_data_dir}"],
            },
        }
        status, body = _http(
            "POST", f"{base}/session", {"capabilities": {"alwaysMatch": caps}}, timeout=30
        )
        assert status == 200, f"chromedriver could not start Chromium: {body}"
        self.session = f"{base}/session/{body['value']['sessionId']}"
        self._cmd("POST", "/timeouts", {"script": 10_000, "pageLoad": 15_000})

    def _cmd(self, method: str, path: str, body: Any = None) -> Any:
        status, out = _http(method, self.session + path, body)
        assert status == 200, f"WebDriver {method} {path}: {status} {out}"
        return out.get("value")

    def get(self, url: str) -> None:
        self._cmd("POST", "/url", {"url": url})

    def run(self, script: str) -> Any:
        return self._cmd("POST", "/execute/sync", {"script": script, "args": []})

    def screenshot(self, path: Path) -> None:
        png = base64.b64decode(self._cmd("GET", "/screenshot"))
        assert png.startswith(b"\x89PNG"), "not a PNG"
        path.write_bytes(png)

    def quit(self) -> None:
        with contextlib.suppress(OSError, AssertionError):
            _http("DELETE", self.session, timeout=10)


@contextlib.contextmanager
def _serve(log: Path, token: str | None = None) -> Iterator[str]:
    """The real server replaying the sample in real time, with the dashboard at ``/``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HLSL_")}
    if token is not None:
        env["HLSL_API_TOKEN"] = token
    argv = ["--replay", str(SAMPLE), "--speed", "1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, *argv],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
            return _http("GET", f"{base}/health", timeout=2)[0] == 200

        _wait("the server to answer /health", up, timeout_s=20)
        yield base
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The server without a token."""
    with _serve(tmp_path_factory.mktemp("server") / "server.log") as base:
        yield base


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium driven through chromedriver (no downloads: the Debian packages)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.is_file():
            pytest.skip(f"{path} is absent (apt-get install chromium chromium-driver)")
    port = _free_port()
    tmp = tmp_path_factory.mktemp("chromium")
    with (tmp / "chromedriver.log").open("wb") as out:
        proc = subprocess.Popen(
            [str(CHROMEDRIVER), f"--port={port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    wd: WebDriver | None = None
    try:
        _wait(
            "chromedriver to be ready",
            lambda: _http("GET", f"{base}/status", timeout=2)[1]["value"]["ready"],
            timeout_s=10,
        )
        wd = WebDriver(base, tmp / "profile")
        yield wd
    finally:
        if wd is not None:
            wd.quit()
        _stop(proc)


@pytest.fixture
def browser(driver: WebDriver) -> Iterator[WebDriver]:
    """The browser; afterwards on a blank page, so no stream holds a server's shutdown up."""
    yield driver
    with contextlib.suppress(AssertionError, OSError):
        driver.get("about:blank")


def _filled(page: Page, min_points: int) -> bool:
    """Every sample coin has a card with a regime, a direction, an edge and a drawn chart."""
    cards = {c["coin"]: c for c in page["cards"]}
    if not cards.keys() >= SAMPLE_COINS:
        return False
    for coin in SAMPLE_COINS:
        c = cards[coin]
        if c["label"] not in REGIMES or c["points"] < min_points or not c["drawn"]:
            return False
    return True


def _check_cards(page: Page) -> None:
    assert page["errors"] == [], f"JavaScript errors: {page['errors']}"
    assert page["csp"] == [], f"blocked requests: {page['csp']}"
    for c in page["cards"]:
        if c["coin"] not in SAMPLE_COINS:
            continue
        assert c["regime"] == c["label"].replace("_", " "), c
        assert c["direction"].split()[-1] in DIRECTIONS, c
        assert 0.0 <= float(c["score"]) <= 1.0, c
        assert c["actionable"] in ("ACTIONABLE", "NOT ACTIONABLE"), c
        assert c["explain"], f"{c['coin']}: no explain codes shown"
        assert all(c["titles"]), f"{c['coin']}: an explain code without its meaning"
        assert set(c["trade"]) == {
            "p_right", "move", "cost", "net", "spread", "depth", "funding", "vol"
        }, c["trade"]  # fmt: skip
        assert c["trade"]["spread"].endswith(" bps"), c["trade"]
        assert c["trade"]["cost"].endswith(" bps"), c["trade"]
        assert c["trade"]["depth"].startswith("$"), c["trade"]
        assert c["trade"]["funding"].endswith("%"), c["trade"]
        assert c["freshness"] in ("ok", "stale", "missing"), c
        assert any(s.startswith("bbo ") for s in c["streams"]), c["streams"]
        assert c["drawn"] == c["ts"], f"{c['coin']}: the chart lags the card"
        # the line, the regime bands and the labels put ink on a good part of the canvas
        assert c["inked"] > 0.25 * c["area"], f"{c['coin']}: chart looks empty ({c})"


def _summary(page: Page | None) -> str:
    if page is None:
        return "no page read"
    head = {k: page.get(k) for k in ("mode", "reason", "events", "polls", "errors", "csp")}
    cards = [
        {k: c.get(k) for k in ("coin", "label", "direction", "points", "ts", "drawn")}
        for c in page.get("cards", [])
    ]
    return f"{head} cards={cards}"


def _wait_page(browser: WebDriver, what: str, ok: Callable[[Page], bool], timeout_s: float) -> Page:
    """Read the page every 0.25 s until ``ok``; on timeout, fail showing what the page had."""
    deadline = time.monotonic() + timeout_s
    page: Page | None = None
    while time.monotonic() < deadline:
        page = browser.run(READ_PAGE)
        if page is not None and ok(page):
            return page
        time.sleep(0.25)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}: {_summary(page)}")


def test_cards_fill_from_the_stream(browser: WebDriver, server: str) -> None:
    """Cards fill in from /v1/signals, then keep updating from the SSE stream."""
    browser.get(server + "/")
    first = _wait_page(browser, "the cards to fill in", lambda p: _filled(p, 2), 25)
    start = {c["coin"]: c["ts"] for c in first["cards"]}

    def streamed(page: Page) -> bool:
        newer = all(c["ts"] > start.get(c["coin"], 0) for c in page["cards"])
        live = page["mode"] == "sse" and page["events"] >= 3 * len(SAMPLE_COINS)
        return live and newer and _filled(page, 8)

    page = _wait_page(browser, "updates over the SSE stream", streamed, 20)
    _check_cards(page)
    # a replay in progress streams, but is not "live"
    assert page["conn"] == "streaming a replay", page["conn"]
    assert page["health"] == "healthy", page["health"]
    assert page["problems"] == "", page["problems"]
    assert page["lastId"] is not None, "signal events carry an id"
    for c in page["cards"]:
        assert c["updated"].startswith("replayed, received "), c["updated"]


def test_token_falls_back_to_polling(browser: WebDriver, server: str) -> None:
    """With ``?token=`` (EventSource cannot send it) the page polls /v1/signals every 2 s."""
    browser.get(server + "/?token=test-token&coins=BTC,ETH")

    def polled(page: Page) -> bool:
        coins = {c["coin"] for c in page["cards"]}
        drawn = all(c["points"] >= 2 and c["label"] in REGIMES for c in page["cards"])
        return (
            page["mode"] == "polling" and page["polls"] >= 2 and coins == {"BTC", "ETH"} and drawn
        )

    page = _wait_page(browser, "the polling fallback to fill the cards", polled, 15)
    _check_cards(page)
    assert page["events"] == 0, "no stream with a token"
    assert page["conn"].startswith("polling"), page["conn"]


def test_token_protected_api(browser: WebDriver, tmp_path: Path) -> None:
    """With ``HLSL_API_TOKEN`` set, ``/?token=`` polls with the header; without it, an error."""
    if "/" not in OPEN_PATHS:
        pytest.skip(
            "with HLSL_API_TOKEN set, the page itself needs a token a browser cannot send: "
            "api.security.OPEN_PATHS should hold '/' (the page has no data)"
        )
    with _serve(tmp_path / "server.log", token="s3cret") as base:
        browser.get(base + "/")
        page = _wait_page(browser, "an error without the token", lambda p: p["mode"] == "error", 15)
        assert "401" in page["conn"], page["conn"]
        assert page["cards"] == []

        browser.get(base + "/?token=s3cret")

        def polled(page: Page) -> bool:
            return page["mode"] == "polling" and page["polls"] >= 1 and _filled(page, 2)

        page = _wait_page(browser, "the cards to fill in with the token", polled, 20)
        _check_cards(page)


def _element(browser: WebDriver, css: str) -> str:
    found = browser._cmd("POST", "/element", {"using": "css selector", "value": css})
    return str(next(iter(found.values())))


def test_unknown_coin_is_named_and_the_others_stream(browser: WebDriver, server: str) -> None:
    """``?coins=BTC,FOO``: FOO is named as unknown; BTC still streams (no silent polling)."""
    browser.get(server + "/?coins=btc,FOO")

    def shown(page: Page) -> bool:
        coins = {c["coin"] for c in page["cards"]}
        return page["mode"] == "sse" and coins == {"BTC"} and "FOO" in page["unknown"]

    page = _wait_page(browser, "the unknown coin message and the BTC card", shown, 20)
    assert page["unknown"].startswith("Unknown coin FOO in ?coins=: not served here"), page
    assert "BTC, ETH, SOL" in page["unknown"], page["unknown"]
    assert "btc" not in page["unknown"].split("(")[0], "btc resolves to BTC: not unknown"
    page = _wait_page(browser, "BTC updates over the stream", lambda p: p["events"] >= 2, 20)
    assert page["errors"] == [], page
    assert page["csp"] == [], page


def test_legend_and_feature_drill_down(browser: WebDriver, server: str) -> None:
    """The legend lists every explain code with its meaning; a card's drill-down opens on a
    click and lists every feature of the coin's latest signal. Saves the README screenshot."""
    browser.get(server + "/")
    _wait_page(browser, "the cards to fill in", lambda p: _filled(p, 8), 25)
    page = browser.run(READ_PAGE)
    glossary = dict(page["glossary"])
    assert set(glossary) == {e.value for e in Explain}
    assert glossary["STALE_INPUT"] == EXPLAIN_DOCS["STALE_INPUT"][1]
    assert not any(c["drillOpen"] for c in page["cards"])

    browser._cmd(
        "POST",
        f"/element/{_element(browser, '.card[data-coin=BTC] details.drill summary')}/click",
        {},
    )

    def opened(page: Page) -> bool:
        btc = next(c for c in page["cards"] if c["coin"] == "BTC")
        return bool(btc["drillOpen"] and btc["drillRows"])

    page = _wait_page(browser, "the BTC drill-down to open", opened, 10)
    btc = next(c for c in page["cards"] if c["coin"] == "BTC")
    names = [name for name, _ in btc["drillRows"]]
    status, env = _http("GET", server + "/v1/signal/BTC")
    assert status == 200
    assert set(names) == set(env["features"]), "every feature of the envelope"
    rows = dict(btc["drillRows"])
    assert rows["mid_px"] not in ("", "—"), rows["mid_px"]
    # the risk flag's evidence at this bar length (1 s bars: never evaluated)
    assert env["regime"]["flag_evidence"] == "untested"
    assert "risk flag evidence untested" in btc["drillMeta"], btc["drillMeta"]
    for c in page["cards"]:
        risky = c["label"] in ("LIQUIDATION_RISK", "CHAOTIC")
        assert ("Risk flag untested" in c["regimeTitle"]) == risky, (c["label"], c["regimeTitle"])
    assert all(not c["drillOpen"] for c in page["cards"] if c["coin"] != "BTC")

    # The README's screenshot: the whole page, the BTC drill-down open, preferably once the
    # replay is past warm-up and streaming (not a condition of the test: at most 60 s more).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = browser.run(READ_PAGE)
        if page["events"] >= 6 and not any(c["warming"] for c in page["cards"]):
            break
        time.sleep(0.5)
    height = 1080
    for _ in range(3):  # the window's height is the viewport's plus whatever chrome it has
        missing = int(
            browser.run("return document.documentElement.scrollHeight - window.innerHeight")
        )
        if missing <= 0 or height >= 3200:
            break
        height = min(height + missing, 3200)
        browser._cmd("POST", "/window/rect", {"width": 1400, "height": height})
    try:
        _wait_page(browser, "the charts to redraw", lambda p: _filled(p, 8), 10)
        browser.run("window.scrollTo(0, 0)")
        browser.screenshot(SCREENSHOT)
    finally:
        browser._cmd("POST", "/window/rect", {"width": 1400, "height": 1080})
    assert SCREENSHOT.stat().st_size > 20_000, "the screenshot looks blank"


# -- health the page must not hide: in-process servers over hand-set stores -----------------------


@pytest.fixture(scope="module")
def replayed() -> Pipeline:
    pipeline = build_pipeline(Settings(replay=[str(SAMPLE)], api=False), collect=True)
    run_pipeline(pipeline)
    assert pipeline.store.state is RunState.FINISHED
    return pipeline


def _dashboard_app(store: SignalStore) -> FastAPI:
    return create_app(store, token=None, extra_routers=[dashboard_router()])


def test_unhealthy_service_shows_health_connections_and_last_error(
    browser: WebDriver, replayed: Pipeline
) -> None:
    """``/health`` ok false (every coin stale, a connection down, an error): the header says so."""
    last = dict(replayed.collected or [])
    store = _live_store(
        [(c, last[c]) for c in ("BTC", "ETH")], {"BTC": 3_600_000, "ETH": 3_600_000}
    )
    error = "ws-1: ConnectionClosedError: no close frame received"
    store.error = error
    info = {
        "kind": "live",
        "files": [],
        "lines_read": 0,
        "frames_by_channel": {"trades": 7},
        "control_frames": {},
        "lines_skipped": {},
        "duplicate_trades": 0,
        "ignored_coin_events": 0,
        "errors": [error],
        "finished": False,
        "latest_event_ms": None,
        "connections": [
            _conn("ws-0", connected=True, reconnects=0),
            _conn("ws-1", connected=False, reconnects=4) | {"last_error": error},
        ],
    }
    store.source_info = lambda: info
    app = _dashboard_app(store)
    with serve(app) as base:
        assert TestClient(app).get("/health").json()["ok"] is False
        browser.get(base + "/")

        def told(page: Page) -> bool:
            return "UNHEALTHY" in page["health"] and len(page["cards"]) == 2

        page = _wait_page(browser, "the health pill to say unhealthy", told, 20)
        assert page["health"] == "UNHEALTHY · every coin's latest signal is stale", page["health"]
        assert "bad" in page["healthClass"]
        problems = page["problems"]
        assert "last error: " + error in problems, problems
        assert "stale: BTC, ETH" in problems, problems
        assert "ws-1: disconnected, reconnect pending (4 reconnects so far)" in problems, problems
        assert any(c.startswith("ws-1 down") and error in c for c in page["conns"]), page["conns"]
        assert any(c.startswith("ws-0 connected") for c in page["conns"]), page["conns"]
        assert "live" not in page["conn"], page["conn"]
        assert page["errors"] == [], page
        assert page["csp"] == [], page
        browser.get("about:blank")


def test_a_finished_replay_does_not_look_live(browser: WebDriver, replayed: Pipeline) -> None:
    app = _dashboard_app(replayed.store)
    with serve(app) as base:
        browser.get(base + "/")

        def done(page: Page) -> bool:
            return page["health"] == "replay finished" and _filled(page, 8)

        page = _wait_page(browser, "the page to show the finished replay", done, 20)
        _check_cards(page)
        assert page["conn"] == "stream open · replay finished, no new signals", page["conn"]
        assert "live" not in page["conn"]
        for c in page["cards"]:
            assert c["updated"] == "replay finished · no new signals", c["updated"]
            assert "ago" not in c["updated"]
        assert page["problems"] == "", page["problems"]
        browser.get("about:blank")
