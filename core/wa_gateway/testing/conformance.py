"""The conformance suite every provider plugin's tests subclass: `ProviderConformance`.

It checks what the worker relies on: the plugin registers through its entry point,
declares capabilities that refuse what its API rejects, returns a receipt, classifies
errors keeping the provider's words, gives up within its timeout and releases its
connections.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import pytest
import pytest_asyncio

from ..delivery import Delivery, Outcome, Route, Sent, Unservable
from ..metrics import Metrics
from ..models import Notification
from ..pacing import RateLimiter
from ..plugins import make_plugin_manager
from ..provider import (
    Capabilities,
    PermanentError,
    Provider,
    ProviderConfig,
    ProviderConfigError,
    ProviderError,
    Receipt,
    TransientError,
)
from ..resilience import CircuitBreaker
from .fake_api import NEVER, Answer, FakeProviderApi, RecordedRequest, closed_port
from .messages import SAMPLE_TEXT, group_message, phone_message


@dataclass(frozen=True)
class ErrorCase:
    """A scripted error answer and what the provider's error must keep from it."""

    answer: Answer
    code: str | None
    """The provider_code the error must carry (None when the answer has none)."""
    message: str | None = None
    """A fragment the provider_message must contain."""
    retry_after: float | None = None
    """The retry_after a TransientError must carry (to the second), when not None."""
    ambiguous: bool | None = None
    """Whether a TransientError must say the provider may have accepted the message
    (a 2xx without a message id), when not None."""
    id: str | None = None
    """The pytest id; by default the HTTP status and the code."""

    @property
    def test_id(self) -> str:
        return self.id or f"http{self.answer.status}-code{self.code}"


