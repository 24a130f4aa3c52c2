"""wa-gateway: a WhatsApp notification gateway.

This package namespace is the public plugin API: a provider plugin imports from here
(and from `wa_gateway.testing` in its tests), never from the modules behind it.
"""

__version__ = "0.1.0"

from .errors import UserError
from .hookspecs import hookimpl
from .http_provider import HttpAnswer, HttpProvider, parse_retry_after
from .models import Media, Notification, Target
from .provider import (
    Capabilities,
    LateFailure,
    PermanentError,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    ProviderError,
    ProviderReceipt,
    Receipt,
    TransientError,
    WebhookRejected,
    WebhookReply,
    WebhookRequest,
)

__all__ = [
    "Capabilities",
    "HttpAnswer",
    "HttpProvider",
    "LateFailure",
    "Media",
    "Notification",
    "PermanentError",
    "Provider",
    "ProviderConfig",
    "ProviderConfigError",
    "ProviderError",
    "ProviderReceipt",
    "Receipt",
    "Target",
    "TransientError",
    "UserError",
    "WebhookRejected",
    "WebhookReply",
    "WebhookRequest",
    "hookimpl",
    "parse_retry_after",
]
