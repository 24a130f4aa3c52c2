"""`wa-gateway notifications` and `wa-gateway status ID`: reading a real SQLite ledger
(a file in tmp_path) filled by apply_changes, the way the ledger writer fills it; run
through cli.main as an operator runs them. No RabbitMQ."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from wa_gateway import cli
from wa_gateway.commands.notifications import point_in_time
from wa_gateway.ledger.apply import apply_changes
from wa_gateway.ledger.changes import (
    NotificationFacts,
    Status,
    StatusChange,
    change_key,
    receipt_key,
)
from wa_gateway.ledger.models import STATUSES
from wa_gateway.ledger.schema import open_ledger
from wa_gateway.plugins import make_plugin_manager

LOGISTIC = "120363195657916590@g.us"
RAW = "+6281234567890"
RAW_MASKED = "+6281*******90"  # logs.mask_phone_numbers: first and last digits kept
OTHER_RAW = "081298765432"
OTHER_RAW_MASKED = "0812******32"
FAILED_MESSAGE = (
    "Pesan gagal dikirim: sudah lebih dari 24 jam sejak balasan terakhir 😢 "
    "(penerima +6281298765432, coba templat)"
)
FAILED_MESSAGE_MASKED = FAILED_MESSAGE.replace("+6281298765432", "+6281*******32")


def nid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


QUEUED, RETRYING, SENT, DELIVERED, READ, FAILED, DEAD = (nid(n) for n in range(1, 8))


@dataclass
class Ledger:
    url: str
    now: datetime


def facts(to: str, channel: str, created_at: datetime, kind: str = "person") -> NotificationFacts:
    address = LOGISTIC if to == "logistic" else to
    return NotificationFacts(to=to, channel=channel, target_kind=kind, target_address=address,
                             event="stock_low" if channel == "groups" else None, created_at=created_at)


def worker(notification_id: str, fact: NotificationFacts, status: Status, at: datetime,
           attempt: int | None = None, **fields: Any) -> StatusChange:
    return StatusChange(key=change_key(notification_id, status, attempt), id=notification_id,
                        status=status, at=at, channel=fact.channel, attempt=attempt, facts=fact, **fields)


def receipt(provider: str, message_id: str, status: Status, at: datetime, **fields: Any) -> StatusChange:
    return StatusChange(key=receipt_key(provider, message_id, status), provider=provider,
                        provider_message_id=message_id, status=status, at=at, **fields)


def history(now: datetime) -> list[StatusChange]:
    """One notification in each status, over three channels; `failed` 3 hours ago, `dead` 2 days."""
    ago = [now - timedelta(minutes=m) for m in (1, 2, 3, 4, 5)]
    changes: list[StatusChange] = []

    f = facts("logistic", "groups", ago[0], "group")
    changes += [worker(QUEUED, f, "queued", ago[0], 0)]

    f = facts("budi", "people", ago[1])
    changes += [worker(RETRYING, f, "queued", ago[1], 0),
                worker(RETRYING, f, "retrying", ago[1] + timedelta(seconds=5), 1, provider="meta",
                       code="131000", message="Layanan sedang sibuk, coba lagi")]

    f = facts(RAW, "people", ago[2])
    changes += [worker(SENT, f, "queued", ago[2], 0),
                worker(SENT, f, "sent", ago[2] + timedelta(seconds=1), 1, provider="meta",
                       provider_message_id="wamid.sent")]

    f = facts("logistic", "groups", ago[3], "group")
    changes += [worker(DELIVERED, f, "queued", ago[3], 0),
                worker(DELIVERED, f, "sent", ago[3] + timedelta(seconds=1), 1, provider="watzap",
                       provider_message_id="wz-4"),
                receipt("watzap", "wz-4", "delivered", ago[3] + timedelta(seconds=3))]

    f = facts("budi", "alerts", ago[4])
    changes += [worker(READ, f, "queued", ago[4], 0),
                worker(READ, f, "sent", ago[4] + timedelta(seconds=1), 1, provider="twilio",
                       provider_message_id="SM5"),
                receipt("twilio", "SM5", "delivered", ago[4] + timedelta(seconds=2)),
                receipt("twilio", "SM5", "read", ago[4] + timedelta(seconds=9))]

    created = now - timedelta(hours=3)
    f = facts(OTHER_RAW, "people", created)
    changes += [worker(FAILED, f, "queued", created, 0),
                worker(FAILED, f, "sent", created + timedelta(seconds=1), 1, provider="meta",
                       provider_message_id="wamid.failed"),
                receipt("meta", "wamid.failed", "failed", created + timedelta(seconds=4),
                        code="131047", message=FAILED_MESSAGE)]

    created = now - timedelta(days=2)
    f = facts("purchase", "groups", created, "group")
    changes += [worker(DEAD, f, "queued", created, 0),
                worker(DEAD, f, "retrying", created + timedelta(seconds=5), 1, provider="watzap",
                       code="503", message="upstream unavailable"),
                worker(DEAD, f, "dead", created + timedelta(seconds=35), 2, provider="watzap",
                       code="invalid_key", message="the API key was refused")]
    return changes


async def fill(url: str, changes: list[StatusChange]) -> None:
    async with open_ledger(url) as engine:
        applied = await apply_changes(engine, changes)
    assert not applied.unresolved


@pytest.fixture
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> Ledger:
    """A SQLite ledger with one notification in each status; DATABASE_URL names it."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    now = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(fill(url, history(now)))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setattr(cli, "make_plugin_manager", lambda: make_plugin_manager(load_entry_points=False))
    return Ledger(url, now)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(["--env-file", "", *args])
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    """The table's data rows, split on runs of two spaces or more (a cell never holds two)."""
    lines = [line for line in out.splitlines() if line and not line.startswith("more: ")]
    assert lines[0].split() == ["created", "(UTC)", "id", "status", "channel", "to", "attempts", "error"]
    return [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines[1:]]


