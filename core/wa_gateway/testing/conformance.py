"""The conformance suite every provider plugin's tests subclass: `ProviderConformance`,
and `WebhookConformance` beside it for a provider that takes receipts webhooks.

`ProviderConformance` checks what the worker relies on: the plugin registers through
its entry point, declares capabilities that refuse what its API rejects, returns a
receipt, classifies errors keeping the provider's words, gives up within its timeout
and releases its connections. `WebhookConformance` checks what the gateway relies on
at `/webhooks/<channel>`: no webhook without its secret, the receipts of a signed
report, 401 for anything not signed, and only WebhookReply or WebhookRejected (4xx)
for whatever the internet sends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import math
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
import pytest_asyncio
from multidict import CIMultiDict

from ..delivery import Delivery, Failed, Outcome, Route, Sent, Unservable
from ..metrics import Metrics
from ..models import MAX_TEXT_LENGTH, MEDIA_KINDS, Notification
from ..pacing import RateLimiter
from ..plugins import make_plugin_manager
from ..provider import (
    RECEIPT_STATUSES,
    Capabilities,
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
from ..resilience import CircuitBreaker
from .fake_api import NEVER, Answer, FakeProviderApi, RecordedRequest, closed_port
from .messages import (
    MEDIA_URLS,
    SAMPLE_CAPTION,
    SAMPLE_GROUP,
    SAMPLE_PHONE,
    SAMPLE_TEMPLATE_PARAMS,
    SAMPLE_TEXT,
    group_message,
    phone_message,
    sample_media,
)
from .wire import WireRequest, check_texts_arrive_exactly, check_wire


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

    Media and templates are checked as declared. Each media kind in
    `capabilities.media` must go out exactly as `expected_media_request` says (to every
    target kind served, with a caption, with the text as its caption, without one), its
    caption limit whole and one character more refused before any request; a kind not
    declared must be refused before any request. A provider that takes templates
    (overrides `template_refusal`) must accept `sample_template` and refuse unknown
    keys and `rejected_templates` in one line, and send `expected_template_request`
    exactly; one with `window_codes` must take templates, and its `window_cases` (one
    per code) must be permanent errors after which the worker sends the template once,
    or, without one, fails saying what to configure. Texts (captions, parameters)
    must arrive as UTF-8, byte for byte. `check_request` runs on these requests too.
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
    window_cases: ClassVar[Sequence[ErrorCase]] = ()
    """The provider's answer for each of its `window_codes` ("outside the 24-hour
    window: free-form text refused"), one case per code."""
    rejected_templates: ClassVar[Sequence[Mapping[str, Any]]] = ()
    """`template_<name>` tables, as written in the events file, that the provider must
    refuse when the file loads (a bad name, parameters out of order …)."""

    def make_config(self, api_url: str) -> ProviderConfig:
        """A complete, valid configuration whose base URL is `api_url` (the fake API)."""
        raise NotImplementedError("set make_config(api_url) in your conformance class")

    def make_message(self) -> Notification:
        return phone_message()

    def check_request(self, request: RecordedRequest, message: Notification) -> None:
        """Assert that `request` is exactly what the provider's API expects for `message`.

        It also sees the media and template sends of a provider that declares them
        (`message.media`, `message.use_template`), whose bodies the kit compares with
        `expected_media_request` / `expected_template_request` itself."""

    def expected_media_request(
        self, kind: str, target_kind: str, caption: str | None
    ) -> WireRequest:
        """The exact request for a `kind` ("image", "document") of `capabilities.media`
        sent to SAMPLE_PHONE (`target_kind` "phone") or SAMPLE_GROUP ("group"): the URL
        `MEDIA_URLS[kind]`, a document's filename SAMPLE_FILENAME, and `caption` (None:
        no text goes with it). Write the body out literally."""
        raise NotImplementedError(
            f"{type(self).__name__}: the provider declares media "
            "(capabilities.media): write expected_media_request(kind, target_kind, caption)"
        )

    def sample_template(self, params: Sequence[str]) -> Mapping[str, Any]:
        """Your `template_<name>` table carrying `params` (in this order) wherever the
        template's parameters go: as the events file writes it (the params are then
        Jinja, `{{ id }}`), and as it is rendered at POST (plain text)."""
        raise NotImplementedError(
            f"{type(self).__name__}: the provider takes templates (template_refusal): "
            "write sample_template(params)"
        )

    def expected_template_request(self) -> WireRequest:
        """The exact request for `sample_template(SAMPLE_TEMPLATE_PARAMS)` sent instead of
        the text (`use_template`) to SAMPLE_PHONE (SAMPLE_GROUP for a provider without
        phone numbers). Write the body out literally."""
        raise NotImplementedError(
            f"{type(self).__name__}: the provider takes templates (template_refusal): "
            "write expected_template_request()"
        )

    # -- plumbing -------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        # Cooperative: a test class that also subclasses WebhookConformance gets both.
        parent = getattr(super(), "pytest_generate_tests", None)
        if parent is not None:
            parent(metafunc)
        for argument, cases in (
            ("transient_case", self.transient_cases),
            ("permanent_case", self.permanent_cases),
            ("window_case", self.window_cases),
        ):
            if argument not in metafunc.fixturenames:
                continue
            if argument == "window_case" and not cases:
                # no window codes: each window test checks instead that a refusal never
                # turns into a template send (the first permanent case, or a plain 400)
                metafunc.parametrize(argument, [None], ids=["no-window-codes"])
            else:
                metafunc.parametrize(argument, cases, ids=[case.test_id for case in cases])
        if "required_setting" in metafunc.fixturenames:
            metafunc.parametrize("required_setting", self.required_settings)
        if "media_kind" in metafunc.fixturenames:
            metafunc.parametrize("media_kind", MEDIA_KINDS)

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

    async def check_no_template_after_a_refusal(self, provider: Provider, api: FakeProviderApi) -> None:
        """For a provider without window codes: a permanent refusal is the end of it, one
        request and no template (the worker asks for one only on a window code)."""
        assert not provider.window_codes
        refusal = self.permanent_cases[0].answer if self.permanent_cases else Answer(400, {"error": "refused"})
        api.script(refusal)
        target = _served_target_kinds(provider.capabilities)[0]
        message = (phone_message(SAMPLE_PHONE, SAMPLE_TEXT) if target == "phone" else
                   group_message(SAMPLE_GROUP, SAMPLE_TEXT)).model_copy(
            update={"event": "new_request", "templates": {self.provider_name: {"name": "new_request"}}}
        )
        outcome = await self.deliver(provider, message)
        assert not isinstance(outcome, Sent), f"a refusal was sent after all: {outcome!r}"
        assert len(api.requests) == 1, f"expected one request, no template after it: {api.requests}"

    def provider_factory(self) -> Any:
        """What the plugin registers (its Provider class), as the gateway finds it."""
        return make_plugin_manager(load_entry_points=True).factory(self.provider_name)

    def media_message(
        self, kind: str, target_kind: str, *, caption: str | None = None, text: str = ""
    ) -> Notification:
        """The sample media of `kind` to SAMPLE_PHONE or SAMPLE_GROUP, as queued."""
        build = phone_message if target_kind == "phone" else group_message
        return build(text=text, media=sample_media(kind, caption=caption))

    def template_message(self, provider: Provider, *, use_template: bool = True) -> Notification:
        """The text of event `new_request` with `sample_template(SAMPLE_TEMPLATE_PARAMS)`
        rendered for this provider; `use_template`: sent as the template."""
        build = phone_message if provider.capabilities.phone_numbers else group_message
        template = self.sample_template(SAMPLE_TEMPLATE_PARAMS)
        return build(
            event="new_request", templates={self.provider_name: template}, use_template=use_template
        )

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

    # -- media ----------------------------------------------------------------------

    def test_declares_only_media_kinds_the_gateway_knows(self) -> None:
        capabilities = self.provider_factory().capabilities
        for kind, limit in capabilities.media.items():
            assert kind in MEDIA_KINDS, f"media kind {kind!r}: the gateway sends {MEDIA_KINDS}"
            assert isinstance(limit, int) and not isinstance(limit, bool), f"{kind}: {limit!r}"
            assert 0 <= limit <= MAX_TEXT_LENGTH, f"{kind}'s caption limit {limit}"

    @pytest.mark.asyncio
    async def test_sends_a_declared_media_kind_exactly_or_refuses_it(
        self, provider: Provider, api: FakeProviderApi, media_kind: str
    ) -> None:
        capabilities = provider.capabilities
        targets = _served_target_kinds(capabilities)
        if media_kind not in capabilities.media:
            for target in targets:
                message = self.media_message(media_kind, target)
                await self.expect_refused(provider, api, message, f"it declares no {media_kind}")
            return
        # (the media's caption, the text, what must go with it)
        variants: list[tuple[str | None, str, str | None]] = [(None, "", None)]
        if capabilities.media[media_kind]:
            variants += [(SAMPLE_CAPTION, "", SAMPLE_CAPTION), (None, SAMPLE_CAPTION, SAMPLE_CAPTION)]
        for target in targets:
            for caption, text, shown in variants:
                message = self.media_message(media_kind, target, caption=caption, text=text)
                what = f"a {media_kind} to a {target}, caption {caption!r}, text {text!r}"
                api.requests.clear()
                outcome = await self.deliver(provider, message)
                assert isinstance(outcome, Sent), f"{what} was not sent: {outcome!r}"
                self.check_requests(api, message, count=1)
                (request,) = api.requests
                check_wire(request, self.expected_media_request(media_kind, target, shown), what)
                check_texts_arrive_exactly(request, [MEDIA_URLS[media_kind]], what)
                if shown:
                    check_texts_arrive_exactly(request, [shown], what)
                _check_no_ascii_escapes(request, what)

    @pytest.mark.asyncio
    async def test_media_caption_at_its_limit_goes_whole_and_one_more_is_refused(
        self, provider: Provider, api: FakeProviderApi, media_kind: str
    ) -> None:
        capabilities = provider.capabilities
        if media_kind not in capabilities.media:  # a kind it does not send: refused, not tried
            target = _served_target_kinds(capabilities)[0]
            message = self.media_message(media_kind, target)
            await self.expect_refused(provider, api, message, f"it declares no {media_kind}")
            return
        limit = capabilities.media[media_kind]
        target = _served_target_kinds(capabilities)[0]
        if limit:
            caption = (SAMPLE_CAPTION * (limit // len(SAMPLE_CAPTION) + 1))[:limit]
            message = self.media_message(media_kind, target, caption=caption)
            outcome = await self.deliver(provider, message)
            what = f"a {media_kind} with a caption of {limit} characters"
            assert isinstance(outcome, Sent), f"{what} was not sent: {outcome!r}"
            self.check_requests(api, message, count=1)
            check_wire(api.requests[0], self.expected_media_request(media_kind, target, caption), what)
            check_texts_arrive_exactly(api.requests[0], [caption], what)
            api.requests.clear()
        over = "x" * (limit + 1)
        why = f"a {media_kind} takes {limit} characters of text"
        overs = [self.media_message(media_kind, target, text=over)]
        if limit < MAX_TEXT_LENGTH:  # a longer caption is refused by the model already
            overs.append(self.media_message(media_kind, target, caption=over))
        for message in overs:
            await self.expect_refused(provider, api, message, why)

    # -- templates and the 24-hour window -------------------------------------------

    def test_window_codes_come_with_templates_and_a_case_each(self) -> None:
        factory = self.provider_factory()
        codes = factory.window_codes
        assert isinstance(codes, frozenset), f"window_codes {codes!r} is not a frozenset"
        assert all(isinstance(code, str) and code for code in codes), f"window_codes {codes!r}"
        if codes:
            assert _takes_templates(factory), (
                "window_codes without templates: override template_refusal, or the worker "
                "can never send the template those codes ask for"
            )
        cased = [case.code for case in self.window_cases]
        assert sorted(cased, key=str) == sorted(codes), (
            f"window_cases give codes {cased}; window_codes are {sorted(codes)}: one case each"
        )

    def test_template_refusal_takes_its_sample_and_refuses_the_rest(self) -> None:
        factory = self.provider_factory()
        refusal = factory.template_refusal
        if not _takes_templates(factory):
            _check_one_line(refusal({"name": "new_request"}), "a template (it takes none)")
            return
        for params in (["{{ id }}", "{{ requester }}"], list(SAMPLE_TEMPLATE_PARAMS)):
            sample = self.sample_template(params)
            assert refusal(sample) is None, f"refuses its own sample {sample!r}: {refusal(sample)}"
        unknown = {**self.sample_template(["{{ id }}"]), "no_such_key": "x"}
        _check_one_line(refusal(unknown), "an unknown key (a typo would go unnoticed)")
        assert self.rejected_templates, "list in rejected_templates what your API refuses"
        for spec in self.rejected_templates:
            _check_one_line(refusal(spec), repr(spec))

    @pytest.mark.asyncio
    async def test_sends_its_template_exactly(
        self, provider: Provider, api: FakeProviderApi
    ) -> None:
        if not _takes_templates(type(provider)):
            # it takes none: the events file cannot give it one, and no refusal of its
            # makes the worker ask for one
            _check_one_line(type(provider).template_refusal({"name": "new_request"}), "a template")
            assert not provider.window_codes, "window_codes without templates"
            await self.check_no_template_after_a_refusal(provider, api)
            return
        message = self.template_message(provider)
        assert isinstance(await provider.send(message), Receipt)
        self.check_requests(api, message, count=1)
        (request,) = api.requests
        check_wire(request, self.expected_template_request(), "the template")
        check_texts_arrive_exactly(request, SAMPLE_TEMPLATE_PARAMS, "the template's parameters")
        _check_no_ascii_escapes(request, "the template")

    @pytest.mark.asyncio
    async def test_window_answer_is_a_permanent_error(
        self,
        provider: Provider,
        api: FakeProviderApi,
        config: ProviderConfig,
        window_case: ErrorCase,
    ) -> None:
        if window_case is None:
            await self.check_no_template_after_a_refusal(provider, api)
            return
        error = await self.expect_error(provider, api, config, window_case, PermanentError)
        assert error.provider_code in provider.window_codes

    @pytest.mark.asyncio
    async def test_outside_the_window_the_template_goes_out_once(
        self, provider: Provider, api: FakeProviderApi, window_case: ErrorCase
    ) -> None:
        if window_case is None:
            await self.check_no_template_after_a_refusal(provider, api)
            return
        api.script(window_case.answer)  # then `success`
        message = self.template_message(provider, use_template=False)
        outcome = await self.deliver(provider, message)
        assert isinstance(outcome, Sent) and outcome.template, f"no template went out: {outcome!r}"
        assert len(api.requests) == 2, f"expected the text, then the template: {api.requests}"
        text, template = api.requests
        self.check_request(text, message)
        self.check_request(template, message.model_copy(update={"use_template": True}))
        check_wire(template, self.expected_template_request(), "the template after the window")
        check_texts_arrive_exactly(template, SAMPLE_TEMPLATE_PARAMS, "the template's parameters")

    @pytest.mark.asyncio
    async def test_outside_the_window_without_a_template_says_what_to_configure(
        self, provider: Provider, api: FakeProviderApi, window_case: ErrorCase
    ) -> None:
        if window_case is None:
            await self.check_no_template_after_a_refusal(provider, api)
            return
        api.script(window_case.answer)
        message = self.template_message(provider, use_template=False).model_copy(
            update={"templates": {}}
        )
        outcome = await self.deliver(provider, message)
        assert isinstance(outcome, Failed) and outcome.failure.permanent, f"{outcome!r}"
        reason = outcome.failure.reason
        assert "outside the 24-hour window" in reason and "event new_request" in reason, reason
        self.check_requests(api, message, count=1)


def _served_target_kinds(capabilities: Capabilities) -> list[str]:
    served = (("phone", capabilities.phone_numbers), ("group", capabilities.groups))
    return [kind for kind, serves in served if serves]


def _takes_templates(factory: Any) -> bool:
    """It overrides `Provider.template_refusal`, which refuses every template."""
    refusal = getattr(factory, "template_refusal", None)
    base = getattr(Provider.template_refusal, "__func__", None)
    return getattr(refusal, "__func__", refusal) is not base


def _check_one_line(refusal: object, what: str) -> None:
    """A refusal the events file's start-up error can show: one non-empty line."""
    assert isinstance(refusal, str) and refusal.strip(), f"{what} was not refused: {refusal!r}"
    assert "\n" not in refusal and "\r" not in refusal, f"{what}: not one line: {refusal!r}"


def _check_no_ascii_escapes(request: RecordedRequest, what: str) -> None:
    """A JSON body carries every non-ASCII character as UTF-8, none as a \\u escape."""
    if request.content_type == "application/json":
        assert b"\\u" not in request.body, f"{what}: \\u escapes in {request.body!r}"


# -- receipts webhooks -------------------------------------------------------------


@dataclass(frozen=True)
class WebhookSample:
    """A status report the provider sends, and the receipts it must yield."""

    payload: Any
    """What `signed_request` turns into a request: the parsed JSON body, the form's
    fields … in whatever shape your `signed_request` takes."""
    receipts: Sequence[ProviderReceipt]
    """The receipts, in order. Ids, statuses and codes must be equal; `at` when it is
    not None; `message` when it is not None must be contained in the receipt's."""
    id: str | None = None
    """The pytest id; by default the statuses of `receipts`."""

    @property
    def test_id(self) -> str:
        return self.id or "-".join(receipt.status for receipt in self.receipts) or "none"


WEBHOOK_BODY_LIMIT = 64 * 1024
"""The gateway answers 413 to a larger body before the provider sees it."""

_DEPTH = 30_000

HOSTILE_BODIES: tuple[tuple[str, bytes], ...] = (
    ("empty", b""),
    ("empty-object", b"{}"),
    ("empty-array", b"[]"),
    ("null", b"null"),
    ("true", b"true"),
    ("string", b'"whatsapp_business_account"'),
    ("number", b"0"),
    ("deeply-nested-arrays", b"[" * _DEPTH + b"]" * _DEPTH),
    ("deeply-nested-objects", b'{"a":' * 10_000 + b"1" + b"}" * 10_000),
    ("huge-integer", b"9" * 60_000),
    ("huge-integer-in-a-field", b'{"object": ' + b"9" * 5_000 + b', "entry": []}'),
    ("huge-exponent", b'{"object": 1e999999, "entry": [-1e999999]}'),
    ("nan-and-infinity", b'{"object": NaN, "entry": [Infinity, -Infinity]}'),
    ("bad-utf8", b"\xff\xfe\xfd"),
    ("bad-utf8-in-a-string", b'{"object": "\xc3\x28", "entry": []}'),
    ("utf8-encoded-surrogate", b'{"object": "\xed\xa0\x80", "entry": []}'),
    ("escaped-lone-surrogates", b'{"object": "\\ud800", "entry": [{"id": "\\udfff"}]}'),
    ("utf8-bom", b"\xef\xbb\xbf{}"),
    ("utf16", '{"object": "whatsapp_business_account"}'.encode("utf-16")),
    ("nul-bytes", b"\x00" * 100),
    ("nul-and-emoji", '{"object": "\x00😀", "entry": ["\x00😀"]}'.encode()),
    ("truncated-json", b'{"object": "whatsapp_business_account", "entry": [{'),
    ("duplicate-keys", b'{"object": 1, "object": "whatsapp_business_account", "entry": {}}'),
    ("binary", bytes(range(256)) * 4),
    ("form-bad-percent-escapes", b"MessageSid=%ZZ&MessageStatus=%"),
    ("form-bad-utf8-escapes", b"MessageSid=%FF%FE&MessageStatus=%C3%28"),
    ("form-nul", b"MessageSid=%00&MessageStatus=delivered%00"),
    ("form-raw-latin1", "MessageSid=é&MessageStatus=délivré".encode("latin-1")),
    (
        "form-repeated-fields",
        b"MessageStatus=delivered&MessageStatus=read&MessageSid=a&MessageSid=b",
    ),
    ("form-empty-fields", b"&&=&=&&"),
    ("form-only-equals", b"="),
    ("form-name-without-value", b"MessageSid"),
    ("form-semicolons", b"MessageSid=x;MessageStatus=delivered"),
    ("form-plus-and-emoji", b"MessageStatus=+%2B+&ErrorMessage=%F0%9F%98%80%00"),
    ("form-huge-value", b"ErrorMessage=" + b"%41" * 20_000),
    ("form-many-fields", b"&".join(b"k%d=v" % i for i in range(5_000))),
)
"""Bodies no provider sends: each must be answered or rejected (4xx), never a crash."""

WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    10**30,
    1.5,
    float("inf"),
    float("nan"),
    "",
    " ",
    "\x00",
    "\x00😀 é",
    "\ud800",
    "9" * 30,
    "-1",
    "x" * 2_000,
    [],
    [None],
    {},
    {"": None},
)
"""What each field of a sample is replaced with, one field at a time."""

_CONTENT_TYPES = (
    None,
    "",
    "application/json",
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=latin-1",
    "multipart/form-data; boundary=x",
    "text/plain; charset=utf-8",
    "\x00😀",
)
_HOSTILE_SIGNATURES = (
    "",
    " ",
    "sha256=",
    "sha256=" + "zz" * 32,
    "sha1=" + "0" * 40,
    "====",
    "é",
    "\x00",
    "\ud800",
    "😀" * 100,
    "a" * 10_000,
)
_HOSTILE_QUERIES: tuple[dict[str, str], ...] = (
    {},
    {"hub.mode": "subscribe"},
    {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": ""},
    {"hub.mode": "subscribe", "hub.verify_token": "\x00😀 é", "hub.challenge": "\x00"},
    {"hub.mode": "subscribe", "hub.verify_token": "\ud800", "hub.challenge": "\ud800"},
    {"hub.mode": "x" * 10_000, "hub.verify_token": "x" * 10_000},
    {"": "", "\x00": "\x00"},
)
_HOSTILE_METHODS = ("GET", "POST", "PUT", "DELETE", "get", "post", "")


class WebhookConformance:
    """Checks of a provider's receipts webhook; opt in beside ProviderConformance:

        class TestAcmeConformance(ProviderConformance, WebhookConformance): ...

    Set `provider_name` (shared with ProviderConformance), `signature_header` and
    `webhook_settings`, and implement `make_webhook_config`, `signed_request` and
    `sample_payloads`. The checks call `handle_webhook` directly, as the gateway does
    (no server, no event loop needed by the provider): a provider without its
    webhook's settings says `accepts_webhooks` False; with them, each signed sample
    yields its receipts, whatever the case of the header names; a flipped signature
    character, a missing signature and a body changed after signing are 401; and
    hostile input (HOSTILE_BODIES signed and unsigned under odd content types and
    methods, every field of every sample replaced by each of WRONG_VALUES or removed,
    odd signature headers and query strings) is answered with a 2xx WebhookReply
    whose receipts a database can store, or rejected with WebhookRejected, never any
    other exception.
    """

    provider_name: ClassVar[str]
    """The name the plugin registers (what WA_PROVIDER selects)."""
    signature_header: ClassVar[str]
    """The header that carries the provider's signature (X-Hub-Signature-256 …)."""
    webhook_settings: ClassVar[Sequence[str]] = ()
    """Settings the webhook needs (its secret): without any one of them the provider
    must say `accepts_webhooks` False, or refuse to start (WA_API_KEY when the API key
    is the signing key)."""

    def make_webhook_config(self) -> ProviderConfig:
        """A complete configuration with the webhook on (its secret, a webhook_url)."""
        raise NotImplementedError("set make_webhook_config() in your conformance class")

    def signed_request(self, provider: Provider, payload: Any) -> WebhookRequest:
        """The POST the provider would send with `payload`, signed as it signs.

        `payload` is a WebhookSample's payload, a copy of one with a field changed to a
        wrong value (NaN, a lone surrogate …: encode JSON with `json.dumps`' ASCII
        escapes, forms with `errors="surrogatepass"`) or removed, or `bytes`: then that
        is the body exactly (sign what can be read of it). Use the headers the provider
        sends (content type, signature)."""
        raise NotImplementedError("set signed_request(provider, payload) in your conformance class")

    def sample_payloads(self) -> Sequence[WebhookSample]:
        """Real reports: at least a delivered, a read and a failed with its error code."""
        raise NotImplementedError("set sample_payloads() in your conformance class")

    def tampered_body(self, body: bytes) -> bytes:
        """`body` changed after signing, still well-formed: its last letter or digit is
        replaced by its neighbour. Override it when that would not change a signed byte."""
        for index in range(len(body) - 1, -1, -1):
            char = body[index : index + 1]
            if char.isalnum():
                neighbour = bytes([body[index] - 1 if char in b"9zZ" else body[index] + 1])
                return body[:index] + neighbour + body[index + 1 :]
        return body + b" "

    # -- plumbing -------------------------------------------------------------------

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        parent = getattr(super(), "pytest_generate_tests", None)
        if parent is not None:
            parent(metafunc)
        if "webhook_sample" in metafunc.fixturenames:
            samples = self.sample_payloads()
            metafunc.parametrize("webhook_sample", samples, ids=[s.test_id for s in samples])

    def create_webhook_provider(self, config: ProviderConfig) -> Provider:
        """The provider built as the gateway builds it: through the installed plugins."""
        return make_plugin_manager(load_entry_points=True).create(self.provider_name, config)

    @pytest_asyncio.fixture
    async def webhook_provider(self) -> AsyncIterator[Provider]:
        provider = self.create_webhook_provider(self.make_webhook_config())
        yield provider
        await provider.close()

    def webhook_signed(self, provider: Provider, payload: Any) -> WebhookRequest:
        request = self.signed_request(provider, payload)
        assert isinstance(request, WebhookRequest), f"signed_request gave {request!r}"
        assert len(request.body) <= WEBHOOK_BODY_LIMIT, "the gateway never passes that much"
        return request

    def signature_of(self, request: WebhookRequest) -> str:
        wanted = self.signature_header.lower()
        values = [value for key, value in request.headers.items() if key.lower() == wanted]
        assert len(values) == 1, f"signed_request gave no one {self.signature_header}: {request}"
        return values[0]

    def with_signature(self, request: WebhookRequest, signature: str | None) -> WebhookRequest:
        """`request` with its signature header replaced, or removed when None."""
        wanted = self.signature_header.lower()
        headers = {k: v for k, v in request.headers.items() if k.lower() != wanted}
        if signature is not None:
            headers[self.signature_header] = signature
        return dataclasses.replace(request, headers=headers)

    def expect_receipts(
        self, provider: Provider, request: WebhookRequest, sample: WebhookSample, how: str
    ) -> None:
        reply = provider.handle_webhook(request)
        check_webhook_reply(reply)
        got, expected = list(reply.receipts), list(sample.receipts)
        assert len(got) == len(expected), f"{sample.test_id} ({how}): {got} is not {expected}"
        for receipt, want in zip(got, expected, strict=True):
            keys = ("provider_message_id", "status", "code")
            assert [getattr(receipt, k) for k in keys] == [getattr(want, k) for k in keys], (
                f"{sample.test_id} ({how}): {receipt} is not {want}"
            )
            if want.at is not None:
                assert receipt.at == want.at, f"{sample.test_id}: at {receipt.at} is not {want.at}"
            if want.message is not None:
                assert receipt.message is not None and want.message in receipt.message, (
                    f"{sample.test_id}: message {receipt.message!r} lacks {want.message!r}"
                )

    def expect_unauthorized(self, provider: Provider, request: WebhookRequest, what: str) -> None:
        with pytest.raises(WebhookRejected) as caught:
            provider.handle_webhook(request)
        assert caught.value.status == 401, f"{what}: {caught.value.status} {caught.value.detail}"

    # -- the checks -----------------------------------------------------------------

    def test_webhook_is_off_without_its_settings(self) -> None:
        assert self.webhook_settings, "name the settings the webhook needs in webhook_settings"
        for setting in self.webhook_settings:
            config = self.make_webhook_config()
            if setting == "WA_API_KEY":
                config = dataclasses.replace(config, api_key=None)
            else:
                settings = {k: v for k, v in config.settings.items() if k != setting}
                config = dataclasses.replace(config, settings=settings)
            try:
                provider = self.create_webhook_provider(config)
            except ProviderConfigError:
                continue  # it cannot run without it at all
            assert provider.accepts_webhooks is False, f"takes webhooks without {setting}"

    def test_webhook_is_on_with_its_settings(self) -> None:
        provider = self.create_webhook_provider(self.make_webhook_config())
        assert provider.accepts_webhooks is True

    def test_samples_cover_delivered_read_and_failed_with_a_code(self) -> None:
        receipts = [receipt for sample in self.sample_payloads() for receipt in sample.receipts]
        statuses = {receipt.status for receipt in receipts}
        assert {"delivered", "read", "failed"} <= statuses, f"samples give only {statuses}"
        assert any(r.status == "failed" and r.code for r in receipts), "no failed with a code"

    @pytest.mark.asyncio
    async def test_webhook_signed_sample_yields_its_receipts(
        self, webhook_provider: Provider, webhook_sample: WebhookSample
    ) -> None:
        request = self.webhook_signed(webhook_provider, webhook_sample.payload)
        self.expect_receipts(webhook_provider, request, webhook_sample, "as signed")
        for how, case in (("lower-case header names", str.lower), ("upper-case", str.upper)):
            headers = {case(key): value for key, value in request.headers.items()}
            self.expect_receipts(
                webhook_provider, dataclasses.replace(request, headers=headers), webhook_sample, how
            )

    @pytest.mark.asyncio
    async def test_webhook_flipped_signature_character_is_401(
        self, webhook_provider: Provider, webhook_sample: WebhookSample
    ) -> None:
        request = self.webhook_signed(webhook_provider, webhook_sample.payload)
        signature = self.signature_of(request)
        flipped = _flip_one_character(signature)
        assert flipped != signature
        self.expect_unauthorized(
            webhook_provider, self.with_signature(request, flipped), "a flipped signature"
        )

    @pytest.mark.asyncio
    async def test_webhook_missing_signature_is_401(
        self, webhook_provider: Provider, webhook_sample: WebhookSample
    ) -> None:
        request = self.webhook_signed(webhook_provider, webhook_sample.payload)
        self.expect_unauthorized(
            webhook_provider, self.with_signature(request, None), "no signature header"
        )

    @pytest.mark.asyncio
    async def test_webhook_body_changed_after_signing_is_401(
        self, webhook_provider: Provider, webhook_sample: WebhookSample
    ) -> None:
        request = self.webhook_signed(webhook_provider, webhook_sample.payload)
        body = self.tampered_body(request.body)
        assert body != request.body, "tampered_body changed nothing"
        self.expect_unauthorized(
            webhook_provider,
            dataclasses.replace(request, body=body),
            "a body changed after signing",
        )

    @pytest.mark.asyncio
    async def test_webhook_survives_hostile_bodies(self, webhook_provider: Provider) -> None:
        survey = _Survey(webhook_provider)
        for name, body in HOSTILE_BODIES:
            signed = self.webhook_signed(webhook_provider, body)
            for method in _HOSTILE_METHODS:
                survey.check(f"{name}, signed, {method or 'no method'}", signed, method=method)
            for content_type in _CONTENT_TYPES:
                headers = {} if content_type is None else {"Content-Type": content_type}
                unsigned = dataclasses.replace(signed, headers=headers)
                survey.check(f"{name}, unsigned, {content_type!r}", unsigned)
        survey.done()

    @pytest.mark.asyncio
    async def test_webhook_survives_wrong_types_in_every_field(
        self, webhook_provider: Provider
    ) -> None:
        survey = _Survey(webhook_provider)
        for sample in self.sample_payloads():
            for where, payload in _variants(sample.payload):
                request = self.webhook_signed(webhook_provider, payload)
                survey.check(f"{sample.test_id}: {where}", request)
        survey.done()

    @pytest.mark.asyncio
    async def test_webhook_survives_odd_headers_and_queries(
        self, webhook_provider: Provider
    ) -> None:
        survey = _Survey(webhook_provider)
        sample = self.sample_payloads()[0]
        request = self.webhook_signed(webhook_provider, sample.payload)
        signature = self.signature_of(request)
        for odd in _HOSTILE_SIGNATURES:
            survey.check(f"signature {odd[:20]!r}", self.with_signature(request, odd))
        for twice in ((signature, signature), (signature, _flip_one_character(signature))):
            headers: CIMultiDict[str] = CIMultiDict(request.headers)  # what the gateway passes
            del headers[self.signature_header]
            for value in twice:
                headers.add(self.signature_header, value)
            survey.check(
                "the signature twice" if twice[0] == twice[1] else "a right and a wrong signature",
                dataclasses.replace(request, headers=headers),
            )
        for query in _HOSTILE_QUERIES:
            for method in ("GET", "POST"):
                survey.check(
                    f"{method} query {sorted(query)[:2]}",
                    dataclasses.replace(request, query={**request.query, **query}),
                    method=method,
                )
        for url in ("", "/", "http://[::1", "https://example.com:99999/x", "\x00😀"):
            survey.check(f"url {url!r}", dataclasses.replace(request, url=url))
        survey.done()


def check_webhook_reply(reply: object) -> None:
    """A 2xx WebhookReply whose receipts a database can store as they are."""
    assert isinstance(reply, WebhookReply), f"handle_webhook returned {reply!r}"
    assert 200 <= reply.status < 300, f"a reply of {reply.status}: raise WebhookRejected instead"
    assert isinstance(reply.text, str) and isinstance(reply.content_type, str)
    try:
        reply.text.encode("utf-8")
    except UnicodeEncodeError:
        raise AssertionError(f"the reply's text {reply.text!r} cannot be sent") from None
    assert isinstance(reply.receipts, tuple), "receipts are a tuple"
    for receipt in reply.receipts:
        check_receipt(receipt)


def check_receipt(receipt: object) -> None:
    assert isinstance(receipt, ProviderReceipt), f"{receipt!r} is not a ProviderReceipt"
    assert isinstance(receipt.provider_message_id, str) and receipt.provider_message_id.strip(), (
        f"provider_message_id {receipt.provider_message_id!r} is no id"
    )
    assert receipt.status in RECEIPT_STATUSES, f"status {receipt.status!r}"
    if receipt.at is not None:
        assert isinstance(receipt.at, datetime) and receipt.at.utcoffset() == timedelta(0), (
            f"at {receipt.at!r} is not an aware UTC datetime"
        )
    for name in ("provider_message_id", "code", "message"):
        value = getattr(receipt, name)
        if value is None:
            continue
        assert isinstance(value, str) and value, f"{name} {value!r}"
        assert "\x00" not in value, f"{name} holds a NUL: no database stores it"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise AssertionError(f"{name} {value!r} is not valid UTF-8 text") from None


class _Survey:
    """Feeds requests to handle_webhook and collects every answer that is neither a
    well-formed 2xx reply nor a 4xx WebhookRejected, to report them all at once."""

    def __init__(self, provider: Provider) -> None:
        self.provider = provider
        self.failures: list[str] = []
        self.count = 0

    def check(self, what: str, request: WebhookRequest, *, method: str | None = None) -> None:
        if method is not None:
            request = dataclasses.replace(request, method=method)
        self.count += 1
        try:
            reply = self.provider.handle_webhook(request)
        except WebhookRejected as rejected:
            if not 400 <= rejected.status < 500:
                self.failures.append(f"{what}: rejected with {rejected.status}")
            return
        except Exception as error:  # noqa: BLE001 - the point: report every crash
            self.failures.append(f"{what}: raised {error!r}"[:300])
            return
        try:
            check_webhook_reply(reply)
        except AssertionError as error:
            self.failures.append(f"{what}: {error}"[:300])

    def done(self) -> None:
        assert self.count, "nothing was checked"
        shown = "\n".join(self.failures[:20])
        assert not self.failures, f"{len(self.failures)} of {self.count} requests:\n{shown}"


def _flip_one_character(text: str) -> str:
    """`text` with one letter or digit near its middle replaced by '0' (or '1'): still
    hex and base64, so only the comparison can reject it."""
    middle = len(text) // 2
    for index in sorted(range(len(text)), key=lambda i: abs(i - middle)):
        if text[index].isascii() and text[index].isalnum():
            replacement = "1" if text[index] == "0" else "0"
            return text[:index] + replacement + text[index + 1 :]
    return text + "0"


def _variants(payload: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """Copies of `payload` with one field (at any depth) replaced by each of
    WRONG_VALUES, or removed, or a list emptied."""
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            path = f"{where}.{key}"
            for wrong in WRONG_VALUES:
                yield f"{path}={wrong!r}"[:120], {**payload, key: wrong}
            yield f"{path} removed", {k: v for k, v in payload.items() if k != key}
            for inner, changed in _variants(value, path):
                yield inner, {**payload, key: changed}
    elif isinstance(payload, list | tuple):
        yield f"{where}=[]", type(payload)()
        for index, value in enumerate(payload):
            path = f"{where}[{index}]"
            for wrong in WRONG_VALUES:
                yield f"{path}={wrong!r}"[:120], _replaced(payload, index, wrong)
            for inner, changed in _variants(value, path):
                yield inner, _replaced(payload, index, changed)


def _replaced(items: list[Any] | tuple[Any, ...], index: int, value: Any) -> Any:
    copy = list(items)
    copy[index] = value
    return type(items)(copy)
