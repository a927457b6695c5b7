"""Where things are: the settings every command, DAG task and test shares.

Settings come from the environment variables in DESIGN.md, read once into a frozen
:class:`Settings`; everything else takes a ``Settings`` (or plain arguments), never the environment, so
tests and DAG tasks can hand in their own without touching ``os.environ``.

Inside Airflow too, a process's settings are its own environment's, never Airflow Variables or
Connections: any running task (a builder's, whose sandbox may have been escaped) can write every
Variable and read every Connection through the execution API, so nothing the index host trusts may
live there (SECURITY.md, "Task → Airflow").
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
    # the index host's incoming folder (each builder account's folder is in it)
    incoming: Path | None = None
    # the same folder as the builders' SFTP sessions name it (a builder's own setting)
    remote_incoming: str = "/incoming"
    # which targets each builder account may answer builds of: ((account, (target, ...)), ...);
    # None: any account any target (one machine, one account)
    builder_accounts: tuple[tuple[str, tuple[str, ...]], ...] | None = None

    def __post_init__(self):
        if self.incoming is None:
            object.__setattr__(self, "incoming", self.home / "incoming")
    # where people reach the published tree (https://host): install commands, sitemaps, project JSON
    site_url: str | None = None

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        env = os.environ if environ is None else environ
        home = Path(env.get("WHEELWRIGHT_HOME") or ".wheelwright").expanduser().absolute()
        output = env.get("WHEELWRIGHT_OUTPUT")
        incoming = env.get("WHEELWRIGHT_INCOMING")
        settings = cls(
            home=home,
            dsn=env.get("WHEELWRIGHT_DSN") or None,
            pypi_url=env.get("WHEELWRIGHT_PYPI_URL") or DEFAULT_PYPI_URL,
            output=Path(output).expanduser().absolute() if output else home / "www",
            index_url=env.get("WHEELWRIGHT_INDEX_URL") or None,
            incoming=Path(incoming).expanduser().absolute() if incoming else home / "incoming",
            remote_incoming=env.get("WHEELWRIGHT_REMOTE_INCOMING") or "/incoming",
            builder_accounts=parse_builder_accounts(env.get("WHEELWRIGHT_BUILDER_ACCOUNTS")),
            site_url=env.get("WHEELWRIGHT_SITE_URL") or None,
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
        if self.site_url is not None:
            parts = urlsplit(self.site_url)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
                raise ConfigError(f"WHEELWRIGHT_SITE_URL must be an http(s) URL, got {self.site_url!r}")

    @property
    def base_url(self) -> str | None:
        """The site's address ending in "/" (what Atom feeds resolve their links against); None when
        ``WHEELWRIGHT_SITE_URL`` is not set (files then link relative to where they are served)."""
        return self.site_url.rstrip("/") + "/" if self.site_url else None

    def may_answer(self, account: str, target: str) -> bool:
        """Whether builder ``account`` may answer a build for ``target`` (WHEELWRIGHT_BUILDER_ACCOUNTS)."""
        if self.builder_accounts is None:
            return True
        return target in dict(self.builder_accounts).get(account, ())

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


def parse_builder_accounts(text: str | None) -> tuple[tuple[str, tuple[str, ...]], ...] | None:
    """``WHEELWRIGHT_BUILDER_ACCOUNTS``: ``account:target[,target...]`` entries separated by spaces,
    e.g. ``worker-cp311-armv7l:cp311-armv7l pi-kitchen:cp311-armv7l,cp313-aarch64``; None when unset."""
    if not text or not text.strip():
        return None
    accounts = []
    for entry in text.split():
        account, _, targets = entry.partition(":")
        names = tuple(t for t in targets.split(",") if t)
        if not account or not names:
            raise ConfigError(f"WHEELWRIGHT_BUILDER_ACCOUNTS: {entry!r} is not account:target[,target...]")
        accounts.append((account, names))
    return tuple(accounts)


def pypi_base(xmlrpc_url: str) -> str:
    """The scheme and host of the PyPI that serves ``xmlrpc_url``: JSON API and simple index live there."""
    parts = urlsplit(xmlrpc_url)
    return urlunsplit((parts.scheme, parts.netloc, "", "", "")).rstrip("/")


def simple_index_url(xmlrpc_url: str) -> str:
    return pypi_base(xmlrpc_url) + "/simple/"


def json_api_url(xmlrpc_url: str, project: str) -> str:
    return f"{pypi_base(xmlrpc_url)}/pypi/{project}/json"