def ids(out: str) -> list[str]:
    return [row[1] for row in rows(out)]


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run(capsys, "notifications", "--json", *args)
    assert (code, err) == (0, "")
    answer: dict[str, Any] = json.loads(out)
    return answer


# --- notifications ---------------------------------------------------------------


def test_the_table_is_newest_first_with_times_to_the_second_and_raw_numbers_masked(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "notifications")

    assert (code, err) == (0, "")
    table = rows(out)
    assert [row[1] for row in table] == [QUEUED, RETRYING, SENT, DELIVERED, READ, FAILED, DEAD]
    by_id = {row[1]: row for row in table}
    created = (ledger.now - timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    assert by_id[QUEUED] == [created, QUEUED, "queued", "groups", "logistic", "0", "-"]
    assert by_id[RETRYING][2:] == ["retrying", "people", "budi", "1", "131000"]
    assert by_id[SENT][2:] == ["sent", "people", RAW_MASKED, "1", "-"]
    assert by_id[READ][2:] == ["read", "alerts", "budi", "1", "-"]
    assert by_id[FAILED][2:] == ["failed", "people", OTHER_RAW_MASKED, "1", "131047"]
    assert by_id[DEAD][2:] == ["dead", "groups", "purchase", "2", "invalid_key"]
    assert RAW not in out and OTHER_RAW not in out
    assert "more:" not in out  # 7 rows, a page holds 50


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--status", "failed"], [FAILED]),
        (["--status", "delivered"], [DELIVERED]),
        (["--channel", "groups"], [QUEUED, DELIVERED, DEAD]),
        (["--to", "budi"], [RETRYING, READ]),
        (["--to", RAW], [SENT]),
        (["--channel", "people", "--status", "sent"], [SENT]),
        (["--since", "1h"], [QUEUED, RETRYING, SENT, DELIVERED, READ]),
        (["--since", "150s"], [QUEUED, RETRYING]),
        (["--until", "1h"], [FAILED, DEAD]),
        (["--since", "1d", "--until", "1h"], [FAILED]),
    ],
)
def test_filters(ledger: Ledger, capsys: pytest.CaptureFixture[str], args: list[str], expected: list[str]) -> None:
    code, out, err = run(capsys, "notifications", *args)
    assert (code, err) == (0, "")
    assert ids(out) == expected


