"""Business events: an app names an event and gives data; the gateway knows where it
goes and how it reads. Loaded and checked once at start-up from the events file
(TOML), rendered with a sandboxed Jinja2 that refuses undefined values.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
)

_FIELD_TYPES: dict[str, Any] = {
    "str": StrictStr,
    "int": StrictInt,
    "number": Annotated[float, Field(strict=True, allow_inf_nan=False)],  # ints too; no "12", no true
    "bool": StrictBool,
}


_PROVIDER_TEMPLATE = re.compile(r"template_([a-z][a-z0-9_]*)")
"""`template_meta`, `template_twilio` …: a provider's template for the event."""


def _compile(value: Any, environment: SandboxedEnvironment, where: str) -> Any:
    """Every string of a provider template compiled; numbers and booleans kept as they are."""
    if isinstance(value, str):
        try:
            return environment.from_string(value)
        except jinja2.TemplateSyntaxError as exc:
            raise EventsFileError(f"{where}: line {exc.lineno}: {exc.message}") from None
    if isinstance(value, dict):
        return {key: _compile(item, environment, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_compile(item, environment, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


class EventsFileError(Exception):
    """The events file cannot be used; one line says where and why."""


class EventError(ValueError):
    """A request's event or data cannot be rendered; the message names the field."""


@dataclass(frozen=True)
class Event:
    name: str
    targets: tuple[str, ...]
    template: jinja2.Template
    source: str
    description: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    model: type[BaseModel] | None = None
    channel: str | None = None
    """The channel this event's messages go through, unless an alias is pinned."""
    provider_templates: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """`template_<provider>` tables as written in the file, by provider name."""
    compiled_templates: Mapping[str, Any] = field(default_factory=dict)
    """The same with every string compiled (rendered by `render_templates`)."""

    def render_templates(self, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """Every provider template with its strings rendered from `data`, in the sandbox
        the text uses; an empty or NUL-bearing value is an EventError naming it (a
        provider refuses an empty template parameter, and it would only show in the worker)."""
        values = self._values(data)
        return {
            provider: self._render_value(compiled, values, f"template_{provider}")
            for provider, compiled in self.compiled_templates.items()
        }

    def _render_value(self, value: Any, values: Mapping[str, Any], where: str) -> Any:
        if isinstance(value, jinja2.Template):
            text = self._render(value, values)
            if not text.strip():
                raise EventError(f"data: {where} of event {self.name!r} rendered empty")
            return text
        if isinstance(value, dict):
            return {key: self._render_value(item, values, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [self._render_value(item, values, f"{where}[{i}]") for i, item in enumerate(value)]
        return value

    def _values(self, data: Mapping[str, Any]) -> dict[str, Any]:
        values = dict(data)
        if self.model is not None:
            try:
                values = {**values, **self.model.model_validate(values).model_dump()}
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                raise EventError(f"data.{where}: {first['msg']}") from None
        return values

    def _render(self, template: jinja2.Template, values: Mapping[str, Any]) -> str:
        try:
            text = template.render(values)
        except jinja2.UndefinedError as exc:
            raise EventError(f"data: {exc.message} (event {self.name!r} needs it)") from None
        except jinja2.exceptions.SecurityError as exc:
            raise EventError(f"data: refused by the template sandbox ({exc})") from None
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise EventError(f"data: a value has the wrong type for event {self.name!r} ({exc})") from None
        if "\x00" in text:
            raise EventError("data: a value contains a NUL character")
        return text

    def render(self, data: Mapping[str, Any]) -> str:
        text = self._render(self.template, self._values(data))
        if not text.strip():
            raise EventError(f"event {self.name!r} rendered an empty message")
        return text


class EventCatalog:
    def __init__(self, events: Mapping[str, Event], path: str, disabled: Mapping[str, str]) -> None:
        self.events = dict(events)
        self.path = path
        self.disabled = dict(disabled)
        """Shipped events whose aliases this deployment has not configured, with why."""

    def get(self, name: str) -> Event:
        if name in self.disabled:
            raise EventError(f"event: {name!r} is disabled here: {self.disabled[name]}")
        try:
            return self.events[name]
        except KeyError:
            known = ", ".join(sorted(self.events)) or "none"
            raise EventError(f"event: unknown event {name!r} (known: {known})") from None

    @classmethod
    def load(cls, path: str | None, aliases: Mapping[str, str]) -> EventCatalog:
        """Read and check the file: every target alias exists, every template compiles.

        An operator's own file (WA_TEMPLATES) must be right in full. The shipped
        default only disables the examples whose aliases are not configured, so a
        deployment with just WA_GROUP_LOGISTIC_ID still starts.
        """
        if path is None:
            source = resources.files("wa_gateway").joinpath("events.toml").read_text("utf-8")
            where = "the shipped events.toml"
        else:
            try:
                source = Path(path).read_text("utf-8")
            except OSError as exc:
                raise EventsFileError(f"WA_TEMPLATES={path}: cannot read it ({exc.strerror})") from None
            where = path
        try:
            raw = tomllib.loads(source)
        except tomllib.TOMLDecodeError as exc:
            raise EventsFileError(f"{where}: not valid TOML ({exc})") from None
        environment = SandboxedEnvironment(
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        events: dict[str, Event] = {}
        disabled: dict[str, str] = {}
        for name, spec in raw.items():
            try:
                events[name] = _event(name, spec, environment, aliases, where)
            except UnknownAlias as exc:
                if path is not None:
                    raise EventsFileError(str(exc)) from None
                disabled[name] = exc.hint
        return cls(events, where, disabled)


class UnknownAlias(EventsFileError):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


def _event(
    name: str, spec: Any, environment: SandboxedEnvironment, aliases: Mapping[str, str], where: str
) -> Event:
    if not isinstance(spec, dict):
        raise EventsFileError(f"{where}: [{name}] must be a table")
    unknown_keys = {
        key for key in set(spec) - {"to", "template", "fields", "description", "channel"}
        if not _PROVIDER_TEMPLATE.fullmatch(key)
    }
    if unknown_keys:
        raise EventsFileError(f"{where}: [{name}] has unknown keys: {', '.join(sorted(unknown_keys))}")
    targets = spec.get("to")
    if isinstance(targets, str):
        targets = [targets]
    if not targets or not all(isinstance(t, str) for t in targets):
        raise EventsFileError(f"{where}: [{name}] needs `to`, a list of target aliases")
    missing = [t for t in targets if t.lower() not in aliases]
    if missing:
        alias = missing[0].upper()
        hint = f"alias {missing[0]!r} is not configured (set WA_GROUP_{alias}_ID or WA_CONTACT_{alias}_NUMBER)"
        raise UnknownAlias(f"{where}: [{name}] sends to unknown alias: {hint}", hint)
    source = spec.get("template")
    if not isinstance(source, str) or not source.strip():
        raise EventsFileError(f"{where}: [{name}] needs a `template` string")
    try:
        template = environment.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise EventsFileError(f"{where}: [{name}] template line {exc.lineno}: {exc.message}") from None
    fields = spec.get("fields", {})
    if not isinstance(fields, dict) or any(t not in _FIELD_TYPES for t in fields.values()):
        raise EventsFileError(
            f"{where}: [{name}] fields must map names to one of {', '.join(_FIELD_TYPES)}"
        )
    channel = spec.get("channel")
    if channel is not None and (not isinstance(channel, str) or not channel.strip()):
        raise EventsFileError(f"{where}: [{name}] `channel` must be a channel name")
    model = None
    if fields:
        model = create_model(  # type: ignore[call-overload]
            f"{name}_data",
            __config__=ConfigDict(extra="allow"),
            **{field_name: (_FIELD_TYPES[kind], ...) for field_name, kind in fields.items()},
        )
    provider_templates: dict[str, dict[str, Any]] = {}
    compiled_templates: dict[str, Any] = {}
    for key in sorted(spec):
        match = _PROVIDER_TEMPLATE.fullmatch(key)
        if match is None:
            continue
        table = spec[key]
        if not isinstance(table, dict) or not table:
            raise EventsFileError(f"{where}: [{name}] `{key}` must be a table, like {{ name = \"…\", … }}")
        provider_templates[match.group(1)] = table
        compiled_templates[match.group(1)] = _compile(table, environment, f"{where}: [{name}] {key}")
    return Event(
        name=name,
        provider_templates=provider_templates,
        compiled_templates=compiled_templates,
        targets=tuple(t.lower() for t in targets),
        template=template,
        source=source,
        description=str(spec.get("description", "")),
        fields=dict(fields),
        model=model,
        channel=channel.strip().lower() if channel else None,
    )
