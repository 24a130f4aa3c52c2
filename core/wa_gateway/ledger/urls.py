"""DATABASE_URL to the URL of an async driver: aiosqlite for SQLite, asyncpg for
PostgreSQL. No SQLAlchemy here, so settings.py can check the URL cheaply."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///wa-gateway.db"
EXPECTED = "expected sqlite:///<path> or postgresql://user:password@host:port/database"

_SQLITE = {"sqlite", "sqlite+aiosqlite"}
_POSTGRES = {"postgresql", "postgres", "postgresql+asyncpg"}


def async_database_url(url: str) -> str:
    """`sqlite:///x.db` -> `sqlite+aiosqlite:///x.db`, `postgresql://…` ->
    `postgresql+asyncpg://…`; anything else is a ConfigError of one line."""
    url = url.strip() or DEFAULT_DATABASE_URL
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise ConfigError(f"DATABASE_URL {safe_database_url(url)!r} is not a URL; {EXPECTED}")
    if scheme in _SQLITE:
        # sqlite:///relative.db, sqlite:////absolute.db: the path follows the third slash
        if not rest.startswith("/") or not rest[1:].split("?", 1)[0]:
            raise ConfigError(f"DATABASE_URL {url!r} names no file; {EXPECTED}")
        return f"sqlite+aiosqlite://{rest}"
    if scheme in _POSTGRES:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018 - raises on a non-numeric port
        except ValueError:
            raise ConfigError(
                f"DATABASE_URL {safe_database_url(url)!r}: the port is not a number"
            ) from None
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError(
                f"DATABASE_URL {safe_database_url(url)!r} names no host or no database; {EXPECTED}"
            )
        return f"postgresql+asyncpg://{rest}"
    raise ConfigError(
        f"DATABASE_URL {safe_database_url(url)!r}: unsupported database {scheme!r}; {EXPECTED}"
    )


def is_sqlite(url: str) -> bool:
    return async_database_url(url).startswith("sqlite+")


def sqlite_path(url: str) -> str:
    """The file of a SQLite URL, as given (relative to the working directory or absolute)."""
    return async_database_url(url).partition(":///")[2].split("?", 1)[0]


def safe_database_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}" + (
                f":{parts.port}" if parts.port else ""
            )
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url.split("@", 1)[-1]
    return url
