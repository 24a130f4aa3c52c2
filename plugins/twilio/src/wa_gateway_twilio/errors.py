"""Twilio REST error `code` values and what each means for a retry.

Sources: twilio.com/docs/errors/<code> and twilio.com/docs/api/errors; see the
README. Codes in neither set fall back to the HTTP status: 429 and 5xx are retried
(honouring Retry-After), other 4xx are not.
"""

from __future__ import annotations

TRANSIENT_CODES = frozenset(
    {
        "20429",  # too many requests: never processed, "always safe to retry"
    }
)

PERMANENT_CODES = frozenset(
    {
        "20003",  # authentication failed: fix TWILIO_ACCOUNT_SID / WA_API_KEY
        "20403",  # account suspended or not allowed to use this resource
        "21211",  # invalid 'To' number
        "21614",  # 'To' is not a valid mobile number
        "21606",  # 'From' is not a valid, message-capable number of this account
        "21601",  # 'From' is not a valid phone number
        "63007",  # no WhatsApp channel for 'From': sender not set up or pending
        "21602",  # message body required
        "21617",  # body exceeds 1600 characters
        "21608",  # trial accounts may only send to verified numbers
        "21610",  # the recipient unsubscribed (replied STOP)
        "63016",  # outside the 24 h window: WhatsApp needs a template
        "63003",  # invalid WhatsApp recipient
        "63024",  # invalid or inactive WhatsApp recipient
    }
)

WINDOW_CODES = frozenset({"63016"})
"""Outside the 24-hour window: free-form messages are refused ("use a Message Template
instead"). The worker then sends the event's `template_twilio`, once."""
