"""The build frontend that runs inside the sandbox when a prepared build environment is mounted.

pip's ``wheel`` with build isolation spends most of a small build making a fresh environment: a pip
subprocess resolving, downloading and installing setuptools (and Cython, meson...) for every build,
under qemu for a Pi target. With a prepared environment (:mod:`wheelwright.builds.buildenvs`) the
requirements are already installed, read-only, so what is left is PEP 517 itself, which this small
frontend does with the standard library only, run by the prepared environment's Python:

1. unpack the sdist the worker fetched (``/build/sdist/``) into ``/build/src`` (no member may leave it);
2. call the backend's ``get_requires_for_build_wheel`` and check what it answers against the
   environment (``packaging``, copied from the worker and loaded only in a child process, so the
   build never sees it). What the environment lacks (``setup_requires``, scikit-build-core's cmake)
   is written to the report and the frontend exits with :data:`UNMET`: the builder extends the
   prepared set or falls back to pip's isolated build;
3. call ``build_wheel`` into ``/build/wheels`` and check that the wheel's METADATA names the package.

The backend is imported once and each hook runs in a child process of its own (a fork: Python starts
and imports setuptools once, which under emulation is most of the saving), as pip runs them in subprocesses, so one hook's imports never leak into the next;
its answer comes back through a file of the sandbox's own ``/tmp`` (a daemon it leaves behind cannot
hold the frontend waiting, as it could on a pipe).
The lines it prints are the ones pip prints at the same moments ("Getting requirements to build
wheel", "Building wheel for ..."): the builder tells from them whether the sdist's code ran.

The report (``/build/frontend.json``) is written where the build can write too: the builder reads it
as untrusted, for timings and the unmet requirements only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import packaging

MOUNT = "/opt/wheelwright/frontend"       # read-only inside: the script and its packaging copy
SCRIPT = "frontend.py"
UNMET = 3                                 # exit status: the environment lacks what the backend asked for
REPORT = "frontend.json"
MAX_REPORT = 64 * 1024

FRONTEND_SCRIPT = r'''
"""wheelwright's PEP 517 frontend, inside the sandbox (see wheelwright.builds.frontend)."""
import json, os, re, stat, sys, tarfile, time, traceback, zipfile

VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
del sys.path[0]   # the script's own folder: the build must not import our copy of packaging
ENVIRONMENT = list(sys.path)  # what the environment offers, before a backend adds its vendored copies
UNMET = 3


def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def inside(root, name):
    path = os.path.realpath(os.path.join(root, name))
    return path == root or path.startswith(root + os.sep)


def unpack(archive, into):
    os.makedirs(into)
    if archive.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not inside(into, info.filename):
                    raise SystemExit("refused: the sdist holds the member %r, outside its folder" % info.filename)
                zf.extract(info, into)
                mode = info.external_attr >> 16
                if mode and stat.S_ISREG(mode) and mode & 0o111:
                    path = os.path.join(into, info.filename)
                    os.chmod(path, os.stat(path).st_mode | 0o111)
    else:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(into, filter="data")
            else:
                members = []
                for member in tar.getmembers():
                    if not inside(into, member.name) or member.isdev() or \
                            ((member.issym() or member.islnk()) and
                             not inside(into, os.path.join(os.path.dirname(member.name), member.linkname))):
                        raise SystemExit("refused: the sdist holds the member %r, outside its folder" % member.name)
                    members.append(member)
                tar.extractall(into, members=members)
    tops = os.listdir(into)
    if len(tops) != 1 or not os.path.isdir(os.path.join(into, tops[0])):
        raise SystemExit("refused: the sdist does not hold one top folder (it holds %r)" % sorted(tops)[:5])
    return os.path.join(into, tops[0])


def in_child(work):
    """Run work() in a forked child; return what it returned (JSON), or None when it failed.

    The answer goes through a file, not a pipe: a daemon the hook leaves behind would hold a pipe open.
    """
    answer = "/tmp/wheelwright-answer-%d.json" % time.monotonic_ns()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            data = json.dumps({"result": work()})
            with open(answer, "w") as out:
                out.write(data)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    try:
        with open(answer) as f:
            data = f.read()
        os.unlink(answer)
    except OSError:
        return None
    if os.waitstatus_to_exitcode(status) != 0 or not data:
        return None
    return json.loads(data)["result"]


def backend_of(job, source):
    def load():
        os.chdir(source)
        for entry in reversed(job["backend_path"]):
            sys.path.insert(0, os.path.join(source, entry))
        module, _, attrs = job["backend"].partition(":")
        obj = __import__(module, fromlist=["_"])
        for attr in filter(None, attrs.split(".")):
            obj = getattr(obj, attr)
        return obj
    return load


