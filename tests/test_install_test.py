"""Install tests: a compiled wheel is installed in a fresh venv and its top-level modules imported, in the
sandbox, on a clean copy of its target's system; what the import says decides whether it is served.

The judging is pure (a report in, a verdict out); the runs here use this machine's own Debian system as
the read-only root (its python3 and pip), which is what an image is to an emulated target: the same
sandbox, the same driver, natively and in seconds. tests/test_corpus.py runs it in the Pi images.
"""

from __future__ import annotations

import subprocess
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support.build_world import make_wheel, open_folder
from wheelwright.builds import install_test
from wheelwright.builds.install_test import judge, parse_report, run_test, top_level_modules


def _zip(tmp_path, members) -> zipfile.ZipFile:
    return zipfile.ZipFile(make_wheel(tmp_path, "x-1.0-py3-none-any.whl", members))


def test_the_modules_tried_are_the_wheel_s_own_top_level_ones(tmp_path):
    listed = _zip(tmp_path, {"x-1.0.dist-info/top_level.txt": b"RPi\n_cffi_backend\ntests\n", "RPi/__init__.py": b""})
    assert top_level_modules(listed) == ["RPi", "_cffi_backend"], "from top_level.txt, tests left out"
    unlisted = _zip(tmp_path, {"yaml/__init__.py": b"", "yaml/_yaml.cpython-311-arm-linux-gnueabihf.so": b"",
                               "spidev.cpython-311-arm-linux-gnueabihf.so": b"", "six.py": b"",
                               "psutil/__init__.py": b"", "psutil/_psutil_linux.abi3.so": b"",
                               "tests/__init__.py": b"", "x-1.0.data/scripts/tool": b"",
                               "x-1.0.dist-info/RECORD": b""})
    assert top_level_modules(unlisted) == ["psutil", "six", "spidev", "yaml"], "from the files, without tests/"
    from wheelwright.builds.install_test import modules_to_import
    assert modules_to_import(unlisted) == ["psutil", "six", "spidev", "yaml", "psutil._psutil_linux", "yaml._yaml"], \
        "then every compiled module: a top level need not load them"


def report(*modules, stage="done", **extra):
    return {"stage": stage, "modules": list(modules), "own": ["RPi", "yaml"], "crashed": None, **extra}


def ok(name):
    return {"module": name, "ok": True}


def err(name, kind, message, missing=None):
    return {"module": name, "ok": False, "type": kind, "message": message, "missing": missing}


PI_ONLY = err("RPi", "RuntimeError", "This module can only be run on a Raspberry Pi!")


def test_every_module_imported_is_imports_on_the_image():
    result = judge("pyyaml", report(ok("yaml")), "bookworm armhf")
    assert (result.result, result.sentence()) == ("imports", "imports on bookworm armhf")


def test_rpi_gpio_refusing_off_a_pi_is_built_not_importable_off_a_pi_not_a_failure():
    result = judge("rpi-gpio", report(PI_ONLY), "bookworm armhf")
    assert result.result == "needs-a-pi" and result.loads
    assert result.sentence() == "built, not importable off a Pi (tested on bookworm armhf)"


def test_the_same_refusal_from_a_package_not_on_the_list_or_another_error_of_rpi_gpio_fails():
    assert judge("other-gpio", report(PI_ONLY), "bookworm armhf").result == "fails"
    missing_lib = err("RPi", "ImportError", "libgpiod.so.2: cannot open shared object file: No such file or directory")
    failed = judge("rpi-gpio", report(missing_lib), "bookworm armhf")
    assert failed.result == "fails" and "libgpiod.so.2: cannot open shared object file" in failed.detail
    assert failed.sentence().startswith("does not load on bookworm armhf: import RPi: ImportError: libgpiod.so.2")


def test_a_module_stopping_at_a_foreign_dependency_loads_up_to_it_but_its_own_missing_module_fails():
    needs = judge("pyyaml", report(err("yaml", "ModuleNotFoundError", "No module named 'numpy'", "numpy")), "w")
    assert needs.result == "needs-dependencies" and needs.detail == "yaml needs numpy" and needs.loads
    own = judge("pyyaml", report(err("yaml", "ModuleNotFoundError", "No module named 'yaml._yaml'", "yaml._yaml")), "w")
    assert own.result == "fails", "a module of its own missing is a broken wheel"


def test_a_crash_a_refused_install_and_a_test_that_ran_out_of_time_fail_with_their_reason():
    crashed = judge("pyyaml", report(stage="import", crashed={"module": "yaml", "signal": "SIGILL (illegal instruction)"}), "w")
    assert crashed.detail == "import yaml killed the interpreter with SIGILL (illegal instruction)"
    refused = judge("pyyaml", report(stage="install", error="ERROR: x.whl is not a supported wheel on this platform."), "w")
    assert refused.result == "fails" and "is not a supported wheel on this platform" in refused.detail
    slow = judge("pyyaml", report(stage="started", timed_out=True, running="yaml"), "w")
    assert slow.detail == "the test did not finish in time (importing yaml)"


def test_the_report_is_read_from_lines_of_this_run_only():
    text = ("noise\n@@n@@{\"start\": \"yaml\"}\n@@other@@{\"stage\": \"done\"}\n"
            "@@n@@{\"module\": \"yaml\", \"ok\": true}\n@@n@@{\"stage\": \"done\", \"status\": 0}\n")
    parsed = parse_report(text, "@@n@@", ["yaml"])
    assert parsed["stage"] == "done" and parsed["modules"] == [{"module": "yaml", "ok": True}]


