"""The pages in a real headless Chromium, driven by Playwright against a real tree.

Screenshots of every page go to test-artifacts/screenshots/ (not committed); the
profile page is also written to docs/screenshots/profile.png for the README.
"""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image, ImageDraw
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from tests.integration.conftest import sign_up_and_log_in
from tests.integration.pages import stored_files
from tests.integration.tree import ROOT, Tree, free_port, running_tree

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "screenshots"
DOC_SHOT = ROOT / "docs" / "screenshots" / "profile.png"
PASSWORD = "correct horse battery"


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def watch_console(page: Page) -> list[str]:
    """Script errors and CSP violations, so a test can demand there are none.

    "Failed to load resource" lines are left out: the 4xx answers of re-rendered
    forms (and the favicon's 404) are expected.
    """
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def picture_file(directory: Path) -> Path:
    img = Image.new("RGB", (480, 360), (40, 90, 160))
    draw = ImageDraw.Draw(img)
    for i in range(0, 480, 40):
        draw.rectangle((i, 0, i + 19, 359), fill=(240, 180, 60))
    draw.ellipse((140, 80, 340, 280), fill=(250, 250, 250))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    path = directory / "holiday.png"
    path.write_bytes(buf.getvalue())
    return path


async def log_in(page: Page, base_url: str, username: str, password: str) -> None:
    await page.goto(f"{base_url}/login")
    await page.fill("#username", username)
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base_url}/profile")


async def api_account(base_url: str) -> tuple[str, str]:
    async with aiohttp.ClientSession(base_url=base_url) as http:
        account = await sign_up_and_log_in(http)
    return account.username, account.password


# -- the whole journey ---------------------------------------------------------------------


async def test_whole_journey_in_a_real_browser(tree: Tree, tmp_path: Path) -> None:
    base = tree.base_url
    username = "ada.lovelace"  # a fresh tree per test session, so the name is free
    picture = picture_file(tmp_path)
    async with chromium() as browser:
        context = await browser.new_context(viewport={"width": 1100, "height": 800})
        page = await context.new_page()
        console_errors = watch_console(page)

        # Sign up, with one mistake first: the error shows next to its field.
        await page.goto(f"{base}/signup")
        await shot(page, "01-signup")
        await page.fill("#username", username)
        await page.fill("#nickname", "Ada")
        await page.fill("#password", "short")
        await page.click("button[type=submit]")
        await expect(page.locator("#password-error")).to_have_text(
            "Password must be 8 to 128 characters long."
        )
        await expect(page.locator("#username")).to_have_value(username)
        await shot(page, "02-signup-error")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")

        # Log in.
        await expect(page).to_have_url(f"{base}/login?m=signed_up&username={username}")
        await expect(page.locator(".flash")).to_have_text(
            "Your account is ready. Log in to continue."
        )
        await expect(page.locator("#username")).to_have_value(username)
        await page.fill("#password", "wrong password!")
        await page.click("button[type=submit]")
        await expect(page.locator("#form-error")).to_have_text("Wrong username or password.")
        await shot(page, "03-login-error")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await expect(page).to_have_url(f"{base}/profile")
        await expect(page.locator("h1")).to_have_text("Ada")
        await expect(page.locator(".username")).to_have_text(f"@{username}")
        await expect(page.locator(".since")).to_contain_text("Member since")
        await shot(page, "04-profile")

        # Change the nickname; a bad one first.
        await page.fill("#nickname", "   ")
        await page.get_by_role("button", name="Save nickname").click()
        await expect(page.locator("#nickname-error")).to_be_visible()
        await page.fill("#nickname", "Ada <b>Lovelace</b>")
        await page.get_by_role("button", name="Save nickname").click()
        await expect(page.locator(".flash")).to_have_text("Your nickname has been changed.")
        await expect(page.locator("h1")).to_have_text("Ada <b>Lovelace</b>")

        # Upload a picture: the preview appears before anything is sent.
        before = stored_files(tree.var)
        await page.set_input_files("#avatar-input", str(picture))
        await expect(page.locator("#avatar-preview")).to_be_visible()
        await expect(page.locator("#avatar-preview-note")).to_contain_text("Preview")
        assert stored_files(tree.var) == before, "the preview sends nothing"
        await shot(page, "05-profile-preview")
        await page.get_by_role("button", name="Upload picture").click()
        await expect(page.locator(".flash")).to_have_text("Your new picture has been saved.")

        # See it on the profile.
        avatar = page.locator("img#avatar")
        await expect(avatar).to_be_visible()
        assert await avatar.evaluate("img => img.complete && img.naturalWidth") == 480
        src = await avatar.get_attribute("src")
        assert src and src.startswith("/avatars/") and src.endswith(".jpg")
        served = await page.request.get(f"{base}{src}")
        assert served.headers["content-type"] == "image/jpeg"
        assert "immutable" in served.headers["cache-control"]
        key = src.removeprefix("/avatars/")
        assert (tree.var / "avatars" / key[:2] / key[2:4] / key).is_file()
        await shot(page, "06-profile")
        if not DOC_SHOT.exists() or os.environ.get("USERHUB_UPDATE_DOC_SCREENSHOTS") == "1":
            # Only on request, so that a test run does not leave the work tree changed.
            DOC_SHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(DOC_SHOT), full_page=True)

        # The same page on a phone: nothing wider than the screen.
        phone = await browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            storage_state=await context.storage_state(),
        )
        phone_page = await phone.new_page()
        await phone_page.goto(f"{base}/profile")
        await expect(phone_page.locator("h1")).to_have_text("Ada <b>Lovelace</b>")
        width = await phone_page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, width
        await shot(phone_page, "07-profile-phone")
        await phone.close()

        # Log out; the profile page then sends the browser to log in.
        await page.click("#logout")
        await expect(page).to_have_url(f"{base}/login?m=logged_out")
        await expect(page.locator(".flash")).to_have_text("You have been logged out.")
        await shot(page, "08-logged-out")
        await page.goto(f"{base}/profile")
        await expect(page).to_have_url(f"{base}/login?m=login_required")
        await expect(page.locator(".flash")).to_have_text("Please log in to see your profile.")
        await shot(page, "09-profile-after-log-out")
        assert console_errors == [], console_errors
        await context.close()