SHORT_TIMEOUT = 0.5
"""The total timeout the timeout checks configure, in seconds."""


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class ProviderConformance:
    """Checks every provider plugin must pass. Subclass it as `Test<Name>Conformance`.

    Set the class attributes and `make_config`; override `check_request` to assert the
    exact wire format (it runs on every request these checks send). Your own tests in
    the subclass can use the `api`, `config` and `provider` fixtures too.

    `send()` never checks whether it can serve a message: the gateway (422) and the
    worker (a dead letter, before any request) refuse what the declared capabilities
    exclude. So these checks hold the capabilities to the API: what they let through
    goes out whole, and what they exclude (and `rejected_messages`) never reaches it.
    """

    provider_name: ClassVar[str]
    """The name the plugin registers (what WA_PROVIDER selects)."""
    success: ClassVar[Answer]
    """The provider's answer to an accepted message."""
    success_message_id: ClassVar[str | None] = None
    """The provider_message_id the receipt must keep from `success`."""
    transient_cases: ClassVar[Sequence[ErrorCase]] = ()
    permanent_cases: ClassVar[Sequence[ErrorCase]] = ()
    required_settings: ClassVar[Sequence[str]] = ("WA_API_KEY",)
    """Variables without which the provider must refuse to start, naming the variable."""
    secret_settings: ClassVar[Sequence[str]] = ()
    """Variables besides WA_API_KEY whose values must never appear in an error."""
    rejected_messages: ClassVar[Sequence[Notification]] = ()
    """Messages the provider's API rejects whatever the moment (a group where it has no
    groups, a text over its limit): the declared capabilities must refuse each one."""

    def make_config(self, api_url: str) -> ProviderConfig:
        """A complete, valid configuration whose base URL is `api_url` (the fake API)."""
        raise NotImplementedError("set make_config(api_url) in your conformance class")

    def make_message(self) -> Notification:
        return phone_message()

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        """Assert that `request` is exactly what the provider's API expects for `message`."""

    # -- plumbing -------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        for argument, cases in (
            ("transient_case", self.transient_cases),
            ("permanent_case", self.permanent_cases),
        ):
            if argument in metafunc.fixturenames:
                metafunc.parametrize(argument, cases, ids=[case.test_id for case in cases])
        if "required_setting" in metafunc.fixturenames:
            metafunc.parametrize("required_setting", self.required_settings)

    @pytest_asyncio.fixture
    async def api(self) -> AsyncIterator[FakeProviderApi]:
        async with FakeProviderApi(default=self.success) as api:
            yield api

    @pytest.fixture
    def config(self, api: FakeProviderApi) -> ProviderConfig:
        return self.make_config(api.url)

    @pytest_asyncio.fixture
    async def provider(self, config: ProviderConfig) -> AsyncIterator[Provider]:
        provider = self.create(config)
        yield provider
        await provider.close()

    def create(self, config: ProviderConfig) -> Provider:
        """Build the provider the way the gateway does: through the installed plugins."""
        return make_plugin_manager(load_entry_points=True).create(self.provider_name, config)

    def check_requests(self, api: FakeProviderApi, message: Notification, count: int) -> None:
        assert len(api.requests) == count, f"expected {count} request(s), got {api.requests}"
        for request in api.requests:
            self.check_request(request, message)

    def secrets(self, config: ProviderConfig) -> list[str]:
        values = [config.settings.get(name, "") for name in self.secret_settings]
        return [value for value in (config.api_key, *values) if value]

    async def expect_error(
        self,
        provider: Provider,
        api: FakeProviderApi,
        config: ProviderConfig,
        case: ErrorCase,
        expected: type[ProviderError],
    ) -> ProviderError:
        api.script(case.answer)
        message = self.make_message()
        with pytest.raises(ProviderError) as caught:
            await provider.send(message)
        error = caught.value
        assert isinstance(error, expected), (
            f"{case.test_id}: {error!r} is not a {expected.__name__}"
        )
        assert error.provider_status == case.answer.status
        assert error.provider_code == case.code
        if case.message is not None:
            assert case.message in error.provider_message
        if case.retry_after is not None:
            assert isinstance(error, TransientError)
            assert error.retry_after == pytest.approx(case.retry_after, abs=1.0)
        if case.ambiguous is not None:
            assert isinstance(error, TransientError)
            assert error.ambiguous == case.ambiguous, f"{case.test_id}: ambiguous={error.ambiguous}"
        for secret in self.secrets(config):
            assert secret not in str(error) and secret not in error.provider_message
        self.check_requests(api, message, count=1)
        return error

    async def deliver(self, provider: Provider, message: Notification) -> Outcome:
        """The worker's delivery of `message`, with `provider` as its only route."""
        route = Route(provider, CircuitBreaker(provider.name), RateLimiter(math.inf))
        return await Delivery(route, None, Metrics()).deliver(message, attempts=0)

    async def expect_refused(
        self, provider: Provider, api: FakeProviderApi, message: Notification, why: str
    ) -> None:
        """The run-time check refuses `message` (a dead letter) without a request."""
        what = f"a {message.target.kind} message of {len(message.text)} characters"
        outcome = await self.deliver(provider, message)
        assert isinstance(outcome, Unservable), f"{what} ({why}) was not refused: {outcome!r}"
        assert outcome.provider == self.provider_name
        assert api.requests == [], f"sent {what} ({why})"

    # -- the checks -----------------------------------------------------------------

    def test_registers_through_its_entry_point(self) -> None:
        builtins = make_plugin_manager(load_entry_points=False)
        assert self.provider_name not in builtins.providers, "a built-in, not a plugin"
        plugins = make_plugin_manager(load_entry_points=True)
        assert self.provider_name in plugins.providers, f"not registered; {plugins.problems}"

    def test_declares_capabilities(self) -> None:
        factory = make_plugin_manager(load_entry_points=True).factory(self.provider_name)
        capabilities = getattr(factory, "capabilities", None)
        assert isinstance(capabilities, Capabilities)
        assert capabilities.groups or capabilities.phone_numbers
        assert capabilities.max_text_length > 0
        assert capabilities.send_rate > 0
        assert getattr(factory, "name", None) == self.provider_name

    def test_missing_setting_is_a_config_error(self, required_setting: str) -> None:
        config = self.make_config(f"http://127.0.0.1:{closed_port()}")
        if required_setting == "WA_API_KEY":
            config = dataclasses.replace(config, api_key=None)
        else:
            settings = {k: v for k, v in config.settings.items() if k != required_setting}
            config = dataclasses.replace(config, settings=settings)
        with pytest.raises(ProviderConfigError, match=re.escape(required_setting)):
            self.create(config)

    @pytest.mark.asyncio
    async def test_success_returns_a_receipt(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        message = self.make_message()
        receipt = await provider.send(message)
        assert isinstance(receipt, Receipt)
        assert receipt.provider == self.provider_name
        assert receipt.provider_message_id == self.success_message_id
        self.check_requests(api, message, count=1)

    @pytest.mark.asyncio
    async def test_transient_answer_raises_transient_error(
        self,
        provider: Provider,
        api: FakeProviderApi,
        config: ProviderConfig,
        transient_case: ErrorCase,
    ) -> None:
        await self.expect_error(provider, api, config, transient_case, TransientError)

    @pytest.mark.asyncio
    async def test_permanent_answer_raises_permanent_error(
        self,
        provider: Provider,
        api: FakeProviderApi,
        config: ProviderConfig,
        permanent_case: ErrorCase,
    ) -> None:
        await self.expect_error(provider, api, config, permanent_case, PermanentError)

    @pytest.mark.asyncio
    async def test_serves_exactly_the_target_kinds_it_declares(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        capabilities = provider.capabilities
        for message, served in (
            (phone_message(), capabilities.phone_numbers),
            (group_message(), capabilities.groups),
        ):
            api.requests.clear()
            if served:
                assert isinstance(await provider.send(message), Receipt)
                self.check_requests(api, message, count=1)
            else:
                await self.expect_refused(
                    provider, api, message, "a target kind it declares it cannot serve"
                )

    @pytest.mark.asyncio
    async def test_sends_a_text_at_its_limit_whole(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        limit = provider.capabilities.max_text_length
        text = (SAMPLE_TEXT * (limit // len(SAMPLE_TEXT) + 1))[:limit]
        message = self.make_message().model_copy(update={"text": text})
        outcome = await self.deliver(provider, message)
        assert isinstance(outcome, Sent), f"a text of {limit} characters was not sent: {outcome!r}"
        self.check_requests(api, message, count=1)

    @pytest.mark.asyncio
    async def test_refuses_text_over_its_limit(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        limit = provider.capabilities.max_text_length
        message = self.make_message().model_copy(update={"text": "x" * (limit + 1)})
        await self.expect_refused(provider, api, message, f"its limit is {limit}")

    @pytest.mark.asyncio
    async def test_capabilities_refuse_what_its_api_rejects(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        for message in self.rejected_messages:
            await self.expect_refused(provider, api, message, "its API rejects it")

    @pytest.mark.asyncio
    async def test_silent_server_is_transient_within_the_total_timeout(
        self, api: FakeProviderApi
    ) -> None:
        config = dataclasses.replace(
            self.make_config(api.url), connect_timeout=SHORT_TIMEOUT, total_timeout=SHORT_TIMEOUT
        )
        api.script(Answer(delay=NEVER))
        provider = self.create(config)
        try:
            started = time.monotonic()
            with pytest.raises(TransientError):
                # the outer limit only keeps a provider that ignores its timeout from hanging
                await asyncio.wait_for(provider.send(self.make_message()), SHORT_TIMEOUT + 10)
            elapsed = time.monotonic() - started
        finally:
            await provider.close()
        assert elapsed < SHORT_TIMEOUT + 1.0, f"gave up after {elapsed:.2f}s"

    @pytest.mark.asyncio
    async def test_refused_connection_is_transient(self) -> None:
        provider = self.create(self.make_config(f"http://127.0.0.1:{closed_port()}"))
        try:
            with pytest.raises(TransientError):
                await provider.send(self.make_message())
        finally:
            await provider.close()

    @pytest.mark.asyncio
    async def test_reuses_one_connection_across_sends(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        for _ in range(3):
            await provider.send(self.make_message())
        assert len(api.requests) == 3
        assert len({request.peer for request in api.requests}) == 1, "a new connection per send"

    @pytest.mark.asyncio
    async def test_close_releases_its_connections(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        await provider.send(self.make_message())
        assert api.open_connections == 1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            await provider.close()
            gc.collect()  # a session dropped instead of closed warns when collected
        unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert not unclosed, f"close() dropped resources without closing them: {unclosed}"
        assert await wait_until(lambda: api.open_connections == 0), "close() left a connection open"
