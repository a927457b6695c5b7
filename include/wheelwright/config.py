"""Where things are: the settings every command, DAG task and test shares.

Settings come from the environment variables in DESIGN.md, read once into a frozen
:class:`Settings`; everything else takes a ``Settings`` (or plain arguments), never the environment, so
tests and DAG tasks can hand in their own without touching ``os.environ``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from wheelwright.errors import ConfigError

DEFAULT_PYPI_URL = "https://pypi.org/pypi"
USER_AGENT = "wheelwright/0.1 (+https://github.com/wheelwright; Raspberry Pi wheel builder)"


@dataclass(frozen=True)
class Settings:
    home: Path
    dsn: str | None
    pypi_url: str
    output: Path
    # our own published simple index, which builds use for build dependencies beside PyPI
    index_url: str | None = None
    # the published site's public address, ending in "/" (what Atom feeds resolve their links against);
    # None: files link relative to where they are served
    base_url: str | None = None

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("WHEELWRIGHT_HOME") or ".wheelwright").expanduser().absolute()
        output = env.get("WHEELWRIGHT_OUTPUT")
        settings = cls(
            home=home,
            dsn=env.get("WHEELWRIGHT_DSN") or None,
            pypi_url=env.get("WHEELWRIGHT_PYPI_URL") or DEFAULT_PYPI_URL,
            output=Path(output).expanduser().absolute() if output else home / "www",
            index_url=env.get("WHEELWRIGHT_INDEX_URL") or None,
            base_url=_with_slash(env.get("WHEELWRIGHT_BASE_URL") or None),
        )
        settings.check()
        return settings

    def check(self) -> None:
        parts = urlsplit(self.pypi_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"WHEELWRIGHT_PYPI_URL must be an http(s) URL, got {self.pypi_url!r}")
        if self.index_url is not None:
            parts = urlsplit(self.index_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"WHEELWRIGHT_INDEX_URL must be an http(s) URL, got {self.index_url!r}")
        if self.base_url is not None:
            parts = urlsplit(self.base_url)
            if (parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment
                    or not self.base_url.endswith("/")):
                raise ConfigError("WHEELWRIGHT_BASE_URL must be the site's http(s) address, like "
                                  f"https://pi.example.org/, got {self.base_url!r}")

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"

    @property
    def replay_dir(self) -> Path:
        """Where a bulk replay keeps the events past its memory bound: beside the catalog, on its disk,
        rather than in a /tmp that may be memory."""
        return self.home / "replay"


def _with_slash(url: str | None) -> str | None:
    return url if url is None or url.endswith("/") else url + "/"


def pypi_base(xmlrpc_url: str) -> str:
    """The scheme and host of the PyPI that serves ``xmlrpc_url``: JSON API and simple index live there."""
    parts = urlsplit(xmlrpc_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", "")).rstrip("/")


def simple_index_url(xmlrpc_url: str) -> str:
    return pypi_base(xmlrpc_url) + "/simple/"


def json_api_url(xmlrpc_url: str, project: str) -> str:
    return f"{pypi_base(xmlrpc_url)}/pypi/{project}/json"
