"""Shared test helpers: compiling specs, loading generated model.py files, text snapshots."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tomllib
import types
from pathlib import Path

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.msl"))
SEED_YAML = sorted((ROOT / "tests" / "seeds_yaml").glob("*.yaml"))


# What the README's test command (`bash .ci/setup && python -m pytest ...`) installs. A test that skips for want of
# one of these fails instead, naming the command that installs it: a green run then means the whole suite ran.
# `--allow-missing` (or METAGEN_TEST_ALLOW_MISSING=1) leaves them out on purpose; the summary (-rs) lists them.
_SETUP = "bash .ci/setup"
_PIP_TEST = 'python -m pip install -e ".[test]"'
# import names of the distributions whose name does not give it (lower case, `-` as `_`)
IMPORT_NAMES = {"pillow": "PIL", "scikit-learn": "sklearn", "psycopg2-binary": "psycopg2", "pyyaml": "yaml"}


def _installed_by_the_test_extra() -> list[str]:
    """Import names of pyproject.toml's dependencies and `test` extra: what `pip install -e ".[test]"` installs."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = (re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower()
             for r in [*project["dependencies"], *project["optional-dependencies"]["test"]])
    return [IMPORT_NAMES.get(n, n.replace("-", "_")) for n in names]


REQUIRED_PACKAGES = {
    **{m: _PIP_TEST for m in _installed_by_the_test_extra()},
    "torch": 'python -m pip install "torch==2.13.0"',  # the CPU build .ci/setup installs
}
REQUIRED_TOOLS = {  # words of a skip reason -> the command that installs the tool
    "TeX Live": f"{_SETUP} (or apt-get install texlive-latex-base texlive-latex-recommended texlive-latex-extra "
                "texlive-pictures latexmk)",
    "pdflatex": f"{_SETUP} (or apt-get install texlive-latex-base latexmk)",
    "TextMate engine": f"{_SETUP} (or npm ci --prefix editors/vscode)",
    "npm ci --prefix editors/vscode": f"{_SETUP} (or npm ci --prefix editors/vscode)",
    "node is not installed": f"{_SETUP} (or apt-get install nodejs npm)",
    "PostgreSQL is not installed": f"{_SETUP} (or apt-get install postgresql)",
    "espeak-ng is not installed": f"{_SETUP} (or apt-get install espeak-ng)",
    "tesseract-ocr is not installed": f"{_SETUP} (or apt-get install tesseract-ocr)",
    "base-files GPL-3 text is not here": "apt-get install base-files",
}
_COULD_NOT_IMPORT = re.compile(r"could not import '([A-Za-z0-9_.]+)'")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--allow-missing", action="store_true", default=False,
                     help="skip, rather than fail, the tests whose tools or packages the README's setup installs "
                          "(TeX Live, the TextMate engine, torch, the test extras) when they are absent")


def missing_requirement(reason: str) -> str | None:
    """The install command for what a skip reason says is missing, if the test setup installs it."""
    m = _COULD_NOT_IMPORT.search(reason)
    if m is not None:
        return REQUIRED_PACKAGES.get(m.group(1).split(".")[0])
    return next((cmd for words, cmd in REQUIRED_TOOLS.items() if words in reason), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or call.excinfo is None or not call.excinfo.errisinstance(pytest.skip.Exception):
        return
    if item.config.getoption("--allow-missing") or os.environ.get("METAGEN_TEST_ALLOW_MISSING"):
        return
    reason = str(call.excinfo.value)
    cmd = missing_requirement(reason)
    if cmd is not None:
        report.outcome = "failed"
        report.longrepr = (f"{reason}\nThe test setup installs it: {cmd}\n"
                           "(or run pytest with --allow-missing to skip such tests on purpose)")


def rel(p: Path) -> str:
    return p.resolve().relative_to(ROOT).as_posix()


def compile_path(path: Path, **kw):  # type: ignore[no-untyped-def]
    from metagen_compiler.driver import compile_source
    from metagen_compiler.semantics.program import read_source

    return compile_source(read_source(path, display=rel(path)), **kw)


def generated_module(path: Path, folder: Path, name: str) -> types.ModuleType:
    """The PyTorch backend's model.py for the spec at `path`, written to `folder` and imported as `name`."""
    from metagen_backends.pytorch import emit

    comp = compile_path(path)
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    (folder / "model.py").write_text(emit(comp)["model.py"])
    return load_module(folder / "model.py", name)


def load_module(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class TextSnapshot(SingleFileSnapshotExtension):
    """One plain-text file per snapshot, so golden diffs read like code review."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def text_snapshot(snapshot):  # type: ignore[no-untyped-def]
    return snapshot.use_extension(TextSnapshot)
