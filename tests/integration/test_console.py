"""The operator console at /admin, through aiohttp's test client against the real
RabbitMQ and a SQLite ledger: off without GATEWAY_ADMIN_KEYS; sign-in with a good and a
wrong key, the limit on failed sign-ins, sign-out, sessions of a removed key; every POST
refused without its CSRF token, and then nothing happens; each page renders with numbers
masked, secrets hidden and a provider's text escaped; purge needs its confirmation; replay
puts a dead letter back to be delivered; hostile input is a 4xx, never a 500.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from tests.conftest import queue_size, wait_for
from wa_gateway.console import stats
from wa_gateway.console.auth import Sessions, SignInLimiter
from wa_gateway.console.stats import HourlyChart, chart, hourly_counts
from wa_gateway.ledger.engine import create_engine
from wa_gateway.ledger.models import NotificationEvent, NotificationRecord
from wa_gateway.ledger.queries import encode_cursor
from wa_gateway.ledger.schema import upgrade
from wa_gateway.provider import PermanentError

ADMIN_KEY = "admin-" + "k" * 26
OTHER_KEY = "other-" + "q" * 26
NUMBER = "+6281234567890"
MASKED = "+6281*******90"
HOSTILE = "<script>alert(1)</script>"
PROVIDER_TOKEN = "EAAG" + "t0ken" * 8
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@pytest.fixture
async def console(make_settings, start_gateway, start_worker, scripted):
    """A gateway with the console on, the scripted provider and a worker; (client, services)."""
    settings = make_settings(
        gateway_admin_keys=[ADMIN_KEY, OTHER_KEY], wa_provider="scripted", wa_allow_raw_targets=True,
        wa_api_key=PROVIDER_TOKEN, raw_env={"META_APP_SECRET": "s3cret-app-secret-value"},
    )
    client, services = await start_gateway(settings)
    await start_worker(services)
    return client, services


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match is not None, html[:500]
    return match.group(1)


async def sign_in(client: Any, key: str = ADMIN_KEY) -> Any:
    form = await client.get("/admin/sign-in")
    return await client.post(
        "/admin/sign-in", data={"csrf": csrf_of(await form.text()), "key": key}, allow_redirects=False
    )


async def page(client: Any, path: str, status: int = 200) -> str:
    answer = await client.get(path, allow_redirects=False)
    text = await answer.text()
    assert answer.status == status, (path, answer.status, text[:800])
    return text


async def session_csrf(client: Any) -> str:
    return csrf_of(await page(client, "/admin/"))


async def post_notify(client: Any, to: str = NUMBER, text: str = "Halo") -> str:
    answer = await client.post("/notify", json={"to": to, "text": text})
    assert answer.status == 202, await answer.text()
    return (await answer.json())["id"]


async def ledger_status(client: Any, notification_id: str, status: str) -> bool:
    body = await (await client.get(f"/notify/{notification_id}")).json()
    return body.get("status") == status and [e["status"] for e in body.get("events", [])][-1:] == [status]


async def dead_letter(client: Any, scripted: Any, services: Any, message: str | None = None) -> str:
    """A notification the scripted provider refuses for good: it ends in the dead queue."""
    scripted.script = [PermanentError(
        message or f"{HOSTILE} nomor {NUMBER} tidak valid (token {PROVIDER_TOKEN})",
        provider_code=131026, provider_status=400,
    )]
    notification_id = await post_notify(client)
    await wait_for(lambda: ledger_status(client, notification_id, "dead"), timeout=15)
    return notification_id


def assert_safe(html: str) -> None:
    """Nothing raw from outside: no number, no script, no secret."""
    assert HOSTILE not in html
    assert NUMBER not in html and NUMBER[1:] not in html
    for secret in (PROVIDER_TOKEN, ADMIN_KEY, OTHER_KEY, "s3cret-app-secret-value"):
        assert secret not in html


# --- off, signing in and out ---------------------------------------------------------


async def test_without_admin_keys_the_console_is_a_404(make_settings, start_gateway):
    client, _ = await start_gateway(make_settings())
    for path in ("/admin", "/admin/", "/admin/sign-in", "/admin/static/console.css"):
        answer = await client.get(path, allow_redirects=False)
        assert answer.status == 404, path
        assert (await answer.json())["error"] == "not_found"
    assert (await client.post("/admin/sign-in", data={"key": ADMIN_KEY})).status == 404


async def test_pages_send_a_visitor_without_a_session_to_the_sign_in(console):
    client, _ = console
    for path in ("/admin", "/admin/", "/admin/notifications", "/admin/dead-letters", "/admin/channels",
                 "/admin/notifications/x", "/admin/nowhere"):
        answer = await client.get(path, allow_redirects=False)
        assert answer.status == 303, path
        assert answer.headers["Location"].startswith("/admin/"), path
    answer = await client.get("/admin/", allow_redirects=False)
    assert answer.headers["Location"] == "/admin/sign-in"
    refused = await client.post("/admin/dead-letters/purge", data={"confirm": "yes"}, allow_redirects=False)
    assert refused.status == 403
    assert "not signed in" in await refused.text()


async def test_signing_in_with_an_admin_key_gives_a_strict_http_only_session_cookie(console):
    client, _ = console
    form = await client.get("/admin/sign-in")
    assert form.status == 200
    html = await form.text()
    assert '<label for="key">Admin key</label>' in html and 'type="password"' in html

    answer = await client.post("/admin/sign-in", data={"csrf": csrf_of(html), "key": ADMIN_KEY},
                               allow_redirects=False)

    assert answer.status == 303 and answer.headers["Location"] == "/admin/"
    [cookie] = [c for c in answer.headers.getall("Set-Cookie") if c.startswith("wa_console=")]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= attributes
    assert "SameSite=Strict" in cookie and "Path=/admin" in cookie and "Max-Age=43200" in cookie
    assert "secure" not in attributes  # plain http without an https GATEWAY_PUBLIC_URL
    assert ADMIN_KEY not in cookie
    overview = await client.get("/admin/")
    assert overview.status == 200
    assert "<h1>Overview</h1>" in await overview.text()
    for name, value in {
        "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }.items():
        assert overview.headers[name] == value
    assert "default-src 'self'" in overview.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in overview.headers["Content-Security-Policy"]


async def test_the_cookies_are_secure_through_the_https_public_url(make_settings, start_gateway):
    settings = make_settings(gateway_admin_keys=[ADMIN_KEY], gateway_public_url="https://wa.example.com")
    client, _ = await start_gateway(settings)
    proxied = {"Host": "wa.example.com"}  # as a TLS proxy in front passes it on
    form = await client.get("/admin/sign-in", headers=proxied)
    [form_cookie] = form.headers.getall("Set-Cookie")
    assert "Secure" in form_cookie
    nonce = form_cookie.split(";")[0].partition("=")[2]
    answer = await client.post(
        "/admin/sign-in", data={"csrf": csrf_of(await form.text()), "key": ADMIN_KEY}, allow_redirects=False,
        headers={**proxied, "Cookie": f"wa_console_sign_in={nonce}"},
    )
    [cookie] = [c for c in answer.headers.getall("Set-Cookie") if c.startswith("wa_console=")]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    direct = await sign_in(client)  # the gateway's own http address, from the machine itself
    [cookie] = [c for c in direct.headers.getall("Set-Cookie") if c.startswith("wa_console=")]
    assert "Secure" not in cookie


async def test_a_wrong_key_is_refused_and_gets_no_session(console):
    client, _ = console
    for wrong in ("not-the-key", ADMIN_KEY + "x", ADMIN_KEY[:-1], "", "ключ" * 10):  # 5: the limit
        answer = await sign_in(client, wrong)
        assert answer.status == 401, wrong
        assert "That is not an admin key" in await answer.text()
        assert not any(c.startswith("wa_console=") for c in answer.headers.getall("Set-Cookie", []))
    await page(client, "/admin/", 303)


async def test_failed_sign_ins_are_limited_per_address_then_429_with_retry_after(console):
    client, _ = console
    for _ in range(5):
        assert (await sign_in(client, "wrong-" + "w" * 20)).status == 401

    limited = await sign_in(client)  # the right key, but the address is over its limit

    assert limited.status == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in await limited.text()
    assert not any(c.startswith("wa_console=") for c in limited.headers.getall("Set-Cookie", []))
    await page(client, "/admin/", 303)


def test_the_sign_in_limit_forgets_failures_after_its_window() -> None:
    limiter = SignInLimiter(attempts=2, window=60)
    limiter.failed("a", now=0)
    limiter.failed("a", now=10)
    assert limiter.wait("a", now=11) == 49
    assert limiter.wait("b", now=11) == 0
    assert limiter.wait("a", now=60.5) == 0  # the first failure left the window


async def test_sign_in_without_its_csrf_token_is_refused(console):
    client, _ = console
    await client.get("/admin/sign-in")  # the form's cookie, but no token in the POST
    for data in ({"key": ADMIN_KEY}, {"key": ADMIN_KEY, "csrf": "forged"}):
        answer = await client.post("/admin/sign-in", data=data, allow_redirects=False)
        assert answer.status == 403
        assert "CSRF" in await answer.text()
        assert not any(c.startswith("wa_console=") for c in answer.headers.getall("Set-Cookie", []))


async def test_signing_out_ends_the_session_in_the_browser(console):
    client, _ = console
    await sign_in(client)
    csrf = await session_csrf(client)

    out = await client.post("/admin/sign-out", data={"csrf": csrf}, allow_redirects=False)

    assert out.status == 303 and out.headers["Location"] == "/admin/sign-in"
    assert any(c.startswith("wa_console=") and "Max-Age=0" in c for c in out.headers.getall("Set-Cookie"))
    await page(client, "/admin/", 303)


async def test_sign_out_without_the_csrf_token_is_refused(console):
    client, _ = console
    await sign_in(client)
    answer = await client.post("/admin/sign-out", data={}, allow_redirects=False)
    assert answer.status == 403
    await page(client, "/admin/")  # still signed in


async def test_another_gateway_process_accepts_the_session_until_its_key_is_removed(
    console, make_settings, start_gateway
):
    client, services = console
    await sign_in(client, OTHER_KEY)
    cookie = {"Cookie": f"wa_console={client.session.cookie_jar.filter_cookies(client.make_url('/admin/'))['wa_console'].value}"}
    same_keys, _ = await start_gateway(services.settings)
    assert (await same_keys.get("/admin/", headers=cookie, allow_redirects=False)).status == 200
    without_it, _ = await start_gateway(make_settings(gateway_admin_keys=[ADMIN_KEY]))
    refused = await without_it.get("/admin/", headers=cookie, allow_redirects=False)
    assert refused.status == 303 and refused.headers["Location"] == "/admin/sign-in"


def test_sessions_are_signed_per_key_and_end_with_the_key_or_the_time() -> None:
    both = Sessions([ADMIN_KEY, OTHER_KEY])
    admin = both.matching_key(ADMIN_KEY)
    assert admin is not None and both.matching_key("nope") is None
    cookie = both.issue(admin, now=1000)

    session = both.check(cookie, now=1001)
    assert session is not None and session.csrf
    assert Sessions([OTHER_KEY, ADMIN_KEY]).check(cookie, now=1001) == session  # another process
    assert Sessions([ADMIN_KEY]).check(cookie, now=1001) is not None  # the other key removed
    assert Sessions([OTHER_KEY]).check(cookie, now=1001) is None  # its own key removed
    assert both.check(cookie, now=1000 + 12 * 3600) is None  # expired
    body, _, signature = cookie.rpartition(".")
    kid_swapped = cookie.replace(cookie.split(".")[1], both.matching_key(OTHER_KEY).kid)  # type: ignore[union-attr]
    for forged in (
        f"{body}.{signature[:-2]}AA", body.replace(body.split(".")[2], "9999999999") + "." + signature,
        kid_swapped, "", "v1....", "x" * 5000, cookie + ".", "v1.a.b.c.d",
    ):
        assert both.check(forged, now=1001) is None, forged
    other = both.issue(admin, now=1000)
    assert both.check(other, now=1001).csrf != session.csrf  # type: ignore[union-attr]


# --- CSRF on every POST ----------------------------------------------------------


async def test_a_post_without_or_with_a_wrong_csrf_token_is_refused_and_nothing_happens(console, scripted, amqp):
    client, services = console
    await dead_letter(client, scripted, services)
    await sign_in(client)
    dead = services.topology.dead
    assert await queue_size(amqp, dead) == 1
    stranger = Sessions([ADMIN_KEY])
    foreign = stranger.check(stranger.issue(stranger.matching_key(ADMIN_KEY)))  # type: ignore[arg-type]
    assert foreign is not None

    for path, data in (
        ("/admin/dead-letters/purge", {"confirm": "yes"}),
        ("/admin/dead-letters/replay", {"all": "1"}),
        ("/admin/dead-letters/purge", {"confirm": "yes", "csrf": ""}),
        ("/admin/dead-letters/purge", {"confirm": "yes", "csrf": "forged-token"}),
        ("/admin/dead-letters/replay", {"all": "1", "csrf": foreign.csrf}),  # another session's token
    ):
        answer = await client.post(path, data=data, allow_redirects=False)
        assert answer.status == 403, (path, data)
        assert "CSRF token is missing or wrong: nothing was done" in await answer.text()

    await asyncio.sleep(0.3)
    assert await queue_size(amqp, dead) == 1
    assert len(scripted.calls) == 1  # never sent again


# --- the pages -------------------------------------------------------------------


async def test_each_page_renders_with_numbers_masked_secrets_hidden_and_provider_text_escaped(
    console, scripted
):
    client, services = console
    dead_id = await dead_letter(client, scripted, services)
    sent_id = await post_notify(client, text=f"{HOSTILE} {NUMBER}")
    await wait_for(lambda: ledger_status(client, sent_id, "sent"))
    await sign_in(client)

    pages = {
        "overview": await page(client, "/admin/"),
        "list": await page(client, "/admin/notifications"),
        "timeline": await page(client, f"/admin/notifications/{dead_id}"),
        "dead letters": await page(client, "/admin/dead-letters"),
        "channels": await page(client, "/admin/channels"),
        "purge": await page(client, "/admin/dead-letters/purge"),
    }

    for html in pages.values():
        assert_safe(html)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert MASKED in pages["list"] and dead_id in pages["list"] and sent_id in pages["list"]
    assert MASKED in pages["timeline"] and escaped in pages["timeline"] and "***" in pages["timeline"]
    assert [s for s in ("queued", "dead") if f'class="status st-{s}"' in pages["timeline"]] == ["queued", "dead"]
    assert "131026" in pages["timeline"]
    assert dead_id in pages["dead letters"] and escaped in pages["dead letters"]
    assert "131026" in pages["dead letters"] and MASKED in pages["dead letters"]
    assert escaped in pages["channels"] and "131026" in pages["channels"]
    assert "scripted" in pages["channels"] and "api key set (WA_API_KEY)" in pages["channels"]
    overview = pages["overview"]
    assert "<svg" in overview and "polyline" in overview and "<script" not in overview
    assert services.topology.dead in overview and services.topology.work_queue() in overview
    assert 'class="total s-dead">dead <strong>1</strong>' in overview
    assert 'class="total s-sent">sent <strong>1</strong>' in overview
    assert "<h1>Channels</h1>" in pages["channels"]


async def test_the_console_serves_no_script_and_its_stylesheet_from_itself(console):
    client, _ = console
    assert (await client.get("/admin/static/console.css")).status == 200  # the sign-in page needs it
    await sign_in(client)
    for path in ("/admin/", "/admin/notifications", "/admin/dead-letters", "/admin/channels", "/admin/sign-in"):
        html = await page(client, path, 200 if path != "/admin/sign-in" else 303)
        assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in html
    css = await client.get("/admin/static/console.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    assert "url(" not in await css.text()  # no web fonts, no images from elsewhere


async def test_notifications_search_by_id_filters_and_pages(console):
    client, services = console
    now = datetime.now(UTC)
    await _add_notifications(services.ledger, now, count=60)
    await sign_in(client)

    first = await page(client, "/admin/notifications")
    assert first.count('href="/admin/notifications/n-') == 50
    following = re.search(r'<a href="([^"]+)" rel="next">', first)
    assert following is not None
    second = await page(client, following.group(1).replace("&amp;", "&"))
    assert second.count('href="/admin/notifications/n-') == 10 and 'rel="next"' not in second

    dead = await page(client, "/admin/notifications?status=dead")
    assert dead.count('href="/admin/notifications/n-') == 20
    assert (await page(client, "/admin/notifications?to=budi")).count('href="/admin/notifications/n-') == 20
    recent = (now - timedelta(minutes=9, seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    assert (await page(client, f"/admin/notifications?since={recent}")).count('href="/admin/notifications/n-') == 10
    until = (now - timedelta(minutes=50)).strftime("%Y-%m-%dT%H:%M")
    assert "n-000" in await page(client, f"/admin/notifications?until={until}&status=dead")
    assert "No notifications match" in await page(client, "/admin/notifications?channel=nowhere")

    found = await client.get("/admin/notifications?id=n-007", allow_redirects=False)
    assert found.status == 303 and found.headers["Location"] == "/admin/notifications/n-007"
    missing = await page(client, "/admin/notifications?id=n-999", 404)
    assert "No notification with id" in missing
    await page(client, "/admin/notifications/n-999", 404)


async def test_purge_needs_its_confirmation(console, scripted, amqp):
    client, services = console
    await dead_letter(client, scripted, services)
    await dead_letter(client, scripted, services)
    await sign_in(client)
    csrf = await session_csrf(client)
    dead = services.topology.dead

    asked = await client.post("/admin/dead-letters/purge", data={"csrf": csrf}, allow_redirects=False)

    assert asked.status == 200
    question = await asked.text()
    assert "Purge the dead letters?" in question and "all 2 messages" in question
    assert 'name="confirm" value="yes"' in question
    assert await queue_size(amqp, dead) == 2
    for no in ({"csrf": csrf, "confirm": "no"}, {"csrf": csrf, "confirm": "YES "}):
        assert (await client.post("/admin/dead-letters/purge", data=no, allow_redirects=False)).status == 200
    assert await queue_size(amqp, dead) == 2

    done = await client.post("/admin/dead-letters/purge", data={"csrf": csrf, "confirm": "yes"},
                             allow_redirects=False)

    assert done.status == 303 and done.headers["Location"] == "/admin/dead-letters?purged=2"
    assert await queue_size(amqp, dead) == 0
    assert "Purged 2 dead letters." in await page(client, done.headers["Location"])


async def test_the_table_shows_the_head_of_a_long_queue_and_leaves_every_letter_there(
    console, scripted, amqp, monkeypatch
):
    from wa_gateway.console import dead_queue

    client, services = console
    ids = [await dead_letter(client, scripted, services, f"refused #{n}") for n in range(3)]
    await sign_in(client)
    monkeypatch.setattr(dead_queue, "SHOWN", 2)

    for _ in range(2):  # reading twice: the first read gave every letter back
        html = await page(client, "/admin/dead-letters")
        assert "Showing the first 2 of 3" in html and "Replay all (3)" in html
        assert sum(notification_id in html for notification_id in ids) == 2
    assert await queue_size(amqp, services.topology.dead) == 3


async def test_replay_one_and_replay_all_send_the_dead_letters_again(console, scripted, amqp):
    client, services = console
    first = await dead_letter(client, scripted, services)
    second = await dead_letter(client, scripted, services)
    third = await dead_letter(client, scripted, services)
    await sign_in(client)
    csrf = await session_csrf(client)

    one = await client.post("/admin/dead-letters/replay", data={"csrf": csrf, "id": first}, allow_redirects=False)

    assert one.status == 303 and one.headers["Location"] == "/admin/dead-letters?replayed=1"
    await wait_for(lambda: ledger_status(client, first, "sent"), timeout=15)
    listed = await page(client, one.headers["Location"])
    assert "Replayed 1 dead letter." in listed
    assert first not in listed and second in listed and third in listed

    again = await client.post("/admin/dead-letters/replay", data={"csrf": csrf, "id": first}, allow_redirects=False)
    assert again.headers["Location"] == "/admin/dead-letters?replayed=0&missing=1"
    assert "no longer in the queue" in await page(client, again.headers["Location"])

    every = await client.post("/admin/dead-letters/replay", data={"csrf": csrf, "all": "1"}, allow_redirects=False)

    assert every.headers["Location"] == "/admin/dead-letters?replayed=2"
    for notification_id in (second, third):
        await wait_for(lambda n=notification_id: ledger_status(client, n, "sent"), timeout=15)
    assert await queue_size(amqp, services.topology.dead) == 0
    assert "is empty" in await page(client, "/admin/dead-letters")
    timeline = await page(client, f"/admin/notifications/{second}")
    assert "replayed from the dead-letter queue" in timeline


async def test_hostile_input_is_a_4xx_never_a_500(console):
    client, _ = console
    await sign_in(client)
    csrf = await session_csrf(client)
    long = "x" * 5000
    for path in (
        "/admin/notifications?status=lost", "/admin/notifications?since=yesterday",
        "/admin/notifications?until=2026-13-45T99:99", "/admin/notifications?cursor=garbage!",
        "/admin/notifications?since=2026-11-28T10:00&until=2026-11-28T09:00",
        f"/admin/notifications?to={long}", "/admin/notifications?since=0001-01-01T00:00%2B05:00",
        "/admin/notifications?id=%00", f"/admin/notifications/{long}", "/admin/notifications/%00%FF",
        "/admin/static/../../settings.py", "/admin/static/%2e%2e/app.py",
        f"/admin/notifications?cursor={encode_cursor(datetime.now(UTC), 'n' + chr(0))}",
    ):
        answer = await client.get(path, allow_redirects=False)
        assert 400 <= answer.status < 500, (path, answer.status)
        assert HOSTILE not in await answer.text()
    escaped = await page(client, f"/admin/notifications?to={HOSTILE}")
    assert HOSTILE not in escaped and "&lt;script&gt;" in escaped
    bodies = [
        b"\xff\xfe\x00garbage", b"csrf=" + csrf.encode() + b"&id=%FF%FE", "&".join(["a=1"] * 500).encode(),
        b"csrf=" + csrf.encode() + b"&id=" + b"y" * 300, b"csrf=" + csrf.encode() + b"&id=%00",
        b"csrf=" + csrf.encode(), b"--boundary\r\nContent-Disposition: form-data; name=csrf\r\n\r\nx",
        b"x" * 70_000,
    ]
    for body in bodies:
        for path in ("/admin/dead-letters/replay", "/admin/dead-letters/purge", "/admin/sign-in"):
            answer = await client.post(path, data=body, allow_redirects=False,
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert answer.status != 500 and answer.status < 500, (path, body[:40], answer.status)
            if path != "/admin/sign-in":
                assert answer.status in (200, 303, 400, 403, 413), (path, body[:40], answer.status)
    await page(client, "/admin/")  # still signed in: a hostile form never signed anyone out
    assert (await client.put("/admin/dead-letters/purge")).status == 405
    assert (await client.post("/admin/sign-out", data=b"\xff" * 10)).status == 400


async def test_hostile_searches_on_postgresql_are_a_4xx_too(make_settings, start_gateway, postgres_url):
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine, postgres_url)
    finally:
        await engine.dispose()
    client, _ = await start_gateway(make_settings(gateway_admin_keys=[ADMIN_KEY], database_url=postgres_url))
    await sign_in(client)
    for path in (
        "/admin/notifications/%00", "/admin/notifications?id=a%00b", "/admin/notifications?to=%00",
        f"/admin/notifications?cursor={encode_cursor(datetime.now(UTC), 'n' + chr(0))}",
        "/admin/notifications?since=9999-12-31T23:59%2D05:00", "/admin/notifications?status=%F0%9F%92%A5",
    ):
        answer = await client.get(path, allow_redirects=False)
        assert 400 <= answer.status < 500, (path, answer.status)
    assert "No notifications match" in await page(client, "/admin/notifications?to=%F0%9F%92%A5")


async def test_the_ledger_off_leaves_the_console_without_notifications_but_working(
    make_settings, start_gateway, tmp_path
):
    settings = make_settings(gateway_admin_keys=[ADMIN_KEY], wa_ledger=False,
                             database_url=f"sqlite:///{tmp_path / 'never.db'}")
    client, _ = await start_gateway(settings)
    await sign_in(client)
    assert "No chart: the ledger is off" in await page(client, "/admin/")
    assert "The ledger is off" in await page(client, "/admin/notifications", 404)
    assert "only the breakers tell" in await page(client, "/admin/channels")
    assert not (tmp_path / "never.db").exists()


# --- the chart's counts ------------------------------------------------------------


async def test_hourly_counts_count_each_status_per_hour_of_the_last_day(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = create_engine(url)
    try:
        await upgrade(engine, url)
        await _counts_check(engine)
    finally:
        await engine.dispose()


async def test_hourly_counts_on_postgresql(postgres_url: str) -> None:
    engine = create_engine(postgres_url)
    try:
        await upgrade(engine, postgres_url)
        await _counts_check(engine)
    finally:
        await engine.dispose()


async def _counts_check(engine: AsyncEngine) -> None:
    now = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)
    events = [
        ("sent", now - timedelta(minutes=5)), ("sent", now - timedelta(minutes=29)),
        ("delivered", now - timedelta(minutes=25)), ("dead", now - timedelta(hours=2, minutes=1)),
        ("failed", now - timedelta(hours=23, minutes=30)),  # 10:00 yesterday: the first hour
        ("sent", now - timedelta(hours=23, minutes=31)),  # 09:59 yesterday: out of the day
        ("queued", now - timedelta(minutes=1)), ("read", now - timedelta(minutes=1)),  # not charted
        ("sent", now + timedelta(hours=2)),  # the future (a skewed clock): left out
    ]
    async with async_sessionmaker(engine)() as session, session.begin():
        session.add(NotificationRecord(
            id="n-1", channel="default", provider="log", to="logistic", target_kind="group",
            target_address="1@g.us", status="sent", attempts=1, created_at=now, updated_at=now,
        ))
        await session.flush()
        for index, (status, at) in enumerate(events):
            session.add(NotificationEvent(notification_id="n-1", at=at, status=status, key=f"k{index}"))

    counts = await hourly_counts(engine, now=now)

    assert counts.hours[0] == datetime(2026, 11, 27, 10, tzinfo=UTC)
    assert counts.hours[-1] == datetime(2026, 11, 28, 9, tzinfo=UTC) and len(counts.hours) == 24
    assert counts.counts["sent"][-1] == 2 and counts.total("sent") == 2
    assert counts.counts["delivered"][-1] == 1
    assert counts.counts["dead"][-3] == 1  # 07:00
    assert counts.counts["failed"][0] == 1
    drawn = chart(counts)
    assert [s.status for s in drawn.series] == ["sent", "delivered", "failed", "dead"]
    assert all(len(s.dots) == 24 for s in drawn.series)
    assert [label for _, label in drawn.y_ticks] == ["0", "1", "2", "3", "4", "5"]  # whole steps
    assert [stats.nice_ceiling(n) for n in (0, 6, 10, 11, 49, 50, 51, 120, 4999)] == [5, 10, 10, 20, 50, 50, 100, 200, 5000]


async def test_the_overview_counts_the_live_hours_on_each_view_and_the_day_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = create_engine(url)
    await upgrade(engine, url)
    now = datetime.now(UTC)
    hourly = HourlyChart(engine)
    try:
        await _events(engine, [("sent", now - timedelta(minutes=1)), ("dead", now - timedelta(hours=5))])
        first = await hourly.counts()  # nothing counted yet: the whole day, now
        assert (first.total("sent"), first.total("dead"), first.older_age) == (1, 1, None)

        await _events(engine, [("sent", now), ("dead", now - timedelta(hours=5))])  # the second written late
        second = await hourly.counts()
        assert (second.total("sent"), second.total("dead")) == (2, 1)  # live hours at once, older ones not yet

        monkeypatch.setattr(stats, "REFRESH", 0.05)
        hourly.start()
        await wait_for(lambda: _total(hourly, "dead", 2))
        monkeypatch.setattr(stats, "STALE", 0.0)
        assert (await hourly.counts()).older_age is not None  # the page then says when they were counted
    finally:
        await hourly.close()
        await engine.dispose()


async def _total(hourly: HourlyChart, status: str, expected: int) -> bool:
    return (await hourly.counts()).total(status) == expected


async def _events(engine: AsyncEngine, events: list[tuple[str, datetime]]) -> None:
    async with async_sessionmaker(engine)() as session, session.begin():
        notification_id = str(uuid.uuid4())
        at = events[0][1]
        session.add(NotificationRecord(
            id=notification_id, channel="default", provider="log", to="logistic", target_kind="group",
            target_address="1@g.us", status="sent", attempts=1, created_at=at, updated_at=at,
        ))
        await session.flush()
        for status, when in events:
            session.add(NotificationEvent(notification_id=notification_id, at=when, status=status,
                                          key=str(uuid.uuid4())))


# --- shipped -------------------------------------------------------------------


def test_the_core_wheel_ships_the_templates_and_the_stylesheet(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    tree = tmp_path / "src"
    shutil.copytree(root, tree, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".bench", "*.db", "__pycache__", ".mypy_cache", ".ruff_cache", "plugins", "build", "*.egg-info",
    ))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp_path / "out", tree],
                   check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "out").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"wa_gateway/console/templates/{p.name}" for p in (root / "core/wa_gateway/console/templates").glob("*.html")}
    assert templates and templates <= names
    assert "wa_gateway/console/static/console.css" in names


# --- helpers -------------------------------------------------------------------


async def _add_notifications(engine: AsyncEngine | None, now: datetime, *, count: int) -> None:
    """`count` notifications a minute apart, newest now: every third dead and sent to
    `budi`, ids n-000 (oldest) to n-<count-1>."""
    assert engine is not None
    async with async_sessionmaker(engine)() as session, session.begin():
        for index in range(count):
            created = now - timedelta(minutes=count - 1 - index)
            dead = index % 3 == 0
            session.add(NotificationRecord(
                id=f"n-{index:03d}", channel="default", provider="scripted",
                to="budi" if dead else NUMBER, target_kind="person", target_address=NUMBER,
                status="dead" if dead else "sent", attempts=1, created_at=created, updated_at=created,
                error_code="131026" if dead else None,
                error_message=f"{HOSTILE} {NUMBER}" if dead else None,
            ))
            await session.flush()
            session.add(NotificationEvent(notification_id=f"n-{index:03d}", at=created, status="queued",
                                          key=f"{uuid.uuid4()}"))
