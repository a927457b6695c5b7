"""Per-package build settings: what an operator tells the builder about one package that needs more.

Most releases build with the defaults. Some do not: a package needs a Debian library the images do not
carry (``libcups2-dev``), numpy-class builds under emulation need longer than piwheels' three hours, a
build wants ``NPY_NUM_BUILD_JOBS=1`` or ``MAX_JOBS=2`` to stay inside a Pi's memory. Those are an
operator's decisions, kept in the catalog (``build_settings``, migration 041), set by
``wheelwright settings`` or the dashboard (the same permission as skip and rebuild), shown on the
project page and in its JSON, and carried to the worker in each build request it claims.

This room owns what a setting may be, checked at every door it passes (the CLI, the dashboard, and
again by the builder that receives a request): Debian package names only; a timeout between a minute
and two days; environment variables with plain names that never override the sandbox's own (``PATH``,
``HOME``, the proxies that are the build's only way out, ``PIP_*`` that would change which index pip
trusts, the loader's ``LD_*``, the interpreter's ``PYTHONPATH``...). The builder applies them
(:mod:`wheelwright.builds.builder`): the timeout, the variables, and the apt packages through a derived
image (the target's recipe plus them, named by its own hash: :func:`wheelwright.builds.images.recipe_for`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import timedelta

from packaging.utils import canonicalize_name

from wheelwright.errors import WheelwrightError

MIN_TIMEOUT = 60.0
MAX_TIMEOUT = 48 * 3600.0
MAX_VARIABLES = 32
MAX_PACKAGES = 32
MAX_VALUE = 1024
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_DEBIAN = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}\Z")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?\Z")
# What the sandbox sets itself or lives by: a build never overrides them.
RESERVED = frozenset({
    "PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "USER", "LOGNAME", "SHELL", "PWD",
    "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ftp_proxy", "FTP_PROXY", "all_proxy",
    "ALL_PROXY", "no_proxy", "NO_PROXY",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONNOUSERSITE", "PYTHONSAFEPATH",
    "PYTHONINSPECT", "PYTHONEXECUTABLE",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
})
RESERVED_PREFIXES = ("PIP_", "LD_", "LC_", "WHEELWRIGHT_")


class SettingRefused(WheelwrightError):
    """A build setting that may not be: the message says which and why."""

    exit_code = 2


@dataclass(frozen=True)
class BuildSettings:
    apt: tuple[str, ...] = ()
    timeout: float | None = None                     # seconds; None: the builder's default
    environment: dict[str, str] = field(default_factory=dict)

    def to_request(self) -> dict:
        """The settings as they travel in a build request (small, JSON)."""
        return {"apt": list(self.apt), "timeout": self.timeout, "env": dict(self.environment)}

    @classmethod
    def from_request(cls, value) -> "BuildSettings":
        """The settings a build request carries, checked again (the builder's door)."""
        if value in (None, {}):
            return cls()
        if not isinstance(value, dict) or set(value) - {"apt", "timeout", "env"}:
            raise SettingRefused(f"build settings {str(value)[:100]!r} are not shaped like settings")
        return cls(apt=check_apt(value.get("apt") or ()), timeout=check_timeout(value.get("timeout")),
                   environment=check_environment(value.get("env") or {}))

    def lines(self) -> list[str]:
        return [f"apt packages  {' '.join(self.apt) or '-'}",
                f"timeout       {format_duration(self.timeout) if self.timeout else 'default'}",
                "environment   " + (" ".join(f"{k}={v}" for k, v in sorted(self.environment.items())) or "-")]


# --- pure: checking ------------------------------------------------------------------------------

def check_apt(packages) -> tuple[str, ...]:
    if isinstance(packages, str) or not all(isinstance(p, str) for p in packages):
        raise SettingRefused("apt packages must be a list of Debian package names")
    packages = tuple(sorted(set(packages)))
    if len(packages) > MAX_PACKAGES:
        raise SettingRefused(f"{len(packages)} apt packages: at most {MAX_PACKAGES}")
    for package in packages:
        if not _DEBIAN.match(package):
            raise SettingRefused(f"{package!r} is not a Debian package name")
    return packages


def check_timeout(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingRefused(f"timeout {value!r} is not a number of seconds")
    if not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
        raise SettingRefused(f"timeout {format_duration(value)}: give one between "
                             f"{format_duration(MIN_TIMEOUT)} and {format_duration(MAX_TIMEOUT)}")
    return float(value)


def reserved(name: str) -> bool:
    return name in RESERVED or name.startswith(RESERVED_PREFIXES)


def check_environment(variables) -> dict[str, str]:
    if not isinstance(variables, dict):
        raise SettingRefused("environment must be a mapping of names to values")
    if len(variables) > MAX_VARIABLES:
        raise SettingRefused(f"{len(variables)} environment variables: at most {MAX_VARIABLES}")
    checked = {}
    for name, value in variables.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise SettingRefused(f"{str(name)[:70]!r} is not an environment variable name (letters, digits, _)")
        if reserved(name):
            raise SettingRefused(f"{name} belongs to the build sandbox: a setting never overrides it")
        if (not isinstance(value, str) or len(value) > MAX_VALUE
                or any(ord(c) < 32 or ord(c) == 127 for c in value)):
            raise SettingRefused(f"the value of {name} must be one line of printable text, at most "
                                 f"{MAX_VALUE} characters")
        checked[name] = value
    return checked


def parse_duration(text: str) -> float:
    """``"6h"``, ``"1h30m"``, ``"90m"``, ``"5400"`` -> seconds."""
    m = _DURATION.match(text.strip().lower()) if text and text.strip() else None
    if m is None or not any(m.groups()):
        raise SettingRefused(f"{text!r} is not a duration like 6h, 90m, 1h30m or 5400 (seconds)")
    days, hours, minutes, seconds = (int(g or 0) for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n) or "0s"


def parse_assignment(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (the CLI's ``--env``) -> ``(NAME, VALUE)``."""
    name, eq, value = text.partition("=")
    if not eq:
        raise SettingRefused(f"{text!r}: give the variable as NAME=VALUE")
    return name, value


# --- the catalog -----------------------------------------------------------------------------------

def read(conn, package: str) -> BuildSettings | None:
    row = conn.execute("SELECT apt_packages, extract(epoch FROM timeout), environment FROM build_settings "
                       "WHERE package = %s", (canonicalize_name(package),)).fetchone()
    if row is None:
        return None
    apt, timeout, environment = row
    return BuildSettings(tuple(apt), None if timeout is None else float(timeout),
                         environment if isinstance(environment, dict) else json.loads(environment))


def change(conn, package: str, *, by: str, apt=None, timeout=..., set_env=None, unset_env=(),
           clear: bool = False) -> BuildSettings | None:
    """Change the settings of ``package`` (a package of the catalog); what is not given stays.

    ``apt`` replaces the list; ``timeout`` seconds or None (the default); ``set_env`` adds or replaces
    variables, ``unset_env`` removes some; ``clear`` forgets every setting. Returns the new settings
    (None once cleared). The package is marked changed, so its page shows them.
    """
    from wheelwright.catalog.store import mark_changed
    from wheelwright.operate.admin import UnknownRelease
    package = canonicalize_name(package)
    with conn.transaction():
        if conn.execute("SELECT 1 FROM packages WHERE package = %s", (package,)).fetchone() is None:
            raise UnknownRelease(f"{package} is not in the catalog")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("wheelwright.build-settings:" + package,))
        current = read(conn, package) or BuildSettings()
        if clear:
            conn.execute("DELETE FROM build_settings WHERE package = %s", (package,))
            mark_changed(conn, [package])
            return None
        environment = dict(current.environment)
        environment.update(check_environment(dict(set_env or {})))
        for name in unset_env:
            environment.pop(name, None)
        new = BuildSettings(apt=current.apt if apt is None else check_apt(apt),
                            timeout=current.timeout if timeout is ... else check_timeout(timeout),
                            environment=check_environment(environment))
        conn.execute(
            "INSERT INTO build_settings (package, apt_packages, timeout, environment, changed_by, changed_at) "
            "VALUES (%(package)s, %(apt)s, %(timeout)s, %(environment)s::jsonb, %(by)s, now()) "
            "ON CONFLICT (package) DO UPDATE SET apt_packages = EXCLUDED.apt_packages, "
            "timeout = EXCLUDED.timeout, environment = EXCLUDED.environment, "
            "changed_by = EXCLUDED.changed_by, changed_at = EXCLUDED.changed_at",
            {"package": package, "apt": list(new.apt), "environment": json.dumps(new.environment),
             "timeout": None if new.timeout is None else timedelta(seconds=new.timeout),
             "by": (by or "unknown")[:200]})
        mark_changed(conn, [package])
    return new


def attach(conn, requests: list) -> list:
    """Add each request's package's settings (``request["settings"]``) to the claimed ``requests``."""
    packages = sorted({r["package"] for r in requests})
    if not packages:
        return requests
    found = {package: BuildSettings(tuple(apt), None if timeout is None else float(timeout),
                                    environment if isinstance(environment, dict) else json.loads(environment))
             for package, apt, timeout, environment in conn.execute(
                 "SELECT package, apt_packages, extract(epoch FROM timeout), environment FROM build_settings "
                 "WHERE package = ANY(%s)", (packages,))}
    for request in requests:
        if (settings := found.get(request["package"])) is not None:
            request["settings"] = settings.to_request()
    return requests
