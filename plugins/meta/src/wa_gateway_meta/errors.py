"""Cloud API `error.code` values and what each means for a retry.

Meta says to build error handling on `code`, not on HTTP statuses (throttling arrives
as 400 as often as 429) nor on the deprecated `error_subcode`. Source: Meta's
"Error codes" page (developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes)
and "Throughput" page; see the README for the table. Codes in neither set fall back
to the HTTP status: 429 and 5xx are retried, other 4xx are not.
"""

from __future__ import annotations


def _codes(*codes: int | range) -> frozenset[str]:
    flat: list[int] = []
    for code in codes:
        flat.extend(code if isinstance(code, range) else [code])
    return frozenset(str(code) for code in flat)


TRANSIENT_CODES = _codes(
    4,  # API too many calls: the app's rate limit
    80007,  # the WhatsApp Business Account's rate limit
    130429,  # throughput reached (80 mps by default)
    131056,  # pair rate limit: too many messages to the same recipient
    1,  # API Unknown: "possibly a temporary issue"
    2,  # API Service: temporary downtime or overload
    131000,  # "Something went wrong", try again
    131016,  # service unavailable
    133004,  # server temporarily unavailable
    131057,  # account in maintenance (a throughput upgrade)
)

PERMANENT_CODES = _codes(
    0,  # AuthException
    3,  # API method: the app lacks the capability
    10,  # permission denied
    190,  # access token expired or invalid
    range(200, 300),  # API permission
    100,  # invalid parameter
    131008,  # required parameter missing
    131009,  # parameter value not valid
    131021,  # recipient cannot be the sender
    131051,  # unsupported message type
    131026,  # undeliverable: not on WhatsApp, old client, terms not accepted
    131047,  # more than 24 h since the recipient replied: needs a template
    131042,  # payment issue
    131050,  # user opted out of marketing
    368,  # temporarily blocked for policy violations
    131031,  # business account locked
    130497,  # business account restricted from messaging users in this country
    range(132000, 132017),  # template errors
    133010,  # phone number not registered
    131048,  # spam rate limit: retrying makes the number's quality worse
)

WINDOW_CODES = _codes(131047)
"""Re-engagement: more than 24 hours since the recipient last wrote, so free-form
messages are refused and only an approved template goes out. The worker then sends
the event's `template_meta`, once."""
