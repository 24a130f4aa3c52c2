"""Unit tests of wa_gateway.targets: phone normalisation and `to` resolution."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wa_gateway.models import Target
from wa_gateway.targets import InvalidTarget, is_group_id, normalise_phone, resolve_target

LOGISTIC = "120363195657916590@g.us"
PURCHASE = "120363195657916591@g.us"
ALIASES = {"logistic": LOGISTIC, "purchase": PURCHASE}
E164 = re.compile(r"\+[0-9]{8,15}")  # [0-9], not \d: only ASCII digits may come out


# --- normalise_phone: examples ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "+62 812-3456-7890",
        "+6281234567890",
        "0812-3456-7890",
        "0812 3456 7890",
        "(0812) 3456.7890",
        "0062 812 3456 7890",
        "6281234567890",
        "  +62/812/3456/7890  ",
    ],
)
def test_every_common_spelling_of_one_number_normalises_to_the_same_e164(raw: str) -> None:
    assert normalise_phone(raw, "62") == "+6281234567890"


def test_national_number_takes_the_default_country_given() -> None:
    assert normalise_phone("020 7946 0958", "44") == "+442079460958"


def test_eight_and_fifteen_digits_are_the_e164_bounds_and_accepted() -> None:
    assert normalise_phone("+12345678", "62") == "+12345678"
    assert normalise_phone("+123456789012345", "62") == "+123456789012345"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        ("+", "only a plus"),
        ("hello", "letters"),
        ("+62 812 abc 7890", "letters inside"),
        ("+62+8123456789", "second plus"),
        ("+1234567", "7 digits: too short"),
        ("+1234567890123456", "16 digits: too long"),
        ("+0812345678", "country code starting with 0"),
        ("000812345678", "00 prefix then a 0 country code"),
        ("+٦٢٨١٢٣٤٥٦٧٨٩٠", "Arabic-Indic digits"),
        ("٠٨١٢٣٤٥٦٧٨٩٠", "Arabic-Indic national number"),
        ("+６２８１２３４５６７８９０", "full-width digits"),
        ("+62812345678\x00", "NUL byte"),
        ("+62_812_3456_7890", "underscore is not phone punctuation"),
    ],
)
def test_malformed_numbers_are_rejected_with_invalid_target(raw: str, why: str) -> None:
    with pytest.raises(InvalidTarget):
        normalise_phone(raw, "62")


def test_invalid_target_message_quotes_what_the_caller_wrote() -> None:
    with pytest.raises(InvalidTarget, match=re.escape("'+62 abc'")):
        normalise_phone("+62 abc", "62")


def test_invalid_target_is_a_value_error_so_generic_handlers_catch_it() -> None:
    assert issubclass(InvalidTarget, ValueError)


# --- normalise_phone: properties -------------------------------------------------------

# No per-example deadline: the machine running the suite may be busy; speed is not tested.
relaxed = settings(deadline=None)
e164_digits = st.from_regex(r"[1-9][0-9]{7,14}", fullmatch=True)
separators = st.sampled_from([" ", "-", ".", "/", "(", ")", " - ", ""])


@st.composite
def punctuated(draw: st.DrawFn, digits: str) -> str:
    """`digits` with random phone punctuation between (not inside) the digits."""
    out = []
    for digit in digits:
        out.append(digit)
        out.append(draw(separators))
    return "".join(out)


@relaxed
@given(e164_digits)
def test_any_valid_e164_number_round_trips(digits: str) -> None:
    assert normalise_phone("+" + digits, "62") == "+" + digits


@relaxed
@given(e164_digits.flatmap(lambda d: st.tuples(st.just(d), punctuated(d))))
def test_punctuated_forms_of_an_e164_number_normalise_to_the_same_number(
    case: tuple[str, str],
) -> None:
    digits, spelled = case
    assert normalise_phone("+" + spelled, "62") == "+" + digits
    assert normalise_phone("00" + spelled, "62") == "+" + digits
    assert normalise_phone(f"  {spelled}\t", "62") == "+" + digits


@st.composite
def national_numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(default country, national significant number) whose sum is valid E.164."""
    country = draw(st.from_regex(r"[1-9][0-9]{0,2}", fullmatch=True))
    length = draw(st.integers(max(1, 8 - len(country)), 15 - len(country)))
    rest = draw(st.from_regex(rf"[1-9][0-9]{{{length - 1}}}", fullmatch=True))
    return country, rest


@relaxed
@given(national_numbers())
def test_national_number_maps_to_default_country_plus_the_rest(case: tuple[str, str]) -> None:
    country, rest = case
    assert normalise_phone("0" + rest, country) == "+" + country + rest


