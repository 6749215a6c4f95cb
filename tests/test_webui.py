"""
The admin web UI.

L{WebUIServingTests} check how the admin serves the UI's files
(L{gateway.admin.webui}) over a loopback connection.  The browser tests
(C{integration} and C{browser}) drive Debian's Chromium through Playwright
against a real gateway process (C{tests/webui_server.py}: the gateway's
service with the UI at the admin's root) in front of real backends: they log
in, create a server, a cluster and an API through the forms, see proxied
traffic on the dashboard, trip a circuit breaker and see it on the server's
page and in the dashboard's alerts, and see the admin's validation errors
next to the field at fault.  Screenshots of the main pages go to
C{test-artifacts/screenshots/}.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest
import pytest_twisted
import treq
import yaml
from harness import (
    HOST,
    REPO,
    Backend,
    Process,
    freePort,
    request,
    startBackend,
    startWebSocketBackend,
    subprocessEnv,
    waitFor,
)
from twisted.internet.task import Clock
from twisted.web import server

from gateway.admin.api import AdminAPI
from gateway.admin.webui import WEBUI_ROOT, withWebUI
from gateway.store.file import FileStore

TOKEN = "ui-secret"
CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
WEBUI_SERVER = Path(__file__).resolve().parent / "webui_server.py"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# -- serving the files --------------------------------------------------------


async def fetch(
    resource: Any, path: str, headers: Optional[Dict[str, str]] = None
) -> Tuple[Any, bytes]:
    """
    Serve C{resource} on a free loopback port, GET C{path} from it with a
    real HTTP client, and stop listening.

    A real reactor, not L{treq.testing.StubTreq}: L{static.File} writes
    through a pull producer that Twisted drives with the global reactor's
    cooperator.

    @return: the response and its body.
    """
    from twisted.internet import reactor

    port = reactor.listenTCP(0, server.Site(resource), interface=HOST)
    try:
        url = f"http://{HOST}:{port.getHost().port}{path}"
        response = await treq.get(url, headers=headers or {}, persistent=False)
        body = await response.content()
    finally:
        await port.stopListening()
    return response, body


def header(response: Any, name: str) -> Optional[str]:
    values = response.headers.getRawHeaders(name)
    return values[0] if values else None


def adminWithUI(root: Optional[str] = None) -> Any:
    return withWebUI(AdminAPI(FileStore(None), TOKEN, Clock()).resource(), root=root)


# A real admin site on 127.0.0.1: integration tests.
@pytest.mark.integration
class WebUIServingTests:
    """
    L{withWebUI} serves the UI's files at the admin's root and leaves every
    other path to the admin's REST API.
    """

    @pytest_twisted.ensureDeferred
    async def test_indexAtRoot(self) -> None:
        """
        C{GET /} answers C{index.html} as UTF-8 HTML, with a strict
        Content-Security-Policy and C{Cache-Control: no-cache}.
        """
        response, body = await fetch(adminWithUI(), "/")
        assert response.code == 200
        assert header(response, "content-type") == "text/html; charset=utf-8"
        assert b'<script type="module" src="js/app.js">' in body
        assert header(response, "cache-control") == "no-cache"
        csp = header(response, "content-security-policy") or ""
        assert "default-src 'self'" in csp
        assert "script-src 'self';" in csp
        assert header(response, "x-frame-options") == "DENY"

    @pytest_twisted.ensureDeferred
    async def test_contentTypes(self) -> None:
        """
        Modules are served as C{text/javascript} (browsers refuse to run a
        module of another type), styles as CSS, the icon as SVG, all with
        C{nosniff} and C{no-cache}, byte for byte.
        """
        root = adminWithUI()
        for path, expected in [
            ("/js/app.js", "text/javascript; charset=utf-8"),
            ("/js/pages/dashboard.js", "text/javascript; charset=utf-8"),
            ("/style.css", "text/css; charset=utf-8"),
            ("/favicon.svg", "image/svg+xml"),
        ]:
            response, body = await fetch(root, path)
            assert response.code == 200, path
            assert header(response, "content-type") == expected, path
            assert header(response, "x-content-type-options") == "nosniff"
            assert header(response, "cache-control") == "no-cache"
            assert body == (Path(WEBUI_ROOT) / path.lstrip("/")).read_bytes()

    @pytest_twisted.ensureDeferred
    async def test_notModified(self) -> None:
        """
        A browser revalidating an unchanged file gets a 304 and no body.
        """
        root = adminWithUI()
        response, _ = await fetch(root, "/style.css")
        lastModified = header(response, "last-modified")
        assert lastModified
        response, body = await fetch(root, "/style.css", {"If-Modified-Since": lastModified})
        assert (response.code, body) == (304, b"")

    @pytest_twisted.ensureDeferred
    async def test_noListingNoDotFiles(self, tmp_path: Path) -> None:
        """
        A folder of the UI is not listed, dot-files are not served, and a
        missing file is a 404.
        """
        (tmp_path / "index.html").write_text("<!doctype html>")
        (tmp_path / ".secret").write_text("hidden")
        (tmp_path / "js").mkdir()
        (tmp_path / "js" / "app.js").write_text("export {};")
        root = adminWithUI(str(tmp_path))
        for path in ["/js/", "/.secret", "/js/nope.js"]:
            response, body = await fetch(root, path)
            assert response.code == 404, path
            assert b"app.js" not in body and b"hidden" not in body

    @pytest_twisted.ensureDeferred
    async def test_apiUntouched(self) -> None:
        """
        The REST API answers as it does without the UI: 401 without the
        token, JSON with it, and a JSON 404 for an unknown API path.
        """
        root = adminWithUI()
        response, body = await fetch(root, "/api/v1/servers")
        assert response.code == 401
        assert json.loads(body)["error"] == "missing or invalid admin token"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response, body = await fetch(root, "/api/v1/servers", auth)
        assert (response.code, json.loads(body)) == (200, [])
        response, body = await fetch(root, "/api/v1/nothing", auth)
        assert (response.code, json.loads(body)["error"]) == (404, "no such resource")
        response, body = await fetch(root, "/healthz")
        assert (response.code, json.loads(body)) == (200, {"status": "ok"})

    @pytest_twisted.ensureDeferred
    async def test_uiRedirects(self) -> None:
        """
        C{/ui} and C{/ui/} redirect to the UI at C{/}.
        """
        from twisted.internet import reactor

        port = reactor.listenTCP(0, server.Site(adminWithUI()), interface=HOST)
        try:
            for path in ["/ui", "/ui/"]:
                url = f"http://{HOST}:{port.getHost().port}{path}"
                response = await treq.get(url, allow_redirects=False, persistent=False)
                await response.content()
                assert response.code == 302, path
                assert header(response, "location") == "/"
        finally:
            await port.stopListening()

    @pytest_twisted.ensureDeferred
    async def test_missingFiles(self, tmp_path: Path) -> None:
        """
        Without the UI's files the root says so with a 404, and the API
        still works.
        """
        root = adminWithUI(str(tmp_path))
        response, body = await fetch(root, "/")
        assert response.code == 404
        assert b"not installed" in body
        auth = {"Authorization": f"Bearer {TOKEN}"}
        response, _ = await fetch(root, "/api/v1/servers", auth)
        assert response.code == 200


# -- in the browser -----------------------------------------------------------


class UIGateway:
    """
    A gateway started by C{tests/webui_server.py}, with its URLs.
    """

    def __init__(self, process: Process, adminURL: str, proxyURL: str) -> None:
        self.process = process
        self.adminURL = adminURL
        self.proxyURL = proxyURL

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        answer = request(method, self.adminURL + path, body, {"Authorization": f"Bearer {TOKEN}"})
        assert answer.status < 300, (method, path, answer.status, answer.text)
        return answer.json() if answer.body else None

    def proxy(self, path: str) -> Any:
        return request("GET", self.proxyURL + path, timeout=5.0)

    def stats(self) -> Dict[str, Any]:
        return self.admin("GET", "/api/v1/stats")


def startUIGateway(directory: Path) -> UIGateway:
    """
    Run C{tests/webui_server.py} with an in-memory store on free ports, until
    its admin answers.
    """
    adminPort, proxyPort = freePort(), freePort()
    config = {
        "proxy": {"listen": f"tcp:{proxyPort}:interface={HOST}"},
        "admin": {"listen": f"tcp:{adminPort}:interface={HOST}", "token": TOKEN},
        "store": "memory:",
    }
    configPath = directory / "webui-gateway.yaml"
    configPath.write_text(yaml.safe_dump(config), encoding="utf-8")
    logPath = directory / "webui-gateway.log"
    with open(logPath, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, str(WEBUI_SERVER), "--config", str(configPath)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(directory),
            env=subprocessEnv(),
            start_new_session=True,
        )
    process = Process(proc, logPath)
    gateway = UIGateway(process, f"http://{HOST}:{adminPort}", f"http://{HOST}:{proxyPort}")

    def ready() -> bool:
        if not process.alive():
            raise AssertionError("the gateway exited:\n" + process.output())
        try:
            return request("GET", gateway.adminURL + "/healthz", timeout=1.0).status == 200
        except OSError:
            return False

    try:
        waitFor(ready, 15.0, interval=0.1, what="the UI gateway to listen")
    except AssertionError:
        process.stop()
        raise
    return gateway


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dict[str, Any]]:
    """
    One gateway, two backends (C{ok} always answers, C{flaky} is told to
    fail) and one Chromium for the browser tests of this module.
    """
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (scripts/test.sh installs Debian's chromium)")
    syncAPI = pytest.importorskip(
        "playwright.sync_api",
        reason="playwright is not installed (a CPython-only test extra, setup.cfg)",
    )
    directory = tmp_path_factory.mktemp("webui")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    started: List[Process] = []
    playwright = None
    try:
        backends = {}
        for name in ("ok", "flaky"):
            backends[name] = startBackend(name, directory)
            started.append(backends[name])
        gateway = startUIGateway(directory)
        started.append(gateway.process)
        playwright = syncAPI.sync_playwright().start()
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        yield {"gateway": gateway, "backends": backends, "browser": browser}
        browser.close()
    finally:
        if playwright is not None:
            playwright.stop()
        for process in started:
            process.stop()
        log = directory / "webui-gateway.log"
        if log.exists():
            # Shown by pytest only when a test failed; access log lines left out.
            lines = [x for x in log.read_text(errors="replace").splitlines() if '" 200 ' not in x]
            print("--- gateway log (last lines) ---\n" + "\n".join(lines[-40:]))


class Browser:
    """
    One browser tab on the admin UI, failing the test on any script error
    or Content-Security-Policy violation.
    """

    def __init__(self, world: Dict[str, Any]) -> None:
        self.gateway: UIGateway = world["gateway"]
        self.backends: Dict[str, Backend] = world["backends"]
        self.context = world["browser"].new_context(viewport={"width": 1400, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.problems: List[str] = []
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("console", self._console)

    def _console(self, message: Any) -> None:
        # Chromium logs every 4xx answer (the login probe's 401, the 400s and
        # 409s the tests provoke); anything else logged as an error (script
        # errors, Content-Security-Policy violations) is a defect.
        if (
            message.type == "error"
            and "the server responded with a status of 4" not in message.text
        ):
            self.problems.append(f"console error: {message.text}")

    def close(self) -> None:
        self.context.close()

    def go(self, route: str) -> None:
        self.page.goto(f"{self.gateway.adminURL}/#{route}")

    def login(self) -> None:
        self.go("/login")
        self.page.get_by_label("Admin token").fill(TOKEN)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.get_by_role("heading", name="Dashboard", level=1).wait_for()

    def nav(self, name: str) -> None:
        """
        Follow a link of the main navigation.
        """
        self.page.get_by_role("navigation", name="Main").get_by_role("link", name=name).click()

    def screenshot(self, name: str) -> None:
        self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def errorNextTo(self, field: str) -> str:
        """
        @return: the error message shown for the input of an API field
            path: tied to it by C{aria-describedby}, visible, and right
            below or beside it.
        """
        locator = self.page.locator(f'[data-field="{field}"]')
        locator.wait_for()
        found = self.page.wait_for_function(
            """(field) => {
                const el = document.querySelector(`[data-field="${CSS.escape(field)}"]`);
                const ids = (el.getAttribute("aria-describedby") || "").split(/\\s+/);
                for (const id of ids) {
                    const e = id && document.getElementById(id);
                    if (e && e.classList.contains("field-error") && !e.hidden && e.textContent) {
                        const a = el.getBoundingClientRect(), b = e.getBoundingClientRect();
                        return {text: e.textContent, dy: b.top - a.bottom, dx: b.left - a.left,
                                invalid: el.getAttribute("aria-invalid")};
                    }
                }
                return null;
            }""",
            arg=field,
        ).json_value()
        assert 0 <= found["dy"] < 40 and abs(found["dx"]) < 40, found
        assert found["invalid"] == "true", found
        return found["text"]

    def submit(self, label: str) -> None:
        self.page.get_by_role("button", name=label, exact=True).click()


@pytest.fixture
def browser(world: Dict[str, Any]) -> Iterator[Browser]:
    """
    A fresh tab (its own sessionStorage) for one test.
    """
    tab = Browser(world)
    try:
        yield tab
    finally:
        tab.close()
    assert not tab.problems, tab.problems


def kpi(page: Any, key: str) -> str:
    return page.locator(f'[data-kpi="{key}"]').inner_text()


def sendUntil(gateway: UIGateway, path: str, status: int, what: str) -> None:
    waitFor(lambda: gateway.proxy(path).status == status, 10.0, 0.1, what)


@pytest.mark.integration
@pytest.mark.browser
class BrowserTests:
    """
    The web UI in Chromium, against a real gateway.
    """

    def test_login(self, browser: Browser) -> None:
        """
        The UI asks for the token first, refuses a wrong one, keeps a good
        one in sessionStorage for the API calls, and sends the user back to
        the login screen when the admin refuses the token later.
        """
        page = browser.page
        browser.go("/servers")
        page.get_by_role("heading", name="Gateway admin").wait_for()
        assert "#/login?next=%2Fservers" in page.url
        page.get_by_label("Admin token").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("This token is not accepted by the admin.").wait_for()
        assert page.evaluate("sessionStorage.getItem('gateway.adminToken')") is None

        page.get_by_label("Admin token").fill(TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="Servers", level=1).wait_for()
        assert page.evaluate("sessionStorage.getItem('gateway.adminToken')") == TOKEN
        browser.screenshot("login-then-servers")

        # The admin now refuses the kept token: back to the login screen.
        page.evaluate("sessionStorage.setItem('gateway.adminToken', 'revoked')")
        browser.nav("Clusters")
        page.get_by_text("Your session ended").wait_for()
        assert "expired=1" in page.url
        assert page.evaluate("sessionStorage.getItem('gateway.adminToken')") is None

        browser.login()
        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Admin token").wait_for()
        assert page.evaluate("sessionStorage.getItem('gateway.adminToken')") is None

    def test_createThroughFormsAndSeeTraffic(self, browser: Browser) -> None:
        """
        A server, a cluster and an API created through the forms are stored
        as entered and serve traffic, and the requests sent through the
        proxy show on the dashboard.
        """
        page, gateway = browser.page, browser.gateway
        ok = browser.backends["ok"]
        browser.login()

        browser.nav("Servers")
        page.get_by_role("link", name="New server").first.click()
        page.get_by_role("textbox", name="Name", exact=True).fill("web1")
        page.get_by_label("Address").fill(ok.addr)
        page.get_by_label("Weight").fill("3")
        browser.submit("Create server")
        page.get_by_role("heading", name="web1", level=1).wait_for()

        browser.go("/clusters/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("web")
        page.get_by_label("Load balancing").select_option("least-connections")
        page.get_by_role("checkbox", name="web1").check()
        browser.submit("Create cluster")
        page.get_by_role("heading", name="Clusters", level=1).wait_for()
        page.get_by_role("cell", name="web", exact=True).wait_for()

        browser.go("/apis/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("echo")
        page.get_by_label("URL pattern").fill("/ui/echo/{id}")
        page.get_by_label("Method", exact=True).select_option("GET")
        page.get_by_label("Node 1 cluster").select_option("web")
        page.get_by_label("Node 1 URL rewrite").fill("/echo/{id}")
        page.get_by_label("Node 1 timeout in seconds").fill("5")
        page.get_by_label("Node 1 statuses retried").fill("502, 503")
        browser.submit("Create API")
        page.get_by_role("heading", name="APIs", level=1).wait_for()

        assert gateway.admin("GET", "/api/v1/servers/web1")["addr"] == ok.addr
        assert gateway.admin("GET", "/api/v1/servers/web1")["weight"] == 3
        cluster = gateway.admin("GET", "/api/v1/clusters/web")
        assert (cluster["servers"], cluster["loadBalance"]) == (["web1"], "least-connections")
        api = gateway.admin("GET", "/api/v1/apis/echo")
        assert (api["urlPattern"], api["method"]) == ("/ui/echo/{id}", "GET")
        assert [
            (n["cluster"], n["urlRewrite"], n["timeout"], n["retryOn"]) for n in api["nodes"]
        ] == [("web", "/echo/{id}", 5, [502, 503])]

        before = gateway.stats()["totals"]["requests"]
        browser.go("/")
        sendUntil(gateway, "/ui/echo/7", 200, "the new API to serve")
        answer = gateway.proxy("/ui/echo/8")
        assert answer.json()["path"] == "/echo/8"
        page.wait_for_function(
            "(n) => Number(document.querySelector('[data-kpi=requests]')"
            ".textContent.replace(/[^0-9]/g, '')) >= n",
            arg=before + 2,
        )
        page.locator('tr[data-server="web1"]').get_by_text("healthy", exact=True).wait_for()
        page.wait_for_function(
            "() => Number(document.querySelector('tr[data-api=echo] [data-col=requests]')"
            "?.textContent) >= 2"
        )

        # A few seconds of steady traffic, for charts worth a screenshot.
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                gateway.proxy("/ui/echo/9")
                stop.wait(0.1)

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            page.wait_for_timeout(4500)
        finally:
            stop.set()
            sender.join(5)
        assert kpi(page, "rps") not in ("\u2013", "0/s")
        browser.screenshot("dashboard")
        browser.go("/servers")
        page.get_by_role("link", name="web1", exact=True).wait_for()
        page.locator('tr[data-name="web1"]').get_by_text("healthy", exact=True).wait_for()

    def test_validationErrorsNextToTheField(self, browser: Browser) -> None:
        """
        The admin's validation errors appear next to the input they are
        about, top-level, nested and in editor rows alike; a fixed form
        then saves.
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/v1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/vc1", {"servers": ["v1"]})
        gateway.admin("PUT", "/api/v1/clusters/vc2", {"servers": ["v1"]})
        browser.login()

        browser.go("/servers/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("bad")
        page.get_by_label("Address").fill("nope")
        browser.submit("Create server")
        assert browser.errorNextTo("addr") == "must be host:port"
        assert page.locator(".banner-error").is_hidden()

        page.get_by_label("Address").fill(browser.backends["ok"].addr)
        page.get_by_text("Enable health check").click()
        page.get_by_label("Interval (s)").fill("-1")
        browser.submit("Create server")
        assert "must be" in browser.errorNextTo("healthCheck.interval")
        assert page.get_by_label("Address").get_attribute("aria-invalid") is None

        page.get_by_label("Interval (s)").fill("5")
        browser.submit("Create server")
        page.get_by_role("heading", name="bad", level=1).wait_for()
        assert gateway.admin("GET", "/api/v1/servers/bad")["healthCheck"]["interval"] == 5

        # An aggregation: two nodes need attribute names.
        browser.go("/apis/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("overview")
        page.get_by_label("URL pattern").fill("/ui/overview/{id}")
        page.get_by_label("Node 1 cluster").select_option("vc1")
        page.get_by_label("Node 1 URL rewrite").fill("/json/user")
        page.get_by_role("button", name="Add node").click()
        page.get_by_label("Node 2 cluster").select_option("vc2")
        page.get_by_label("Node 2 URL rewrite").fill("/json/orders")
        browser.submit("Create API")
        assert browser.errorNextTo("nodes[0].attrName") == (
            "is required when an API has several nodes"
        )

        page.get_by_label("Node 1 attribute name").fill("user")
        page.get_by_label("Node 2 attribute name").fill("orders")
        page.get_by_role("button", name="Add node").click()
        page.get_by_label("Node 3 cluster").select_option("vc2")
        page.get_by_label("Node 3 URL rewrite").fill("/json/recommended")
        page.get_by_label("Node 3 attribute name").fill("recommended")
        page.get_by_label("Node 3 batch").fill("1")
        page.get_by_label("Node 3 required").uncheck()
        # Reorder: orders first, then remove and re-add nothing else.
        page.get_by_role("button", name="Move Node 2 up").click()
        assert page.get_by_label("Node 1 attribute name").input_value() == "orders"
        page.get_by_text("Aggregation plan").wait_for()
        browser.screenshot("api-editor-aggregation")
        browser.submit("Create API")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        saved = gateway.admin("GET", "/api/v1/apis/overview")
        assert [
            (n["attrName"], n["cluster"], n["batch"], n["required"]) for n in saved["nodes"]
        ] == [
            ("orders", "vc2", 0, True),
            ("user", "vc1", 0, True),
            ("recommended", "vc2", 1, False),
        ]

        # Editing shows what is stored and saves it back unchanged.
        browser.go("/apis/overview/edit")
        assert page.get_by_label("Node 3 attribute name").input_value() == "recommended"
        assert page.get_by_role("textbox", name="Name", exact=True).is_disabled()
        browser.submit("Save changes")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        assert gateway.admin("GET", "/api/v1/apis/overview") == saved

        # A conflict with no input of its own is named next to the name.
        browser.go("/clusters/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("vc1")
        browser.submit("Create cluster")
        assert browser.errorNextTo("name") == "cluster 'vc1' already exists"

    def test_edgeSettingsInTheAPIForm(self, browser: Browser) -> None:
        """
        The API form sets a mock response, CORS and a header
        transformation: a transform of a managed header is refused next to
        its input; the fixed API is stored as entered, the proxy answers
        its mock with the CORS and transformed headers, and a preflight;
        editing it shows what is stored and saves it back unchanged.
        """
        page, gateway = browser.page, browser.gateway
        browser.login()
        browser.go("/apis/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("mocked")
        page.get_by_label("URL pattern").fill("/ui/mock/{id}")
        page.get_by_label("Method", exact=True).select_option("GET")
        page.get_by_text("Enable mock response").click()
        assert page.get_by_label("Node 1 cluster").is_hidden()
        page.get_by_label("Status", exact=True).fill("201")
        page.get_by_label("Headers", exact=True).fill("X-Mock: yes")
        page.get_by_label("Body", exact=True).select_option("json")
        page.get_by_label("Body content").fill('{"id": "mock", "n": [1, 2]}')
        page.get_by_text("CORS and header transformation").click()
        page.get_by_text("Enable cors").click()
        page.get_by_label("Allowed origins").fill("https://app.example.com\nhttps://*.example.org")
        page.get_by_label("Exposed response headers").fill("X-Mock")
        page.get_by_text("Allow credentials").click()
        page.get_by_label("Preflight max age (s)").fill("600")
        page.get_by_text("Enable header transformation").click()
        page.get_by_label("Set (response)").fill("X-Forwarded-For: 1.2.3.4")
        browser.submit("Create API")
        assert "managed by the gateway" in browser.errorNextTo("transform.response.set")

        page.get_by_label("Set (response)").fill("X-Item: $param.id")
        browser.submit("Create API")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        saved = gateway.admin("GET", "/api/v1/apis/mocked")
        assert saved["nodes"] == []
        assert saved["response"] == {
            "status": 201,
            "headers": {"X-Mock": "yes"},
            "body": {"id": "mock", "n": [1, 2]},
        }
        assert saved["cors"] == {
            "origins": ["https://app.example.com", "https://*.example.org"],
            "methods": [],
            "headers": [],
            "exposeHeaders": ["X-Mock"],
            "credentials": True,
            "maxAge": 600,
        }
        assert saved["transform"] == {
            "request": None,
            "response": {"set": {"X-Item": "$param.id"}, "add": {}, "remove": []},
        }
        origin = {"Origin": "https://a.example.org"}
        sendUntil(gateway, "/ui/mock/1", 201, "the mock to serve")
        answer = request("GET", gateway.proxyURL + "/ui/mock/7", headers=origin)
        assert answer.json() == {"id": "mock", "n": [1, 2]}
        assert answer.header("x-item") == "7"
        assert answer.header("access-control-allow-origin") == "https://a.example.org"
        answer = request(
            "OPTIONS",
            gateway.proxyURL + "/ui/mock/7",
            headers=dict(origin, **{"Access-Control-Request-Method": "GET"}),
        )
        assert (answer.status, answer.header("access-control-max-age")) == (204, "600")

        browser.go("/apis/mocked/edit")
        assert page.get_by_label("Body content").input_value().startswith("{")
        browser.screenshot("api-editor-mock-cors")
        browser.submit("Save changes")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        assert gateway.admin("GET", "/api/v1/apis/mocked") == saved

    def test_routingConditionBuilder(self, browser: Browser) -> None:
        """
        A routing is built with rows of source, name, operator and value,
        and stored with the conditions as entered (a list for "is one of",
        a number for comparisons, no value for "exists").
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/r1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/stable", {"servers": ["r1"]})
        gateway.admin("PUT", "/api/v1/clusters/canary", {"servers": ["r1"]})
        gateway.admin(
            "PUT",
            "/api/v1/apis/shop",
            {"urlPattern": "/ui/shop/{id}", "nodes": [{"cluster": "stable"}]},
        )
        browser.login()
        browser.go("/routings/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("canary-users")
        page.get_by_label("API", exact=True).select_option("shop")
        page.get_by_label("Target cluster").select_option("canary")
        page.get_by_label("Traffic rate (%)").fill("25")
        page.get_by_label("Sticky on").select_option("cookie")
        page.get_by_label("Header or cookie name").fill("session")

        add = page.get_by_role("button", name="Add condition")
        add.click()
        page.get_by_label("Condition 1 source").select_option("header")
        page.get_by_label("Condition 1 name").fill("X-Canary")
        page.get_by_label("Condition 1 operator").select_option("eq")
        page.get_by_label("Condition 1 value").fill("yes")
        add.click()
        page.get_by_label("Condition 2 source").select_option("query")
        page.get_by_label("Condition 2 name").fill("v")
        page.get_by_label("Condition 2 operator").select_option("in")
        page.get_by_label("Condition 2 value").fill("2, 3")
        add.click()
        page.get_by_label("Condition 3 source").select_option("json")
        page.get_by_label("Condition 3 name").fill("user.age")
        page.get_by_label("Condition 3 operator").select_option("ge")
        page.get_by_label("Condition 3 value").fill("18")
        add.click()
        page.get_by_label("Condition 4 source").select_option("cookie")
        page.get_by_label("Condition 4 name").fill("beta")
        page.get_by_label("Condition 4 operator").select_option("exists")
        assert page.get_by_label("Condition 4 value").is_disabled()
        add.click()
        page.get_by_role("button", name="Remove Condition 5").click()
        page.get_by_text("Matches requests where").wait_for()
        browser.screenshot("routing-editor")

        # An invalid header name is shown in its row.
        page.get_by_label("Condition 1 name").fill("X Canary")
        browser.submit("Create routing")
        assert browser.errorNextTo("conditions[0].name") == "is not a valid header name"
        page.get_by_label("Condition 1 name").fill("X-Canary")
        browser.submit("Create routing")
        page.get_by_role("heading", name="Routings", level=1).wait_for()
        page.get_by_text('header X-Canary equals "yes"').wait_for()

        routing = gateway.admin("GET", "/api/v1/routings/canary-users")
        assert routing["conditions"] == [
            {"source": "header", "name": "X-Canary", "op": "eq", "value": "yes"},
            {"source": "query", "name": "v", "op": "in", "value": ["2", "3"]},
            {"source": "json", "name": "user.age", "op": "ge", "value": 18},
            {"source": "cookie", "name": "beta", "op": "exists", "value": None},
        ]
        assert (routing["api"], routing["cluster"], routing["trafficRate"]) == (
            "shop",
            "canary",
            25,
        )
        assert (routing["strategy"], routing["hashOn"]) == ("split", "cookie:session")

        # Editing one field keeps the rest as they were.
        page.get_by_role("link", name="Edit routing canary-users").click()
        page.get_by_role("heading", name="Edit routing canary-users").wait_for()
        assert page.get_by_label("Condition 2 value").input_value() == "2, 3"
        page.get_by_label("Traffic rate (%)").fill("50")
        browser.submit("Save changes")
        page.get_by_role("heading", name="Routings", level=1).wait_for()
        assert gateway.admin("GET", "/api/v1/routings/canary-users") == dict(
            routing, trafficRate=50
        )

    def test_breakerTripShown(self, browser: Browser) -> None:
        """
        A server whose circuit breaker opens shows it: the server's page
        has the open state and the closed -> open transition, and the
        dashboard raises an alert linking to it.
        """
        page, gateway = browser.page, browser.gateway
        flaky = browser.backends["flaky"]
        browser.login()
        browser.go("/servers/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("flaky1")
        page.get_by_label("Address").fill(flaky.addr)
        page.get_by_text("Enable circuit breaker").click()
        page.get_by_label("Failure rate to open (%)").fill("50")
        page.get_by_label("Minimum requests").fill("2")
        page.get_by_label("Open timeout (s)").fill("120")
        browser.submit("Create server")
        page.get_by_role("heading", name="flaky1", level=1).wait_for()
        breaker = gateway.admin("GET", "/api/v1/servers/flaky1")["circuitBreaker"]
        assert (breaker["failureRateToOpen"], breaker["minRequests"]) == (50, 2)
        page.locator("[data-breaker-state=closed]").wait_for()

        gateway.admin("PUT", "/api/v1/clusters/flaky", {"servers": ["flaky1"]})
        gateway.admin(
            "PUT",
            "/api/v1/apis/flaky",
            {"urlPattern": "/ui/flaky", "nodes": [{"cluster": "flaky", "urlRewrite": "/echo"}]},
        )
        sendUntil(gateway, "/ui/flaky", 200, "the flaky API to serve")
        flaky.control("fail/500")
        try:
            statuses = [gateway.proxy("/ui/flaky").status for _ in range(4)]
        finally:
            flaky.control("fail/0")
        # The success before counts in the window: the first failure opens it.
        assert statuses[0] == 500, statuses
        assert statuses[-1] == 503, statuses

        page.locator("[data-breaker-state=open]").wait_for()
        transitions = page.locator("table.transitions tbody tr")
        assert "closed" in transitions.first.inner_text()
        assert "open" in transitions.first.inner_text()
        page.locator(".status-line").get_by_text("open", exact=True).wait_for()
        page.wait_for_timeout(2100)  # one more poll: the charts have a line
        browser.screenshot("server-detail")

        browser.nav("Dashboard")
        alert = page.get_by_role("link", name="Circuit breaker open on flaky1")
        alert.wait_for()
        page.locator('tr[data-server="flaky1"]').get_by_text("open", exact=True).wait_for()
        browser.screenshot("dashboard-alert")
        alert.click()
        page.get_by_role("heading", name="flaky1", level=1).wait_for()

        browser.nav("Servers")
        page.locator('tr[data-name="flaky1"]').get_by_text("open", exact=True).wait_for()
        browser.screenshot("servers")

    def test_intervalFiguresMatchTheGateway(self, browser: Browser) -> None:
        """
        The dashboard's figures for a polling interval, computed in the
        browser from two cumulative snapshots, are those of the requests in
        between: rates from the counter deltas, and p50/p99 from the delta
        of the histograms equal to the gateway's own estimate for them.
        """
        from gateway.telemetry.stats import BUCKETS_MS, latencyJSON, percentile

        def cumulative(perBucket: List[int]) -> List[int]:
            out, total = [], 0
            for n in perBucket:
                total += n
                out.append(total)
            return out

        size = len(BUCKETS_MS) + 1
        before = [5, 3, 0, 2] + [0] * (size - 4)
        added = [0, 10, 20, 5, 1, 0, 0, 3] + [0] * (size - 9) + [1]
        after = [a + b for a, b in zip(before, added)]

        def doc(perBucket: List[int], errors: int, sumMs: float) -> Dict[str, Any]:
            latency = latencyJSON(cumulative(perBucket), sumMs)
            count = latency["count"]
            return {
                "totals": {"requests": count, "errors": errors, "rejects": 0, "latency": latency}
            }

        browser.go("/login")
        figures = browser.page.evaluate(
            """async ([prev, cur]) => {
                const m = await import("./js/stats.js");
                const r = m.rates(m.totalsOf(cur), m.totalsOf(prev), 2);
                return [r.rps, r.errorRate, r.meanMs, r.p50, r.p99];
            }""",
            [doc(before, 1, 100.0), doc(after, 11, 500.0)],
        )
        delta = cumulative(added)
        assert figures == pytest.approx(
            [40 / 2, 10 * 100 / 40, 400.0 / 40, percentile(delta, 0.5), percentile(delta, 0.99)]
        )

    def test_discoveredServers(self, browser: Browser) -> None:
        """
        DNS discovery in the UI: a server that names a host shows the
        addresses it was found at (from the hosts file here: localhost),
        on the list and on its page; a cluster's DNS discovery is set
        through its form (the SRV name, no servers listed) and shown on the
        list.
        """
        page, gateway = browser.page, browser.gateway
        ok = browser.backends["ok"]
        gateway.admin("PUT", "/api/v1/servers/named", {"addr": f"localhost:{ok.port}"})
        browser.login()
        browser.go("/servers")
        row = page.locator('tr[data-name="named"]')
        row.get_by_text("\u2192 127.0.0.1").wait_for()
        row.get_by_text("1/1 healthy").wait_for()
        browser.go("/servers/named")
        page.locator('tr[data-discovered="named@127.0.0.1"]').get_by_text(
            f"127.0.0.1:{ok.port}"
        ).wait_for()
        browser.screenshot("server-discovered")

        browser.go("/clusters/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("found")
        page.get_by_label("Load balancing").select_option("weighted-round-robin")
        page.get_by_text("Enable dns discovery").click()
        page.get_by_label("DNS name (SRV)").fill("_http._tcp.users.service.internal")
        page.get_by_label("Health check path").fill("/health")
        browser.submit("Create cluster")
        page.get_by_role("heading", name="Clusters", level=1).wait_for()
        cluster = gateway.admin("GET", "/api/v1/clusters/found")
        assert cluster["servers"] == []
        assert cluster["discovery"]["dns"] == "_http._tcp.users.service.internal"
        assert cluster["discovery"]["healthCheck"]["path"] == "/health"
        found = page.locator('tr[data-name="found"]')
        found.get_by_text("_http._tcp.users.service.internal").wait_for()
        browser.screenshot("clusters-discovery")
        browser.go("/clusters/found/edit")
        page.get_by_role("heading", name="Discovered servers").wait_for()
        assert page.get_by_label("DNS name (SRV)").input_value() == cluster["discovery"]["dns"]
        browser.screenshot("cluster-discovery-form")

    def test_deleteFromTheList(self, browser: Browser) -> None:
        """
        Deleting asks first; a cluster still used by an API is refused with
        the admin's reason, an unused one is removed.
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/d1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/used", {"servers": ["d1"]})
        gateway.admin("PUT", "/api/v1/clusters/unused", {"servers": ["d1"]})
        gateway.admin(
            "PUT",
            "/api/v1/apis/user-of-used",
            {"urlPattern": "/ui/d", "nodes": [{"cluster": "used"}]},
        )
        browser.login()
        browser.go("/clusters")

        page.get_by_role("button", name="Delete cluster used", exact=True).click()
        dialog = page.get_by_role("dialog")
        assert "Delete cluster used?" in dialog.inner_text()
        dialog.get_by_role("button", name="Delete").click()
        page.get_by_text("Cannot delete cluster used: cluster 'used' is still used by").wait_for()
        assert gateway.admin("GET", "/api/v1/clusters/used")["name"] == "used"

        page.get_by_role("button", name="Delete cluster unused", exact=True).click()
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
        assert page.locator('tr[data-name="unused"]').is_visible()
        page.get_by_role("button", name="Delete cluster unused", exact=True).click()
        page.get_by_role("dialog").get_by_role("button", name="Delete").click()
        page.locator('tr[data-name="unused"]').wait_for(state="detached")
        answer = request(
            "GET",
            gateway.adminURL + "/api/v1/clusters/unused",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status == 404

    def test_consumerCredentials(self, browser: Browser) -> None:
        """
        A consumer is created through its page with a generated API key and
        a password: each secret is shown once after saving (not on a second
        visit), the admin holds neither, the key authenticates through the
        proxy; revoking the key on the edit page makes the proxy refuse it;
        a key added there is shown once and taken.
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/c1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/consumers-ui", {"servers": ["c1"]})
        gateway.admin(
            "PUT",
            "/api/v1/apis/keyed",
            {
                "urlPattern": "/echo/keyed",
                "nodes": [{"cluster": "consumers-ui"}],
                "auth": {"methods": ["key", "basic"]},
            },
        )
        browser.login()
        browser.nav("Consumers")
        page.get_by_role("link", name="New consumer").first.click()
        page.get_by_role("textbox", name="Name", exact=True).fill("ui-alice")
        page.get_by_label("Groups").fill("gold, staff")
        page.get_by_role("button", name="Generate").first.click()
        key = page.get_by_label("API key").input_value()
        assert len(key) == 48
        page.get_by_role("button", name="Add credential").click()
        page.get_by_label("Type").select_option("basic")
        page.get_by_label("User name").fill("ui-alice")
        page.get_by_label("Password").fill("a password of the UI test")
        page.get_by_role("button", name="Add credential").click()
        assert page.locator("tr.credential").count() == 2
        browser.submit("Create consumer")
        page.get_by_role("heading", name="Consumer ui-alice saved").wait_for()
        shown = page.locator(".secret-value").all_inner_texts()
        assert shown == [key, "a password of the UI test"]
        browser.screenshot("consumer-secret-once")

        stored = gateway.admin("GET", "/api/v1/consumers/ui-alice")
        assert stored["groups"] == ["gold", "staff"]
        assert [c["type"] for c in stored["credentials"]] == ["key", "basic"]
        assert key not in json.dumps(stored) and "a password" not in json.dumps(stored)
        sendUntil(gateway, "/echo/keyed", 401, "the API to serve")
        answer = request("GET", gateway.proxyURL + "/echo/keyed", headers={"apikey": key})
        assert answer.status == 200
        assert answer.json()["headers"]["x-consumer-name"] == ["ui-alice"]

        browser.go("/consumers")
        page.get_by_role("heading", name="Consumers", level=1).wait_for()
        browser.go("/consumers/ui-alice/created")
        page.get_by_text("Secrets are shown only once").wait_for()
        assert page.locator(".secret-value").count() == 0

        browser.go("/consumers/ui-alice/edit")
        page.locator('tr.credential[data-type="key"]').wait_for()
        keyId = stored["credentials"][0]["id"]
        page.get_by_role("button", name=f"Revoke credential {keyId}").click()
        browser.submit("Save changes")
        page.get_by_role("heading", name="Consumers", level=1).wait_for()
        after = gateway.admin("GET", "/api/v1/consumers/ui-alice")
        assert after["credentials"] == stored["credentials"][1:]
        waitFor(
            lambda: (
                request("GET", gateway.proxyURL + "/echo/keyed", headers={"apikey": key}).status
                == 401
            ),
            10.0,
            0.1,
            "the revoked key to be refused",
        )

        # A credential added to the existing consumer: its secret shown once,
        # then it authenticates.
        browser.go("/consumers/ui-alice/edit")
        page.locator('tr.credential[data-type="basic"]').wait_for()
        page.get_by_role("button", name="Generate").first.click()
        newKey = page.get_by_label("API key").input_value()
        assert len(newKey) == 48 and newKey != key
        page.get_by_role("button", name="Add credential").click()
        assert page.locator("tr.credential").count() == 2
        browser.submit("Save changes")
        page.get_by_role("heading", name="Consumer ui-alice saved").wait_for()
        assert page.locator(".secret-value").all_inner_texts() == [newKey]
        later = gateway.admin("GET", "/api/v1/consumers/ui-alice")
        assert [c["type"] for c in later["credentials"]] == ["basic", "key"]
        assert newKey not in json.dumps(later)
        waitFor(
            lambda: (
                request("GET", gateway.proxyURL + "/echo/keyed", headers={"apikey": newKey}).status
                == 200
            ),
            10.0,
            0.1,
            "the added key to be taken",
        )
        browser.screenshot("consumers")

    def test_apiAuthSettings(self, browser: Browser) -> None:
        """
        An API's authentication and ACL are set through the API form (the
        methods in order, the JWT settings, the groups) and stored as
        entered; an ACL without authentication is refused, the error shown
        on the form.
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/a1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/auth-ui", {"servers": ["a1"]})
        browser.login()
        browser.go("/apis/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("guarded-ui")
        page.get_by_label("URL pattern").fill("/ui/guarded")
        page.get_by_label("Node 1 cluster").select_option("auth-ui")
        page.get_by_text("Authentication and ACL").click()
        page.get_by_text("Enable acl").click()
        page.get_by_label("Allow groups").fill("gold")
        browser.submit("Create API")
        page.get_by_text("an ACL decides by the consumer's groups").first.wait_for()
        page.get_by_text("Enable authentication").click()
        page.get_by_role("checkbox", name="JWT (Bearer)").check()
        assert page.get_by_label("Order").input_value() == "key, jwt"
        page.get_by_label("Audiences").fill("orders")
        browser.screenshot("api-auth")
        browser.submit("Create API")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        api = gateway.admin("GET", "/api/v1/apis/guarded-ui")
        assert api["auth"]["methods"] == ["key", "jwt"]
        assert api["auth"]["jwt"]["audiences"] == ["orders"]
        assert api["acl"] == {"allow": ["gold"], "deny": []}
        assert gateway.proxy("/ui/guarded").status == 401

    def test_apiCache(self, browser: Browser) -> None:
        """
        An API's response cache is set through the API form: a varyOn of
        consumer without authentication is refused next to its input; the
        fixed cache is stored as entered and the proxy answers from it; the
        APIs list shows its hit ratio, the API page what the cache did, and
        its Purge button empties it (the next request is a miss).
        """
        page, gateway = browser.page, browser.gateway
        gateway.admin("PUT", "/api/v1/servers/k1", {"addr": browser.backends["ok"].addr})
        gateway.admin("PUT", "/api/v1/clusters/cache-ui", {"servers": ["k1"]})
        browser.login()
        browser.go("/apis/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("cached-ui")
        page.get_by_label("URL pattern").fill("/ui/cached/*")
        page.get_by_label("Node 1 cluster").select_option("cache-ui")
        page.get_by_label("Node 1 URL rewrite").fill("/echo/{*}")
        page.locator("summary", has_text="Response cache").click()
        page.get_by_text("Enable response cache").click()
        page.get_by_label("TTL (s)").fill("120")
        page.get_by_label("Vary on").fill("header:Accept-Language\nconsumer")
        browser.submit("Create API")
        assert "consumer needs auth" in browser.errorNextTo("cache.varyOn")
        page.get_by_label("Vary on").fill("header:Accept-Language")
        page.get_by_label("Collapse wait (s)").fill("2")
        browser.submit("Create API")
        page.get_by_role("heading", name="APIs", level=1).wait_for()
        saved = gateway.admin("GET", "/api/v1/apis/cached-ui")
        assert saved["cache"] == {
            "ttl": 120,
            "maxBodySize": 1048576,
            "varyOn": ["header:Accept-Language"],
            "store": "memory",
            "keepStale": 300,
            "collapseTimeout": 2,
            "requestCacheControl": "ignore",
        }
        sendUntil(gateway, "/ui/cached/x", 200, "the cached API to serve")
        for _ in range(3):
            answer = gateway.proxy("/ui/cached/x")
            assert (answer.header("cache-status") or "").startswith("gateway; hit"), answer.headers
        row = page.locator("tr", has=page.get_by_role("link", name="cached-ui", exact=True))
        row.get_by_text("cache 120s").wait_for()
        page.wait_for_function(
            """() => [...document.querySelectorAll("td.num")].some(
                (td) => /^[1-9][0-9.]*%$/.test(td.textContent)
                    && td.closest("tr").textContent.includes("cached-ui"))"""
        )
        browser.go("/apis/cached-ui/edit")
        summary = page.locator("[data-cache-summary]")
        summary.get_by_text("hits").wait_for()
        assert "hit ratio" in summary.inner_text()
        browser.screenshot("api-cache")
        page.get_by_role("button", name="Purge cache").click()
        page.get_by_text("Purged the cache of cached-ui").wait_for()
        miss = gateway.proxy("/ui/cached/x")
        assert miss.header("cache-status") == "gateway; fwd=uri-miss; stored", miss.headers

    def test_certificatesPage(self, browser: Browser) -> None:
        """
        A certificate pasted into the form is created; the list shows its
        SNIs, subject and expiry (never its key); editing it shows an empty
        key field, and saving without a key keeps the stored one; a server's
        TLS section names it as the client certificate, and an invalid key
        is shown next to the key field.
        """
        from tlsfixtures import CertificateAuthority

        page, gateway = browser.page, browser.gateway
        ca = CertificateAuthority()
        issued = ca.issue(["ui.example.com"], days=10)
        other = ca.issue(["other.example.com"])
        browser.login()
        browser.nav("Certificates")
        page.get_by_role("link", name="New certificate").first.click()
        page.get_by_role("textbox", name="Name", exact=True).fill("ui-cert")
        page.get_by_label("SNIs").fill("ui.example.com, *.ui.example.org")
        page.get_by_label("Certificate chain (PEM)").fill(issued.chain)
        page.get_by_label("Private key (PEM)").fill(other.keyPEM)
        browser.submit("Create certificate")
        assert "does not match cert" in browser.errorNextTo("key")
        page.get_by_label("Private key (PEM)").fill(issued.keyPEM)
        browser.submit("Create certificate")
        page.get_by_role("heading", name="Certificates", level=1).wait_for()
        row = page.locator('tr[data-name="ui-cert"]')
        row.get_by_text("CN=ui.example.com").wait_for()
        assert "*.ui.example.org" in row.inner_text()
        expiry = row.locator(".expiry").inner_text()
        assert "in 9 days" in expiry or "in 10 days" in expiry, expiry
        assert "PRIVATE KEY" not in page.content()
        browser.screenshot("certificates")

        browser.go("/certificates/ui-cert/edit")
        key = page.get_by_label("Private key (PEM)")
        key.wait_for()
        assert key.input_value() == ""
        page.get_by_label("SNIs").fill("ui.example.com")
        browser.submit("Save changes")
        page.get_by_role("heading", name="Certificates", level=1).wait_for()
        stored = gateway.admin("GET", "/api/v1/certificates/ui-cert")
        assert stored["snis"] == ["ui.example.com"] and "key" not in stored

        browser.go("/servers/new")
        page.get_by_role("textbox", name="Name", exact=True).fill("secure1")
        page.get_by_label("Address").fill("127.0.0.1:8443")
        page.get_by_text("Enable tls").click()
        page.get_by_label("Server name").fill("backend.internal")
        page.get_by_label("Client certificate").select_option("ui-cert")
        browser.submit("Create server")
        page.get_by_role("heading", name="secure1", level=1).wait_for()
        page.get_by_role("link", name="ui-cert").wait_for()
        server = gateway.admin("GET", "/api/v1/servers/secure1")
        assert server["tls"] == {
            "verify": True,
            "ca": None,
            "serverName": "backend.internal",
            "clientCertificate": "ui-cert",
        }

    def test_proxiesShowWorkers(self, browser: Browser) -> None:
        """
        The Proxies page shows this gateway as serving, and, for a gateway
        of workers, how many serve: one restarting (or unable to start) as
        a warning naming it, the gateway still serving (the other worker
        does).
        (The second answer is a worker gateway's, as the admin gives it,
        served to the page in place of this one-process gateway's.)
        """
        page = browser.page
        browser.login()
        browser.nav("Proxies")
        page.get_by_role("heading", name="Proxies", level=1).wait_for()
        page.get_by_text("serving", exact=True).wait_for()
        workers = [
            {"worker": 0, "pid": 4242, "revision": 7, "ready": True},
            {"worker": 1, "pid": None, "revision": None, "ready": False},
        ]
        record = {"addr": "127.0.0.1:8080", "version": "0.1.0", "ready": True, "revision": 7}
        record["workers"] = workers
        page.route(
            "**/api/v1/proxies",
            lambda route: route.fulfill(
                status=200, content_type="application/json", body=json.dumps([record])
            ),
        )
        browser.go("/")
        browser.nav("Proxies")
        cell = page.locator('[data-workers="some"]')
        cell.wait_for()
        assert cell.inner_text() == "1 of 2 serving", cell.inner_text()
        assert "worker 1" in (cell.locator(".badge").get_attribute("title") or "")
        row = page.locator("tr", has=cell)
        assert row.locator(".badge-ok").inner_text() == "serving"

    def test_websocketAPI(self, browser: Browser, tmp_path: Path) -> None:
        """
        WebSocket pass-through in the UI: an API made a WebSocket one
        through the form is stored so (an invalid idle timeout is named next
        to its input); the API list marks it and shows its open tunnels
        live, and the dashboard their total.
        """
        from websockets.sync.client import connect

        page, gateway = browser.page, browser.gateway
        echo = startWebSocketBackend(tmp_path)
        try:
            gateway.admin("PUT", "/api/v1/servers/wsb", {"addr": echo.addr})
            gateway.admin("PUT", "/api/v1/clusters/wsc", {"servers": ["wsb"]})
            browser.login()
            browser.go("/apis/new")
            page.get_by_role("textbox", name="Name", exact=True).fill("chat")
            page.get_by_label("URL pattern").fill("/ui/chat")
            page.get_by_label("Node 1 cluster").select_option("wsc")
            assert page.get_by_label("Idle timeout (s)").is_hidden()
            page.get_by_label("Relay WebSocket connections").check()
            page.get_by_label("Idle timeout (s)").fill("-1")
            page.get_by_label("Max open").fill("5")
            browser.screenshot("api-form-websocket")
            browser.submit("Create API")
            assert browser.errorNextTo("websocketIdleTimeout") == "must be at least 0"
            page.get_by_label("Idle timeout (s)").fill("120")
            browser.submit("Create API")
            page.get_by_role("heading", name="APIs", level=1).wait_for()
            saved = gateway.admin("GET", "/api/v1/apis/chat")
            assert (saved["websocket"], saved["websocketIdleTimeout"], saved["maxWebsockets"]) == (
                True,
                120,
                5,
            )
            row = page.locator('tr[data-name="chat"]')
            row.get_by_text("WebSocket", exact=True).wait_for()
            tunnels = row.locator('span[title^="open tunnels"]')
            url = gateway.proxyURL.replace("http://", "ws://", 1) + "/ui/chat"
            with connect(url, proxy=None, ping_interval=None, open_timeout=10) as ws:
                ws.send("hi")
                assert ws.recv(timeout=10) == "hi"
                page.wait_for_function(
                    "() => document.querySelector("
                    "'tr[data-name=chat] span[title^=\"open tunnels\"]')?.textContent === '1'"
                )
                assert "1 opened" in (tunnels.get_attribute("title") or "")
                browser.screenshot("apis-websocket")
                browser.go("/")
                page.wait_for_function(
                    "() => document.querySelector('[data-kpi=websockets]')?.textContent === '1'"
                )
            page.wait_for_function(
                "() => document.querySelector('[data-kpi=websockets]')?.textContent === '0'"
            )
        finally:
            echo.stop()


# Runs git: an integration test.
@pytest.mark.integration
def test_screenshotsFolderIgnored() -> None:
    """
    The screenshots land in a folder git ignores, so a test run leaves the
    working tree clean.
    """
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    done = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", str(SCREENSHOTS / "dashboard.png")],
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