async def test_the_pages_work_without_javascript(tree: Tree, tmp_path: Path) -> None:
    base = tree.base_url
    username, password = await api_account(base)
    async with chromium() as browser:
        context = await browser.new_context(java_script_enabled=False)
        page = await context.new_page()
        await log_in(page, base, username, password)
        await page.fill("#nickname", "No Script")
        await page.get_by_role("button", name="Save nickname").click()
        await expect(page.locator("h1")).to_have_text("No Script")
        await page.set_input_files("#avatar-input", str(picture_file(tmp_path)))
        await expect(page.locator("#avatar-preview")).to_be_hidden()
        await page.get_by_role("button", name="Upload picture").click()
        await expect(page.locator("img#avatar")).to_be_visible()
        await shot(page, "10-profile-without-javascript")
        await page.click("#logout")
        await expect(page).to_have_url(f"{base}/login?m=logged_out")
        await context.close()


# -- cross-site request forgery ------------------------------------------------------------


@asynccontextmanager
async def attacker_site(target: str) -> AsyncIterator[str]:
    """A page on another site (localhost is not 127.0.0.1) that posts a form to ``target``."""
    html = f"""<!doctype html><title>Win a prize</title>
<form method="post" action="{target}/profile/nickname">
<input name="nickname" value="pwned"><input name="csrf_token" value="{"A" * 43}">
</form><script>document.forms[0].submit()</script>"""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", index)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://localhost:{port}/"
    finally:
        await runner.cleanup()


async def test_a_cross_site_form_post_is_refused(tree: Tree) -> None:
    base = tree.base_url
    username, password = await api_account(base)
    async with chromium() as browser, attacker_site(base) as evil:
        page = await browser.new_page()
        await log_in(page, base, username, password)
        await page.goto(evil)
        await expect(page).to_have_url(f"{base}/profile/nickname")
        await expect(page.locator("h1")).to_have_text("This form could not be accepted")
        await shot(page, "11-cross-site-post-refused")
        await page.goto(f"{base}/profile")
        await expect(page.locator("h1")).to_have_text("Tester")  # unchanged, still logged in


# -- session expiry ------------------------------------------------------------------------

IDLE_S = 3
ABSOLUTE_S = 9


@pytest.fixture(scope="module")
def short_tree() -> Iterator[Tree]:
    """A second tree whose sessions end after 3 s idle and 9 s in all."""
    with running_tree(
        USERHUB_SESSION_IDLE_S=str(IDLE_S),
        USERHUB_SESSION_ABSOLUTE_S=str(ABSOLUTE_S),
        USERHUB_SESSION_TOUCH_S="1",
        USERHUB_GATEWAYS="1",
        USERHUB_DB_WORKERS="1",
        USERHUB_CACHE_WORKERS="1",
    ) as t:
        yield t


async def test_an_idle_session_sends_the_page_back_to_log_in(short_tree: Tree) -> None:
    base = short_tree.base_url
    username, password = await api_account(base)
    async with chromium() as browser:
        page = await browser.new_page()
        await log_in(page, base, username, password)
        await asyncio.sleep(IDLE_S + 1.5)
        await page.reload()
        await expect(page).to_have_url(f"{base}/login?m=expired")
        await expect(page.locator(".flash")).to_have_text(
            "Your session has expired, please log in again."
        )
        await shot(page, "12-session-expired")

        # A form sent after the session went idle is not applied, and says why.
        await log_in(page, base, username, password)
        await asyncio.sleep(IDLE_S + 1.5)
        await page.fill("#nickname", "Too Late")
        await page.get_by_role("button", name="Save nickname").click()
        await expect(page).to_have_url(f"{base}/login?m=expired")
        await log_in(page, base, username, password)
        await expect(page.locator("h1")).to_have_text("Tester")


async def test_an_active_session_still_ends_at_the_absolute_limit(short_tree: Tree) -> None:
    base = short_tree.base_url
    username, password = await api_account(base)
    async with chromium() as browser:
        page = await browser.new_page()
        loop = asyncio.get_running_loop()
        await log_in(page, base, username, password)
        started = loop.time()
        ended_after = None
        while loop.time() - started < ABSOLUTE_S + 4:
            await asyncio.sleep(1)
            await page.goto(f"{base}/profile")
            if "/login" in page.url:
                ended_after = loop.time() - started
                break
        assert ended_after is not None, "the session never ended"
        # Active use kept it past the idle limit, but not past the absolute one.
        assert IDLE_S + 1 < ended_after <= ABSOLUTE_S + 2, ended_after
        await expect(page).to_have_url(f"{base}/login?m=expired")