# --- real runs in the sandbox, on this machine's own Debian system ----------------------------------

def _extension(work: Path, name: str, body: str) -> bytes:
    (work / f"{name}.c").write_text('#include <Python.h>\n' + body)
    so = work / f"{name}.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O1", f"-I{sysconfig.get_paths()['include']}",
                    str(work / f"{name}.c"), "-o", str(so)], check=True)
    return so.read_bytes()


def _wheel(work: Path, project: str, module: str, so: bytes, extra: dict | None = None) -> Path:
    dist = f"{project.replace('-', '_')}-1.0"
    tag = sysconfig.get_config_var("EXT_SUFFIX")
    members = {f"{module}{tag}": so,
               f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n".encode(),
               f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: cp311-cp311-linux_x86_64\n",
               f"{dist}.dist-info/RECORD": b"", **(extra or {})}
    return make_wheel(work, f"{dist}-cp311-cp311-linux_x86_64.whl", members)


MODULE = """
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "%(name)s", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_%(name)s(void) { %(body)s return PyModule_Create(&module); }
"""


@pytest.fixture(scope="module")
def work():
    path = open_folder("wheelwright-install-tests-")
    yield path
    import shutil
    shutil.rmtree(path)


def run(work: Path, wheel: Path, package: str):
    from wheelwright.builds.sandbox import build_identity
    return run_test(wheel, package, root=Path("/"), where="this machine", workdir=work / "runs",
                    identity=build_identity("nobody"), timeout=300)


def test_a_wheel_whose_module_loads_imports(work):
    wheel = _wheel(work, "good", "good", _extension(work, "good", MODULE % {"name": "good", "body": ""}))
    result = run(work, wheel, "good")
    assert (result.result, result.detail) == ("imports", None), result.output


def test_a_wheel_with_an_undefined_symbol_fails_with_the_loader_s_words(work):
    body = "extern int wheelwright_not_there(void); if (wheelwright_not_there()) return NULL;"
    wheel = _wheel(work, "broken", "broken", _extension(work, "broken", MODULE % {"name": "broken", "body": body}))
    result = run(work, wheel, "broken")
    assert result.result == "fails" and "undefined symbol: wheelwright_not_there" in result.detail, result.output


def test_a_pi_only_module_is_recognised_by_its_package_and_its_refusal(work):
    body = 'PyErr_SetString(PyExc_RuntimeError, "This module can only be run on a Raspberry Pi!"); return NULL;'
    so = _extension(work, "_GPIO", MODULE % {"name": "_GPIO", "body": body})
    tag = sysconfig.get_config_var("EXT_SUFFIX")
    # top_level.txt names RPi, whose __init__ is empty (as RPi.GPIO's own): the compiled module is tried too
    members = {f"RPi/_GPIO{tag}": so, "RPi/__init__.py": b"",
               "RPi/GPIO/__init__.py": b"from RPi._GPIO import *\n",
               "RPi.GPIO-1.0.dist-info/top_level.txt": b"RPi\n"}
    gpio = make_wheel(work, "RPi.GPIO-1.0-cp311-cp311-linux_x86_64.whl", {
        **members, "RPi.GPIO-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: RPi.GPIO\nVersion: 1.0\n",
        "RPi.GPIO-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: cp311-cp311-linux_x86_64\n",
        "RPi.GPIO-1.0.dist-info/RECORD": b""})
    result = run(work, gpio, "rpi-gpio")
    assert result.result == "needs-a-pi", result.output
    assert run(work, gpio, "not-rpi-gpio").result == "fails", "the list names the package, not the words alone"


def test_a_module_needing_an_uninstalled_dependency_loads_up_to_it(work):
    body = 'PyObject *np = PyImport_ImportModule("numpy_not_installed"); if (!np) return NULL;'
    wheel = _wheel(work, "needsdep", "needsdep", _extension(work, "needsdep", MODULE % {"name": "needsdep", "body": body}))
    result = run(work, wheel, "needsdep")
    assert (result.result, result.detail) == ("needs-dependencies", "needsdep needs numpy_not_installed"), result.output


def test_a_module_that_crashes_the_interpreter_fails_naming_the_signal(work):
    body = "raise(SIGILL);"
    so = _extension(work, "crash", "#include <signal.h>\n" + MODULE % {"name": "crash", "body": body})
    result = run(work, _wheel(work, "crash", "crash", so), "crash")
    assert result.result == "fails" and "SIGILL (illegal instruction)" in result.detail, result.output


def test_the_test_has_no_network(work):
    body = ('PyObject *s = PyImport_ImportModule("socket"); if (!s) return NULL;'
            'PyObject *r = PyObject_CallMethod(s, "create_connection", "((si)d)", "1.1.1.1", 53, 3.0);'
            'if (!r) return NULL;')
    wheel = _wheel(work, "phones", "phones", _extension(work, "phones", MODULE % {"name": "phones", "body": body}))
    result = run(work, wheel, "phones")
    assert result.result == "fails" and ("Network is unreachable" in result.detail or "OSError" in result.detail), \
        result.output


def test_which_side_tests_is_the_operator_s_choice():
    assert install_test.tested_on("index-host", {}) and install_test.tested_on("builder", {})
    assert not install_test.tested_on("builder", {"WHEELWRIGHT_INSTALL_TEST": "index-host"})
    assert not install_test.tested_on("index-host", {"WHEELWRIGHT_INSTALL_TEST": "off"})
    from wheelwright.errors import ConfigError
    with pytest.raises(ConfigError):
        install_test.tested_on("builder", {"WHEELWRIGHT_INSTALL_TEST": "sometimes"})
