"""Watzap's body `status` codes and what each means for a retry.

Source: Watzap's response-code table (api-docs.watzap.id, copied in
ay4t/php-watzap-id:docs/README.md) and an observed 1005 body; see the README.
"""

from __future__ import annotations

SUCCESS = "200"

PERMANENT_CODES = frozenset(
    {
        "1002",  # Invalid API Key: fix WA_API_KEY
        "1003",  # Invalid Number Key: fix WATZAP_NUMBER_KEY
        "1004",  # Pairing Failed, Access Denied: a human must pair the number again
    }
)

INSTANCE_NOT_STARTED = "1005"
"""'Fatal Error with Dynamic Message', in practice 'WhatsApp Instance Not Started':
the paired phone or its session is down. Retrying in seconds cannot help."""

RETRY_AFTER = {INSTANCE_NOT_STARTED: 300.0}
"""Seconds to wait before retrying a code, when Watzap's own answer implies it."""
