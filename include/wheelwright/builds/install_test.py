"""Install tests: a wheel is installed and imported on a clean copy of its target's system before it is served.

piwheels' most common complaint is a wheel that installs and then does not load: a library the Pi
lacks, an undefined symbol, a glibc too new, "Illegal instruction". A wheel that builds has not shown
that it loads. This room owns finding out, the way a Pi user would meet it:

- in a **clean copy of the target's image** (the read-only root of the build sandbox, so nothing a
  build left can help; the derived image when the package's build settings add apt packages), inside
  :mod:`wheelwright.builds.sandbox` (its own user, pid and network namespaces, limits, a deadline), with
  **no network at all**: importing runs the wheel's code, which is as hostile as its ``setup.py``;
- a fresh venv (``venv --without-pip``; the image's own pip installs into it with ``--python``), the wheel
  installed by pip with ``--no-deps --no-index`` (so pip's own tag checks run too: a manylinux tag newer
  than the image's glibc is refused as it would be on a Pi);
- every **top-level module** of the wheel (its ``top_level.txt``, else the top of its ``RECORD``), then
  every compiled extension module it ships, imported in one process, each reported as it finishes, so
  a crash names its module.

:func:`judge` reads the report: every module imported (``imports``); a module that stops at a Python
dependency the wheel does not ship (``ModuleNotFoundError`` of a foreign name: ``needs-dependencies``,
not a failure: the test installs no dependencies); a refusal that ``data/needs-a-pi.tsv`` lists for
that package, in its exact shape (RPi.GPIO's ``RuntimeError: This module can only be run on a
Raspberry Pi!``: ``needs-a-pi``, "built, not importable off a Pi"); anything else fails the wheel with
the import's own error as its reason.

Which images the test needs is decided where it runs: on the **index host**, which publishes nothing
that did not load there (it does not take a builder's word for it), and on the builder as a cheap first
filter (a wheel that fails there is never sent, and its log holds the import error). The test catches
accidents, not malice: code that wants to pass can print whatever the report expects, as a malicious
wheel could load cleanly anyway. Only wheels with compiled code are tested, for targets built in an
image (a target built on the worker's own system has no clean copy of it to test in).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from wheelwright import package_data

log = logging.getLogger(__name__)

TIMEOUT = 900.0                 # seconds for venv + pip + imports (numpy under qemu: about a minute)
MEMORY_LIMIT = 2 << 30
PROCESS_LIMIT = 128
OUTPUT_CAP = 256 << 10          # bytes of the test's output kept
NO_NETWORK = "http://127.0.0.1:9/"   # the sandbox's proxy only allows this (discard: nothing listens)
# Top-level names that are the project's tests or documentation, not its importable interface.
NOT_INTERFACE = frozenset({"test", "tests", "testing", "doc", "docs", "example", "examples", "benchmark",
                           "benchmarks", "bench"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_EXTENSION = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\.(?:[A-Za-z0-9_.-]+\.)?(?:so|pyd)\Z")

RESULTS = ("imports", "needs-a-pi", "needs-dependencies", "fails")


@dataclass(frozen=True)
class TestResult:
    result: str           # one of RESULTS
    detail: str | None    # the import's own words, one line (for needs-a-pi, needs-dependencies, fails)
    where: str            # "bookworm armhf"
    output: str = ""      # what the test printed (for the log)

    @property
    def loads(self) -> bool:
        return self.result != "fails"

    def sentence(self) -> str:
        from wheelwright.publish.pages import tested_sentence
        if self.result == "fails":
            return f"does not load on {self.where}: {self.detail}"
        return tested_sentence(self.result, self.where)


# --- pure: which modules, and what the report means -------------------------------------------------

def modules_to_import(zf: zipfile.ZipFile) -> list[str]:
    """What the test imports: the wheel's top-level modules, then each compiled extension module it
    ships (``RPi/_GPIO.cpython-311-arm-linux-gnueabihf.so`` -> ``RPi._GPIO``), since a package's top level
    need not load its compiled code (RPi.GPIO's ``RPi/__init__.py`` is empty)."""
    extensions = []
    for name in zf.namelist():
        *folders, leaf = name.split("/")
        m = _EXTENSION.match(leaf)
        if not m or not folders or folders[0].endswith((".dist-info", ".data")):
            continue
        dotted = [*folders, m[1]]
        if all(_IDENTIFIER.match(part) for part in dotted) and not NOT_INTERFACE & set(dotted):
            extensions.append(".".join(dotted))
    top = top_level_modules(zf)
    return top + sorted(set(extensions) - set(top))


def top_level_modules(zf: zipfile.ZipFile) -> list[str]:
    """The modules a user imports from this wheel: its ``top_level.txt``, else the top of its files."""
    names = zf.namelist()
    listed = [n for n in names if n.count("/") == 1 and n.endswith(".dist-info/top_level.txt")]
    found: list[str] = []
    if len(listed) == 1 and zf.getinfo(listed[0]).file_size < 64 << 10:
        found = [line.strip().replace("/", ".") for line in zf.read(listed[0]).decode("utf-8", "replace").splitlines()]
    if not [n for n in found if n]:
        found = []
        for name in names:
            top, _, rest = name.partition("/")
            if top.endswith((".dist-info", ".data")) or top == "__pycache__":
                continue
            if rest:
                if rest == "__init__.py" or re.fullmatch(r"__init__\..*\.(so|pyd)", rest):
                    found.append(top)
            elif top.endswith(".py"):
                found.append(top[:-3])
            elif m := _EXTENSION.match(top):
                found.append(m[1])
    return sorted({n for n in found if all(_IDENTIFIER.match(p) for p in n.split("."))
                   and n.split(".")[0] not in NOT_INTERFACE})


@lru_cache(maxsize=None)
def needs_a_pi_rules() -> dict[str, tuple[tuple[str, re.Pattern], ...]]:
    """``data/needs-a-pi.tsv``: package -> the (exception type, message pattern) refusals it makes off a Pi."""
    rules: dict[str, list] = {}
    for line in package_data.data("needs-a-pi.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        package, kind, pattern = line.split("\t")
        rules.setdefault(package.strip(), []).append((kind.strip(), re.compile(pattern.strip())))
    return {package: tuple(found) for package, found in rules.items()}


def judge(package: str, report: dict, where: str, *, rules=None) -> TestResult:
    """What the test's ``report`` (see :data:`DRIVER`) says of the wheel of ``package``.

    ``report``: ``{"stage": "venv"|"install"|"import"|"done", "error": str, "modules": [...],
    "own": [...], "crashed": {"module", "signal"}|None, "timed_out": bool}``.
    """
    rules = needs_a_pi_rules() if rules is None else rules
    if report.get("timed_out"):
        running = report.get("running")
        return TestResult("fails", f"the test did not finish in time{f' (importing {running})' if running else ''}",
                          where)
    stage = report.get("stage")
    if stage in ("venv", "install"):
        return TestResult("fails", f"pip could not install it: {report.get('error') or 'no reason given'}"
                          if stage == "install" else f"the test venv could not be made: {report.get('error')}",
                          where)
    own = {name.split(".")[0] for name in report.get("own", [])}
    worst, detail = "imports", None
    order = {r: i for i, r in enumerate(RESULTS)}
    for module in report.get("modules", []):
        if module.get("ok"):
            continue
        kind, message = module.get("type", "Exception"), module.get("message", "")
        missing = module.get("missing")
        if kind == "ModuleNotFoundError" and missing and missing.split(".")[0] not in own:
            verdict, words = "needs-dependencies", f"{module['module']} needs {missing.split('.')[0]}"
        elif any(kind == k and pattern.search(message) for k, pattern in rules.get(package, ())):
            verdict, words = "needs-a-pi", f"{kind}: {message}"
        else:
            verdict, words = "fails", f"import {module['module']}: {kind}: {message}"
        if order[verdict] > order[worst]:
            worst, detail = verdict, _one_line(words)
    crashed = report.get("crashed")
    if crashed:
        return TestResult("fails", _one_line(f"import {crashed.get('module')} killed the interpreter "
                                             f"with {crashed.get('signal')}"), where)
    if stage != "done" and worst != "fails":
        return TestResult("fails", _one_line(report.get("error") or "the test ended before it reported"), where)
    return TestResult(worst, detail, where)


def _one_line(text: str, limit: int = 400) -> str:
    return " ".join(str(text).split())[:limit]


# What runs inside the sandbox, with the image's own python3 (standard library only): make the venv,
# install the wheel, import each module in a child, and report each step on lines marked with a nonce.
DRIVER = r'''
import json, os, signal, subprocess, sys
nonce, wheel, modules = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def say(**fields):
    print(nonce + json.dumps(fields), flush=True)
def run(argv):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    sys.stdout.write(done.stdout); sys.stdout.flush()
    return done
made = run([sys.executable, "-m", "venv", "--without-pip", "/build/venv"])
if made.returncode:
    say(stage="venv", error=(made.stdout.strip().splitlines() or ["status %d" % made.returncode])[-1]); sys.exit(0)
pip = run([sys.executable, "-m", "pip", "--python", "/build/venv/bin/python", "install", "--no-deps",
           "--no-index", "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--isolated", wheel])
if pip.returncode:
    errors = [l for l in pip.stdout.splitlines() if l.startswith("ERROR")] or pip.stdout.strip().splitlines()[-1:]
    say(stage="install", error=" ".join(errors)[:500]); sys.exit(0)
IMPORTER = """
import importlib, json, sys
nonce = sys.argv[1]
for name in json.loads(sys.argv[2]):
    print(nonce + json.dumps({"start": name}), flush=True)
    try:
        importlib.import_module(name)
    except BaseException as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        print(nonce + json.dumps({"module": name, "ok": False, "type": type(exc).__name__,
                                  "message": str(exc)[:500], "missing": missing}), flush=True)
    else:
        print(nonce + json.dumps({"module": name, "ok": True}), flush=True)
"""
child = subprocess.run(["/build/venv/bin/python", "-c", IMPORTER, nonce, json.dumps(modules)], cwd="/tmp")
if child.returncode < 0:
    say(stage="import", signal=signal.Signals(-child.returncode).name)
else:
    say(stage="done", status=child.returncode)
'''


def parse_report(output: str, nonce: str, own: list[str]) -> dict:
    """The report of one test run from its ``output`` (see :data:`DRIVER`)."""
    report: dict = {"stage": "started", "modules": [], "own": own, "crashed": None}
    running = None
    for line in output.splitlines():
        if not line.startswith(nonce):
            continue
        try:
            fields = json.loads(line[len(nonce):])
        except ValueError:
            continue
        if "start" in fields:
            running = fields["start"]
        elif "module" in fields:
            report["modules"].append(fields)
            running = None
        elif "stage" in fields:
            report["stage"] = fields["stage"]
            report["error"] = fields.get("error")
            if fields.get("signal"):
                report["crashed"] = {"module": running, "signal": _signal_words(fields["signal"])}
    report["running"] = running
    return report


def _signal_words(name: str) -> str:
    words = {"SIGILL": "SIGILL (illegal instruction)", "SIGSEGV": "SIGSEGV (segmentation fault)",
             "SIGBUS": "SIGBUS (bus error)", "SIGKILL": "SIGKILL (killed: out of memory?)"}
    return words.get(name, name)


# --- the edge: running it in the sandbox ----------------------------------------------------------------

def where_of(target) -> str:
    """How a page names the system a target's wheels are tested on: ``bookworm armhf``."""
    from wheelwright.builds.images import arch_of
    return f"{target.distro} {arch_of(target)}"


def run_test(wheel: Path, package: str, *, root: Path, where: str, workdir: Path,
             python: str = "/usr/bin/python3", identity=None, timeout: float = TIMEOUT) -> TestResult:
    """Install ``wheel`` (a file) in a fresh venv in the image ``root`` and import its modules there.

    ``workdir`` holds the test's work folder (the build user must reach it); ``identity`` is who the
    sandbox starts as when we are root (:func:`wheelwright.builds.sandbox.build_identity`).
    """
    from wheelwright.builds import sandbox
    from wheelwright.builds.builder import check_reachable
    with zipfile.ZipFile(wheel) as zf:
        modules = modules_to_import(zf)
    workdir.mkdir(parents=True, exist_ok=True)
    if identity is not None:
        check_reachable(workdir, identity[1], identity[2])   # a clear error, not a sandbox that cannot start
    work = Path(tempfile.mkdtemp(prefix="install-test-", dir=workdir))
    try:
        work.chmod(0o755)
        shutil.copyfile(wheel, work / wheel.name)
        (work / wheel.name).chmod(0o644)
        if identity is not None:
            import os
            os.chown(work, identity[1], identity[2])
        nonce = "@@" + secrets.token_hex(8) + "@@"
        output = bytearray()

        def keep(chunk: bytes) -> None:
            if len(output) < OUTPUT_CAP:
                output.extend(chunk[:OUTPUT_CAP - len(output)])
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "PIP_CONFIG_FILE": "/dev/null", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}
        ran = sandbox.run([python, "-c", DRIVER, nonce, f"{sandbox.WORK}/{wheel.name}", json.dumps(modules)],
                          root=root, work=work, env=env, index_url=NO_NETWORK, timeout=timeout,
                          memory_limit=MEMORY_LIMIT, process_limit=PROCESS_LIMIT, output=keep,
                          identity=identity, name=f"install-test-{work.name[-8:]}", python=python)
        text = output.decode("utf-8", "replace")
        report = parse_report(text, nonce, modules)
        report["timed_out"] = ran.timed_out
        if ran.status not in (0, None) and report["stage"] == "started":
            report["error"] = f"the test exited with status {ran.status}"
        result = judge(package, report, where)
        shown_text = text.replace(nonce, "[test] ")
        log.info("install test of %s on %s: %s", wheel.name, where, result.sentence())
        return TestResult(result.result, result.detail, where, shown_text)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def has_compiled_code(wheel: Path) -> bool:
    """Whether the wheel holds an ELF file: only those are tested (pure Python loads the same everywhere)."""
    from wheelwright.builds.analysis import is_elf
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.file_size >= 4 and not info.is_dir():
                with zf.open(info) as member:
                    if is_elf(member.read(4)):
                        return True
    return False


SIDES = {"both": frozenset({"builder", "index-host"}), "index-host": frozenset({"index-host"}),
         "builder": frozenset({"builder"}), "off": frozenset()}


def tested_on(side: str, environ=None) -> bool:
    """Whether ``side`` ("builder" or "index-host") runs install tests: ``WHEELWRIGHT_INSTALL_TEST`` is
    ``both`` (the default), ``index-host``, ``builder`` or ``off``."""
    import os
    from wheelwright.errors import ConfigError
    value = (os.environ if environ is None else environ).get("WHEELWRIGHT_INSTALL_TEST", "both").strip() or "both"
    if value not in SIDES:
        raise ConfigError(f"WHEELWRIGHT_INSTALL_TEST={value!r}: say both, index-host, builder or off")
    return side in SIDES[value]


def image_where(root: Path) -> str | None:
    """``bookworm armhf`` for the root of an image of the store; None for a system that is no image."""
    from wheelwright.builds.images import read_image
    image = read_image(Path(root).parent)
    return None if image is None else f"{image.recipe.distro} {image.recipe.arch}"