def unmet(requirements):
    """Which of requirements (PEP 508 strings) this environment does not satisfy."""
    sys.path[:] = [VENDOR] + ENVIRONMENT
    from importlib import metadata
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    missing, seen = [], set()

    def check(text, extra, top):
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            return
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier))
        if key in seen:
            return
        seen.add(key)
        try:
            have = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(top)
            return
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            missing.append(top)
            return
        for wanted in req.extras:
            for dep in metadata.requires(req.name) or ():
                check(dep, wanted, top)

    for text in requirements:
        check(text, "", text)
    return sorted(set(missing))


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def main():
    job = json.load(open(sys.argv[1]))
    times, report = {}, {}

    def finish(status):
        report["times"] = times
        with open(job["report"], "w") as out:
            json.dump(report, out)
        sys.exit(status)

    started = time.monotonic()
    source = unpack(job["sdist"], job["source"])
    times["unpack"] = round(time.monotonic() - started, 3)
    say("Getting requirements to build wheel")
    started = time.monotonic()
    # Imported once, here, so each hook's child starts with it imported: what a fresh process
    # importing it would have, without importing it again (setuptools takes seconds under qemu).
    try:
        backend = backend_of(job, source)()
    except BaseException:
        traceback.print_exc()
        say("ERROR: the build backend %s could not be imported" % job["backend"])
        finish(1)
    asked = in_child(lambda: list(getattr(backend, "get_requires_for_build_wheel", lambda c=None: [])(None)))
    times["requires"] = round(time.monotonic() - started, 3)
    if asked is None or not isinstance(asked, list) or not all(isinstance(r, str) for r in asked):
        say("ERROR: the build backend's get_requires_for_build_wheel failed")
        finish(1)
    started = time.monotonic()
    lacking = in_child(lambda: unmet(asked)) if asked else []
    times["check"] = round(time.monotonic() - started, 3)
    if lacking is None:
        say("ERROR: the build backend asked for requirements that cannot be read: %r" % asked[:10])
        finish(1)
    if lacking:
        say("[wheelwright: the prepared build environment lacks %s, which the backend asked for]"
            % ", ".join(lacking))
        report["unmet"] = lacking
        finish(UNMET)

    say("Building wheel for %s (pyproject.toml)" % job["package"])
    started = time.monotonic()
    os.makedirs(job["wheels"], exist_ok=True)
    built = in_child(lambda: backend.build_wheel(job["wheels"], None, None))
    times["build"] = round(time.monotonic() - started, 3)
    if not isinstance(built, str) or "/" in built or not os.path.isfile(os.path.join(job["wheels"], built)):
        say("ERROR: Failed building wheel for %s" % job["package"])
        finish(1)
    with zipfile.ZipFile(os.path.join(job["wheels"], built)) as zf:
        metadata = [n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        name = None
        if len(metadata) == 1:
            for line in zf.read(metadata[0]).decode("utf-8", "replace").splitlines():
                if line.lower().startswith("name:"):
                    name = line.split(":", 1)[1].strip()
                    break
    if name is None or canonical(name) != canonical(job["package"]):
        say("ERROR: Requested %s has inconsistent name: expected '%s', but metadata has '%s'"
            % (job["package"], canonical(job["package"]), canonical(name or "")))
        finish(1)
    say("Successfully built %s" % built)
    report["wheel"] = built
    finish(0)


main()
'''


def frontend_folder(store: Path) -> Path:
    """A folder holding the frontend script and a copy of the worker's ``packaging``, made once per
    version of both under ``store`` and never changed after (it is bound read-only into builds)."""
    source = Path(packaging.__file__).parent
    digest = hashlib.sha256(FRONTEND_SCRIPT.encode() + packaging.__version__.encode()).hexdigest()[:16]
    final = store / f"frontend-{digest}"
    if final.is_dir():
        return final
    store.mkdir(parents=True, exist_ok=True)
    work = store / f".tmp-frontend-{digest}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    (work / SCRIPT).write_text(FRONTEND_SCRIPT)
    shutil.copytree(source, work / "vendor" / "packaging",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in [work, *work.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    try:
        os.rename(work, final)
    except OSError:  # another slot made it first
        shutil.rmtree(work, ignore_errors=True)
    return final


def job_file(*, package: str, sdist: str, backend: str, backend_path: tuple[str, ...], work: str) -> str:
    """The job the frontend reads (``work`` is the build's folder as the build sees it)."""
    return json.dumps({"package": package, "sdist": sdist, "backend": backend,
                       "backend_path": list(backend_path), "source": f"{work}/src",
                       "wheels": f"{work}/wheels", "report": f"{work}/{REPORT}"})


def read_report(work: Path) -> dict:
    """The frontend's report from the build's folder, read as untrusted: a plain small file of JSON,
    its ``times`` numbers and its ``unmet`` strings kept, anything else dropped."""
    try:
        fd = os.open(work / REPORT, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return {}
    try:
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return {}
            data = json.loads(f.read(MAX_REPORT + 1)[:MAX_REPORT])
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    times = data.get("times") if isinstance(data.get("times"), dict) else {}
    unmet = data.get("unmet") if isinstance(data.get("unmet"), list) else []
    return {"times": {k: float(v) for k, v in times.items()
                      if isinstance(k, str) and len(k) < 20 and isinstance(v, (int, float))},
            "unmet": [u for u in unmet[:64] if isinstance(u, str) and len(u) < 500]}