def test_since_and_until_take_iso_times_a_naive_one_being_utc(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    three_hours_ago = ledger.now - timedelta(hours=3)
    jakarta = (three_hours_ago + timedelta(seconds=1)).astimezone(timezone(timedelta(hours=7))).isoformat()
    naive = three_hours_ago.replace(tzinfo=None).isoformat()

    assert ids(run(capsys, "notifications", "--until", jakarta)[1]) == [FAILED, DEAD]
    assert ids(run(capsys, "notifications", "--since", naive, "--until", "2h")[1]) == [FAILED]


def test_nothing_matching_is_one_line(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "notifications", "--channel", "nowhere")
    assert (code, out, err) == (0, "no notifications match\n", "")
    assert listed(capsys, "--channel", "nowhere") == {"notifications": [], "next_cursor": None}


def test_the_json_is_one_object_with_iso_times_masked_numbers_and_the_text_intact(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = listed(capsys)

    assert set(answer) == {"notifications", "next_cursor"}
    assert answer["next_cursor"] is None
    items = {item["id"]: item for item in answer["notifications"]}
    assert list(items) == [QUEUED, RETRYING, SENT, DELIVERED, READ, FAILED, DEAD]
    failed = items[FAILED]
    assert set(failed) == {"id", "status", "to", "channel", "provider", "provider_message_id",
                           "attempts", "event", "created_at", "updated_at", "error"}
    assert failed["to"] == OTHER_RAW_MASKED
    assert failed["error"] == {"code": "131047", "message": FAILED_MESSAGE_MASKED}
    assert failed["provider"] == "meta" and failed["provider_message_id"] == "wamid.failed"
    assert failed["created_at"].endswith("+00:00")  # as the HTTP API writes them
    assert datetime.fromisoformat(failed["created_at"]) == ledger.now - timedelta(hours=3)
    assert items[SENT]["to"] == RAW_MASKED
    assert items[QUEUED]["error"] is None and items[QUEUED]["event"] == "stock_low"


def test_paging_with_the_cursor_visits_every_notification_once(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    # 20 more created in the same second: the cursor must break ties, not skip or repeat
    same = ledger.now - timedelta(minutes=30)
    more = [nid(100 + n) for n in range(20)]
    asyncio.run(fill(ledger.url, [worker(i, facts("budi", "people", same), "queued", same, 0) for i in more]))
    everything = listed(capsys, "--limit", "500")["notifications"]
    assert len(everything) == 27

    seen: list[str] = []
    argv = ["--env-file", "", "notifications", "--limit", "4"]
    pages = 0
    while True:
        code = cli.main(argv)
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        pages += 1
        seen += ids(out)
        last = out.splitlines()[-1]
        if not last.startswith("more: "):
            break
        # the last line is the command for the next page; it runs as printed
        words = shlex.split(last.removeprefix("more: "))
        assert words[:6] == ["wa-gateway", "--env-file", "", "notifications", "--limit", "4"]
        assert words[-2] == "--cursor"
        argv = words[1:]
    assert pages == 7
    assert seen == [item["id"] for item in everything]
    assert len(set(seen)) == 27

    # the same through --json's next_cursor
    seen, cursor = [], None
    while True:
        answer = listed(capsys, "--limit", "5", *(["--cursor", cursor] if cursor else []))
        seen += [item["id"] for item in answer["notifications"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in everything]


def test_the_next_page_command_keeps_the_filters_and_pins_relative_times(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "notifications", "--since", "1d", "--channel", "groups", "--limit", "1")
    assert (code, err) == (0, "")
    words = shlex.split(out.splitlines()[-1].removeprefix("more: "))
    since = words[words.index("--since") + 1]
    assert since.endswith("Z")
    assert abs(datetime.fromisoformat(since) - (datetime.now(UTC) - timedelta(days=1))) < timedelta(minutes=1)
    assert words[words.index("--channel") + 1] == "groups"

    code, out, err = run(capsys, *words[3:])
    assert ids(out) == [DELIVERED]
    assert "more:" not in out  # DEAD is older than a day: not counted

    cursor = words[-1]
    code, out, err = run(capsys, "notifications", "--channel", "nowhere", "--cursor", cursor)
    assert (code, out, err) == (0, "no notifications match (after the cursor)\n", "")


# --- the options: argparse's usage error, exit 2 ---------------------------------


NOW = datetime(2025, 6, 3, 9, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("0s", NOW),
        ("2025-06-03T09:00:00+07:00", datetime(2025, 6, 3, 2, 0, tzinfo=UTC)),
        ("2025-06-03T09:00:00Z", datetime(2025, 6, 3, 9, 0, tzinfo=UTC)),
        ("2025-06-03 09:00", datetime(2025, 6, 3, 9, 0, tzinfo=UTC)),
        ("2025-06-03", datetime(2025, 6, 3, tzinfo=UTC)),
    ],
)
def test_point_in_time(given: str, expected: datetime) -> None:
    when = point_in_time(given, now=NOW)
    assert when == expected
    assert when.utcoffset() == timedelta(0)


@pytest.mark.parametrize("given", ["", "1", "1x", "-1h", "1.5h", "h", "yesterday", "2025-13-01",
                                   "99999999999d", "9" * 5000 + "s"])
def test_point_in_time_refuses(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        point_in_time(given, now=NOW)


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--since", "soon"], "argument --since: 'soon' is neither a duration"),
        (["--until", "3 weeks"], "argument --until: '3 weeks' is neither a duration"),
        (["--status", "lost"], "argument --status: invalid choice: 'lost'"),
        (["--limit", "0"], "argument --limit: expected a whole number from 1 to 500, got '0'"),
        (["--limit", "501"], "argument --limit: expected a whole number from 1 to 500"),
        (["--limit", "ten"], "argument --limit: expected a whole number from 1 to 500"),
        (["--cursor", "not-a-cursor"], "argument --cursor: cursor is not one this gateway gave out"),
    ],
)
def test_a_bad_option_is_argparses_usage_error(
    ledger: Ledger, capsys: pytest.CaptureFixture[str], args: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--env-file", "", "notifications", *args])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert out == ""
    assert err.startswith("usage: wa-gateway notifications ")
    assert err.splitlines()[-1].startswith(f"wa-gateway notifications: error: {complaint}")
    assert "Traceback" not in err


def test_status_choices_are_the_ledgers_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--env-file", "", "notifications", "--status", "lost"])
    assert f"(choose from {', '.join(repr(s) for s in STATUSES)})" in capsys.readouterr().err


def test_since_after_until_is_one_line(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "notifications", "--since", "1h", "--until", "2h")
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("wa-gateway: error: --since (") and "is not before --until" in line


# --- status ID ---------------------------------------------------------------------


def test_status_id_shows_the_notification_and_its_timeline(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "status", FAILED)

    assert (code, err) == (0, "")
    head, timeline = out.rstrip("\n").split("\n\n")
    created = ledger.now - timedelta(hours=3)
    assert head.splitlines() == [
        f"notification {FAILED}",
        "  status:              failed",
        f"  to:                  {OTHER_RAW_MASKED}",
        "  channel:             people",
        "  provider:            meta",
        "  provider message id: wamid.failed",
        "  event:               -",
        "  attempts:            1",
        f"  created:             {created:%Y-%m-%d %H:%M:%S} UTC",
        f"  updated:             {created + timedelta(seconds=4):%Y-%m-%d %H:%M:%S} UTC",
        f"  error:               131047: {FAILED_MESSAGE_MASKED}",
    ]
    lines = timeline.splitlines()
    assert lines[0] == "timeline (3 events, oldest first)"
    assert lines[1].split() == ["at", "(UTC)", "status", "channel/provider", "attempt", "code", "message"]
    events = [[cell.strip() for cell in line.split("  ") if cell.strip()] for line in lines[2:]]
    at = [f"{created + timedelta(seconds=s):%Y-%m-%d %H:%M:%S}" for s in (0, 1, 4)]
    assert events == [
        [at[0], "queued", "people/-", "0", "-", "-"],
        [at[1], "sent", "people/meta", "1", "-", "-"],
        [at[2], "failed", "-/meta", "-", "131047", FAILED_MESSAGE_MASKED],
    ]
    assert "😢" in out and "+6281298765432" not in out and OTHER_RAW not in out


def test_status_id_of_a_dead_letter_shows_each_attempt(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "status", DEAD)
    assert code == 0
    assert "  error:               invalid_key: the API key was refused" in out
    assert [line.split()[2] for line in out.split("\n\n")[1].splitlines()[2:]] == ["queued", "retrying", "dead"]


def test_status_id_as_json(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "status", FAILED, "--json")

    assert (code, err) == (0, "")
    answer = json.loads(out)
    assert answer["id"] == FAILED and answer["status"] == "failed" and answer["to"] == OTHER_RAW_MASKED
    assert answer["error"] == {"code": "131047", "message": FAILED_MESSAGE_MASKED}
    assert [e["status"] for e in answer["events"]] == ["queued", "sent", "failed"]
    assert answer["events"][-1] == {
        "at": f"{ledger.now - timedelta(hours=3) + timedelta(seconds=4):%Y-%m-%dT%H:%M:%S}+00:00",
        "status": "failed", "channel": None, "provider": "meta", "code": "131047",
        "message": FAILED_MESSAGE_MASKED, "attempt": None,
    }
    assert "😢" in out  # as text, not \ud83d escapes


def test_a_message_with_line_breaks_and_escapes_stays_on_its_line(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    f = facts("budi", "people", ledger.now)
    odd = nid(50)
    asyncio.run(fill(ledger.url, [
        worker(odd, f, "queued", ledger.now, 0),
        worker(odd, f, "retrying", ledger.now, 1, provider="meta", code="500",
               message="baris satu\nbaris dua\x1b[31m merah 👨\u200d👩\u200d👧"),
    ]))

    code, out, _ = run(capsys, "status", odd)
    assert code == 0
    assert "\x1b" not in out
    assert "500: baris satu baris dua [31m merah 👨\u200d👩\u200d👧" in out  # the emoji's joiners kept
    assert out.split("\n\n")[1].splitlines()[-1].endswith("baris satu baris dua [31m merah 👨\u200d👩\u200d👧")
    # the JSON keeps the text exactly
    assert json.loads(run(capsys, "status", odd, "--json")[1])["error"]["message"].startswith("baris satu\nbaris dua\x1b")


def test_status_of_an_unknown_id_is_one_line_exit_1(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    for json_flag in ([], ["--json"]):
        code, out, err = run(capsys, "status", nid(999), *json_flag)
        assert (code, out) == (1, "")
        [line] = err.splitlines()
        assert line.startswith(f"no notification with id '{nid(999)}' in the ledger at sqlite:///")


def test_status_json_without_an_id_is_one_line(capsys: pytest.CaptureFixture[str], restore_logging: None) -> None:
    code, out, err = run(capsys, "status", "--json")
    assert (code, out) == (2, "")
    assert err == "wa-gateway: error: --json is for one notification: wa-gateway status ID --json\n"


# --- a ledger that cannot be used: one line, exit 2 --------------------------------


@pytest.fixture
def database(monkeypatch: pytest.MonkeyPatch, restore_logging: None) -> Iterator[Any]:
    def use(url: str) -> None:
        monkeypatch.setenv("DATABASE_URL", url)

    monkeypatch.setattr(cli, "make_plugin_manager", lambda: make_plugin_manager(load_entry_points=False))
    yield use


@pytest.mark.parametrize("args", [["notifications"], ["notifications", "--json"], ["status", nid(1)]])
def test_an_unreachable_postgresql_is_one_line_exit_2(
    database: Any, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    database("postgresql://nobody@127.0.0.1:1/x")
    code, out, err = run(capsys, *args)
    assert (code, out) == (2, "")
    [line] = err.splitlines()
    assert line.startswith("wa-gateway: error: the ledger database at postgresql://nobody@127.0.0.1:1/x cannot be used: ")
    assert line.endswith("check DATABASE_URL and that the database is running")


def test_a_missing_sqlite_file_is_one_line_and_is_not_created(
    database: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database("sqlite:///elsewhere.db")
    for args in (["notifications"], ["status", nid(1)]):
        code, out, err = run(capsys, *args)
        assert (code, out) == (2, "")
        assert err == (
            "wa-gateway: error: the ledger database at sqlite:///elsewhere.db does not exist "
            "(no file elsewhere.db here); check DATABASE_URL and the working directory\n"
        )
    assert not (tmp_path / "elsewhere.db").exists()


def test_a_schema_this_release_does_not_know_is_one_line(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    async def newer() -> None:
        async with open_ledger(ledger.url) as engine, engine.begin() as connection:
            await connection.execute(text("UPDATE alembic_version SET version_num = 'ffffffffffff'"))

    asyncio.run(newer())
    for args in (["notifications"], ["status", FAILED]):
        code, out, err = run(capsys, *args)
        assert (code, out) == (2, "")
        [line] = err.splitlines()
        assert "is at schema revision ffffffffffff, which this wa-gateway does not know" in line


def test_notifications_is_a_built_in_command() -> None:
    plugins = make_plugin_manager(load_entry_points=False)
    registered = {impl.plugin_name for impl in plugins.manager.hook.register_commands.get_hookimpls()}
    assert "wa_gateway.commands.notifications" in registered