def _returns_e164_or_raises_invalid_target(raw: str, country: str = "62") -> None:
    try:
        result = normalise_phone(raw, country)
    except InvalidTarget:
        return
    assert E164.fullmatch(result), f"{raw!r} -> {result!r}"


@relaxed
@given(st.text())
def test_arbitrary_text_gives_e164_or_invalid_target_never_another_error(raw: str) -> None:
    _returns_e164_or_raises_invalid_target(raw)


@relaxed
@given(
    st.text(alphabet="0123456789+ -./()٠١٢٣٤٥٦٧٨٩\u00a0\u2007", max_size=25),
    st.from_regex(r"[1-9][0-9]{0,2}", fullmatch=True),
)
def test_phone_like_text_gives_e164_or_invalid_target_never_another_error(
    raw: str, country: str
) -> None:
    """Text near the valid space, so that the success branch is exercised too."""
    _returns_e164_or_raises_invalid_target(raw, country)


# --- resolve_target -------------------------------------------------------------------


@pytest.mark.parametrize("to", ["logistic", "LOGISTIC", "Logistic", "  logistic  "])
def test_alias_resolves_case_insensitively_to_its_group(to: str) -> None:
    target = resolve_target(to, ALIASES, allow_raw=False, default_country="62")
    assert target == Target(kind="group", address=LOGISTIC)


def test_alias_still_resolves_when_raw_targets_are_allowed() -> None:
    target = resolve_target("purchase", ALIASES, allow_raw=True, default_country="62")
    assert target == Target(kind="group", address=PURCHASE)


def test_unknown_alias_message_lists_known_aliases_and_says_raw_targets_are_off() -> None:
    with pytest.raises(InvalidTarget) as caught:
        resolve_target("sales", ALIASES, allow_raw=False, default_country="62")
    message = str(caught.value)
    assert "'sales'" in message
    assert "logistic, purchase" in message
    assert "WA_ALLOW_RAW_TARGETS=false" in message


def test_unknown_alias_with_no_aliases_configured_says_so() -> None:
    with pytest.raises(InvalidTarget, match="none configured"):
        resolve_target("logistic", {}, allow_raw=False, default_country="62")


@pytest.mark.parametrize("to", ["+6281234567890", "081234567890", LOGISTIC])
def test_raw_number_or_group_id_is_refused_when_raw_targets_are_off(to: str) -> None:
    with pytest.raises(InvalidTarget, match="raw numbers and group ids are off"):
        resolve_target(to, ALIASES, allow_raw=False, default_country="62")


def test_raw_number_is_normalised_to_a_phone_target_when_allowed() -> None:
    target = resolve_target(" 0812-3456-7890 ", ALIASES, allow_raw=True, default_country="62")
    assert target == Target(kind="phone", address="+6281234567890")


@pytest.mark.parametrize("group_id", ["120363195657916599@g.us", "6281234567890-1612345678@g.us"])
def test_raw_group_id_becomes_a_group_target_when_allowed(group_id: str) -> None:
    target = resolve_target(group_id, ALIASES, allow_raw=True, default_country="62")
    assert target == Target(kind="group", address=group_id)


@pytest.mark.parametrize(
    "bad", ["abc@g.us", "1234@g.us", "12345-@g.us", "@g.us", "123456 789@g.us", "١٢٣٤٥٦@g.us"]
)
def test_malformed_group_id_is_rejected_when_raw_targets_are_allowed(bad: str) -> None:
    with pytest.raises(InvalidTarget, match="not a WhatsApp group id"):
        resolve_target(bad, ALIASES, allow_raw=True, default_country="62")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("120363195657916590@g.us", True),
        ("12345@g.us", True),
        ("6281234567890-1612345678@g.us", True),
        ("1234@g.us", False),
        ("120363195657916590@g.us\n", False),
        ("x120363195657916590@g.us", False),
        ("120363195657916590@g.usx", False),
        ("120363195657916590@gxus", False),
        ("١٢٣٤٥٦٧٨@g.us", False),
    ],
)
def test_is_group_id_accepts_only_ascii_digits_at_g_us_with_nothing_around(
    value: str, valid: bool
) -> None:
    assert is_group_id(value) is valid


def test_unknown_word_with_raw_targets_allowed_is_rejected_as_not_a_number() -> None:
    with pytest.raises(InvalidTarget, match="not a phone number"):
        resolve_target("sales", ALIASES, allow_raw=True, default_country="62")
