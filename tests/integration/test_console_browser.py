"""The operator console in a real headless browser: Debian's chromium driven by Playwright
(launched with `executable_path`, no browser download), against an in-process gateway and
worker on a free port with the real RabbitMQ, a SQLite ledger and the scripted provider.

A notification the provider refuses for good (its first answer) is a dead letter; the
operator signs in (a wrong key first, refused), finds it in the table, presses Replay and
sees it delivered (the provider's second answer) and gone from the table. A POST whose
CSRF token was taken out of the form is refused and moves nothing. The screenshots in
docs/img are taken here, so the README shows the console as it is.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import queue_size, wait_for
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import NotificationEvent, NotificationRecord
from wa_gateway.ledger.schema import upgrade
from wa_gateway.provider import PermanentError

playwright_api = pytest.importorskip("playwright.async_api")

ADMIN_KEY = "console-" + "b" * 24
NUMBER = "+6281234567890"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
REFUSAL = "(#131026) Message undeliverable: the number is not on WhatsApp"


def chromium() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("no chromium on this machine: `scripts/ensure-service.sh chromium` installs it "
                    "(make test-integration does)")
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium(), headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def test_an_operator_replays_a_dead_letter_in_the_browser(
    browser, make_settings, start_gateway, start_worker, scripted, amqp
):
    settings = make_settings(gateway_admin_keys=[ADMIN_KEY], wa_provider="scripted", wa_allow_raw_targets=True)
    ledger = create_engine(settings.database_url)
    try:  # the day before the gateway starts, as its console first counts it then
        await upgrade(ledger, settings.database_url)
        await _history(ledger)
    finally:
        await ledger.dispose()
    client, services = await start_gateway(settings)
    await start_worker(services)
    scripted.script = [PermanentError(f"{REFUSAL} ({NUMBER})", provider_code=131026, provider_status=400)]
    posted = await client.post("/notify", json={"to": NUMBER, "text": "Pesanan #4711 siap diambil"})
    notification_id = (await posted.json())["id"]
    await wait_for(lambda: queue_size(amqp, services.topology.dead), timeout=15)
    base = str(client.make_url("/admin/"))
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))

    # a visitor is sent to the sign-in; a wrong key is refused
    await page.goto(base)
    assert page.url.endswith("/admin/sign-in")
    await page.get_by_label("Admin key").fill("not-" + ADMIN_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api.expect(page.get_by_role("alert")).to_contain_text("That is not an admin key")
    assert page.url.endswith("/admin/sign-in")

    # the right key: the overview
    await page.get_by_label("Admin key").fill(ADMIN_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api.expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    cookies = {c["name"]: c for c in await context.cookies()}
    assert cookies["wa_console"]["httpOnly"] and cookies["wa_console"]["sameSite"] == "Strict"

    # the dead letter, with its reason (number masked) and provider code
    await page.get_by_role("link", name="Dead letters").click()
    row = page.get_by_role("row").filter(has_text=notification_id)
    await playwright_api.expect(row).to_contain_text("131026")
    await playwright_api.expect(row).to_contain_text("+6281*******90")
    await playwright_api.expect(row).to_contain_text(REFUSAL)
    assert NUMBER not in await page.content()

    # a POST whose CSRF token was taken out of the form is refused, and nothing moves
    await page.locator('input[name="csrf"]').evaluate_all("inputs => inputs.forEach(i => i.remove())")
    await page.get_by_role("button", name="Replay all").click()
    await playwright_api.expect(page.get_by_role("alert")).to_contain_text("CSRF token is missing or wrong")
    assert await queue_size(amqp, services.topology.dead) == 1
    assert len(scripted.calls) == 1

    # Replay: delivered by the provider, gone from the table
    await page.goto(base + "dead-letters")
    await page.get_by_role("button", name=f"Replay {notification_id}").click()
    await playwright_api.expect(page.get_by_role("status")).to_contain_text("Replayed 1 dead letter.")
    await wait_for(lambda: len(scripted.calls) == 2, timeout=15)
    assert [call.id for call in scripted.calls] == [notification_id, notification_id]
    await page.reload()
    await playwright_api.expect(page.get_by_text(f"{services.topology.dead} is empty")).to_be_visible()
    assert notification_id not in await page.content()

    # its timeline: queued, dead, queued again, sent
    async def sent() -> bool:
        await page.goto(f"{base}notifications/{notification_id}")
        return "sent" in await page.locator("ol.timeline li").last.inner_text()

    await wait_for(sent, timeout=15, interval=0.3)
    steps = await page.locator("ol.timeline li .status").all_inner_texts()
    assert steps == ["queued", "dead", "queued", "sent"]
    await playwright_api.expect(page.locator("ol.timeline")).to_contain_text("replayed from the dead-letter queue")
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=DOCS_IMG / "console-timeline.png", full_page=True)

    # a provider's text is shown, never run
    await page.goto(f"{base}notifications/hostile-1")
    await playwright_api.expect(page.locator("ol.timeline")).to_contain_text("<script>alert(1)</script>")
    await page.goto(base)
    await playwright_api.expect(page.locator("figure.chart svg")).to_be_visible()
    await page.screenshot(path=DOCS_IMG / "console-overview.png", full_page=True)
    assert dialogs == []

    # signing out ends it
    await page.get_by_role("button", name="Sign out").click()
    assert page.url.endswith("/admin/sign-in")
    await page.goto(base + "channels")
    assert page.url.endswith("/admin/sign-in")
    await context.close()
    for name in ("console-overview.png", "console-timeline.png"):
        assert (DOCS_IMG / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def _history(engine: AsyncEngine | None) -> None:
    """A day of traffic in the ledger (bulk inserts), so the overview's chart has something
    to show, and one notification whose failure carries a script."""
    assert engine is not None
    now = datetime.now(UTC)
    rng = random.Random(14)
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def add(notification_id: str, created: datetime, status: str, steps: list[str], **extra: Any) -> None:
        rows.append({
            "id": notification_id, "channel": "default", "provider": "scripted", "to": "logistic",
            "target_kind": "group", "target_address": "120363195657916590@g.us", "event": None,
            "status": status, "provider_message_id": None, "attempts": 1, "error_code": None,
            "error_message": None, "created_at": created, "updated_at": created, "callback_url": None,
            **extra,
        })
        events.extend({
            "notification_id": notification_id, "at": created + timedelta(seconds=offset * 2), "status": step,
            "channel": "default", "provider": None, "code": extra.get("error_code"),
            "message": extra.get("error_message"), "attempt": None, "key": f"{notification_id}:{step}",
        } for offset, step in enumerate(steps))

    for hour in range(24):
        for _ in range(40 + int(35 * abs(12 - abs(hour - 12)) / 12) + rng.randint(0, 15)):
            created = min(now - timedelta(hours=23 - hour, minutes=rng.randint(0, 59)), now - timedelta(minutes=1))
            fate = rng.random()
            status = "dead" if fate < 0.02 else "failed" if fate < 0.06 else "delivered" if fate < 0.8 else "sent"
            steps = ["queued", "dead"] if status == "dead" else ["queued", "sent"]
            steps += ["delivered"] if status == "delivered" else ["failed"] if status == "failed" else []
            add(str(uuid.uuid4()), created, status, steps, to=rng.choice(["logistic", "purchase", "budi"]))
    add("hostile-1", now - timedelta(hours=30), "failed", ["failed"], to=NUMBER, target_kind="person",
        target_address=NUMBER, error_code="131047", error_message="<script>alert(1)</script>")
    async with engine.begin() as connection:
        await connection.execute(insert(NotificationRecord), rows)
        await connection.execute(insert(NotificationEvent), events)


# --- scripts/ensure-service.sh chromium: what `make test-integration` runs first ----------

ENSURE_SERVICE = Path(__file__).resolve().parents[2] / "scripts" / "ensure-service.sh"


def test_ensure_service_is_quiet_when_chromium_is_installed() -> None:
    result = subprocess.run([ENSURE_SERVICE, "chromium"], capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_ensure_service_without_chromium_nor_apt_get_is_one_line_saying_how(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("bash", "timeout", "sed", "tail", "tr", "id", "seq", "sleep", "grep"):
        (tools / tool).symlink_to(shutil.which(tool))  # type: ignore[arg-type]
    result = subprocess.run(
        [tools / "bash", ENSURE_SERVICE, "chromium"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60, check=False, env={"PATH": str(tools)},
    )
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "sudo apt-get install -y chromium" in line and "CHROMIUM" in line
