"""Real browser: headless Chromium runs the samples' pages against `python -m wsframe run`.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and Playwright's Python package
(``pip install -e '.[browser]'``); Playwright drives the system Chromium and never downloads a
browser. Screenshots go to ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.servers import ROOT, free_port, run_process, wsframe_run

pytestmark = pytest.mark.functional

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "tests" / "artifacts"
WAIT_MS = 10_000
"""How long the page may take to show something (ms); a real browser starting on a busy 2-core machine."""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (Playwright's async API driving the system's browser)."""
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("browser tests need Playwright: pip install -e '.[browser]'")
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"browser tests need Debian's chromium at {CHROMIUM}: apt-get install -y chromium")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    await context.close()


async def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def post_json(url: str, body: object) -> Any:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return await response.json()


CONNECTED = "document.getElementById('status').textContent.startsWith('Connected')"


def log_has(text: str) -> str:
    return f"document.getElementById('log').textContent.includes({text!r})"


async def test_book_page_runs_the_seed_client_and_gets_the_echo(page: Any) -> None:
    port = free_port()
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    with run_process(wsframe_run("samples.book.main:app", port), port):
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function(log_has("Received: Hello, server!"))
        shot = await screenshot(page, "book")
        log = (await page.inner_text("#log")).splitlines()
    assert "Received: Hello, server!" in console
    assert log[:2] == ["Connected", "Received: Hello, server!"]
    assert shot.stat().st_size > 0


SEED_CLIENT = """
const ws = new WebSocket('ws://localhost:8000/ws/book/');
ws.onopen = () => {
    ws.send('Hello, server!');
};
ws.onmessage = (event) => {
    console.log('Received:', event.data);
};
ws.onclose = () => {
    console.log('Connection closed');
};
"""
"""The seed's example client, verbatim: it names localhost:8000, whatever page it runs on."""


def wait_until_port_is_free(port: int, seconds: float = 30.0) -> None:
    """The seed's client names port 8000; another test run on this machine may hold it for a while."""
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as sock:
            # As the server will: a port whose last connections linger in TIME_WAIT is free to listen on.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"port {port} stayed busy for {seconds} s; the seed's client needs it")
        time.sleep(0.5)


async def test_seed_client_verbatim_on_the_readme_page_gets_its_echo(page: Any) -> None:
    """The README's page is http://127.0.0.1:8000/; the seed's client dials localhost: one origin."""
    wait_until_port_is_free(8000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    with run_process(wsframe_run("samples.book.main:app", 8000), 8000):
        await page.goto("http://127.0.0.1:8000/")
        await page.wait_for_function(log_has("Received: Hello, server!"))  # the page's own client
        async with page.expect_console_message(lambda m: m.text == "Received: Hello, server!") as echo:
            # A <script> as a user would paste it; the braces keep its `const ws` apart from the page's.
            await page.add_script_tag(content="{" + SEED_CLIENT + "}")
        message = await echo.value
    assert message.text == "Received: Hello, server!"
    assert console.count("Received: Hello, server!") == 2  # the page's client, then the seed's
    assert "Connection closed" not in console


async def test_book_page_echoes_what_the_user_types(page: Any) -> None:
    port = free_port()
    with run_process(wsframe_run("samples.book.main:app", port), port):
        await page.goto(f"http://127.0.0.1:{port}/")
        await page.wait_for_function(log_has("Received: Hello, server!"))
        await page.fill("#text", "typed in a browser")
        await page.click("button")
        await page.wait_for_function(log_has("typed in a browser"))
        log = (await page.inner_text("#log")).splitlines()
    assert log[-1] == "Received: typed in a browser"


async def test_notifications_page_shows_a_notification_posted_over_http(page: Any) -> None:
    port = free_port()
    with run_process(wsframe_run("samples.notifications.main:app", port), port):
        await page.goto(f"http://127.0.0.1:{port}/?user=5")
        await page.wait_for_function(CONNECTED)
        answer = await post_json(f"http://127.0.0.1:{port}/notify/5/", {"title": "Your book is ready"})
        await page.wait_for_selector("#notifications li")
        shot = await screenshot(page, "notifications")
        shown = await page.inner_text("#notifications li")
    assert answer == {"sent": 1}
    assert shown == "Your book is ready"
    assert shot.stat().st_size > 0


async def test_notifications_reach_every_tab_of_the_user_only(browser: Any) -> None:
    port = free_port()
    context = await browser.new_context()
    try:
        tabs = [await context.new_page() for _ in range(3)]
        with run_process(wsframe_run("samples.notifications.main:app", port), port):
            for tab, user in zip(tabs, (5, 5, 6), strict=True):
                tab.set_default_timeout(WAIT_MS)
                await tab.goto(f"http://127.0.0.1:{port}/?user={user}")
                await tab.wait_for_function(CONNECTED)
            answer = await post_json(f"http://127.0.0.1:{port}/notify/5/", {"title": "for user 5"})
            for tab in tabs[:2]:
                await tab.wait_for_selector("#notifications li")
            # The POST returned after both sends; user 6's tab would have it by the time
            # user 5's tabs show theirs, so an empty list here means nothing was sent to it.
            assert [await tab.locator("#notifications li").count() for tab in tabs] == [1, 1, 0]
        assert answer == {"sent": 2}
    finally:
        await context.close()


async def test_notifications_form_on_the_page_notifies_the_user(page: Any) -> None:
    port = free_port()
    with run_process(wsframe_run("samples.notifications.main:app", port), port):
        await page.goto(f"http://127.0.0.1:{port}/?user=8")
        await page.wait_for_function(CONNECTED)
        await page.fill("#title", "sent from the page")
        await page.click("button")
        await page.wait_for_selector("#notifications li")
        shown = await page.inner_text("#notifications li")
    assert shown == "sent from the page"


async def join_chat(page: Any, port: int, name: str) -> None:
    await page.goto(f"http://127.0.0.1:{port}/")
    await page.fill("#room", "lobby")
    await page.fill("#name", name)
    await page.click("#join button")
    await page.wait_for_function("document.getElementById('status').textContent.startsWith('In room lobby')")


def chat_log_has(text: str) -> str:
    return f"[...document.querySelectorAll('#log div')].some((d) => d.textContent === {text!r})"


async def test_chat_two_pages_in_a_room_see_each_others_messages(browser: Any) -> None:
    port = free_port()
    context = await browser.new_context(viewport={"width": 900, "height": 600})
    try:
        ada, bob = await context.new_page(), await context.new_page()
        for page in (ada, bob):
            page.set_default_timeout(WAIT_MS)
        with run_process(wsframe_run("samples.chat.main:app", port), port):
            await join_chat(ada, port, "ada")
            await join_chat(bob, port, "bob")
            await ada.wait_for_function(chat_log_has("bob joined"))
            await ada.fill("#text", "hello bob")
            await ada.click("#say button")
            await bob.wait_for_function(chat_log_has("ada: hello bob"))
            await bob.fill("#text", "hi ada")
            await bob.click("#say button")
            await ada.wait_for_function(chat_log_has("bob: hi ada"))
            await ada.wait_for_function("document.getElementById('status').textContent.endsWith('2 online')")
            shot = await screenshot(ada, "chat")
            ada_log = await ada.locator("#log div").all_inner_texts()
            bob_log = await bob.locator("#log div").all_inner_texts()
        assert ada_log[-2:] == ["ada: hello bob", "bob: hi ada"]
        assert bob_log[-2:] == ["ada: hello bob", "bob: hi ada"]
        assert shot.stat().st_size > 0
    finally:
        await context.close()
