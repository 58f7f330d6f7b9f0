"""The test command's own promise: a test that skips for want of what the setup installs fails, naming the
command that installs it, unless the user opts out with --allow-missing; other skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REQUIRED_PACKAGES, ROOT, missing_requirement

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8").replace(  # reads our pyproject.toml
    "ROOT = Path(__file__).resolve().parent.parent", f"ROOT = Path({str(ROOT)!r})")
TESTS = '''
import pytest

def test_needs_torch():
    pytest.skip("could not import 'torch': No module named 'torch'")

@pytest.mark.skipif(True, reason="TeX Live (pdflatex, bibtex) is not installed")
def test_needs_tex():
    pass

def test_not_applicable():
    pytest.skip("not a decoder")

def test_optional_reference():
    pytest.importorskip("metagen_no_such_reference_library")
'''


def test_missing_requirement_names_the_install_command() -> None:
    assert missing_requirement("could not import 'torch': No module named 'torch'") == \
        'python -m pip install "torch==2.13.0"'
    assert "apt-get install texlive" in (missing_requirement("TeX Live (pdflatex, bibtex) is not installed") or "")
    assert "npm ci" in (missing_requirement("the TextMate engine is missing: node is not installed") or "")
    assert missing_requirement("could not import 'torchvision': No module named 'torchvision'") is None
    assert missing_requirement("not a decoder") is None


def test_required_packages_are_what_the_test_extra_installs() -> None:
    """REQUIRED_PACKAGES comes from pyproject.toml; each import name it derives is one its distribution provides,
    so a distribution added to the `test` extra whose import name differs needs an IMPORT_NAMES entry."""
    import importlib.metadata
    import re
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    dists = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in
             [*project["dependencies"], *project["optional-dependencies"]["test"]]]
    providers = importlib.metadata.packages_distributions()
    provided = {re.sub(r"[-_.]+", "-", d).lower(): m for m, ds in providers.items() for d in ds if m in REQUIRED_PACKAGES}
    for d in dists:
        key = re.sub(r"[-_.]+", "-", d).lower()
        try:
            importlib.metadata.distribution(d)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: nothing to check its import name against
        assert key in provided, f"{d}: add its import name to conftest.IMPORT_NAMES"
    assert {"torch", "transformers", "onnx_ir", "pygments", "pytest_lsp", "psycopg2", "sklearn", "PIL",
            "networkx"} <= set(REQUIRED_PACKAGES)
    assert REQUIRED_PACKAGES["sklearn"] == 'python -m pip install -e ".[test]"'


def test_missing_tools_fail_unless_allowed(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METAGEN_TEST_ALLOW_MISSING", raising=False)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_tools=TESTS)
    strict = pytester.runpytest("-p", "no:cacheprovider", "-rs")
    strict.assert_outcomes(failed=1, errors=1, skipped=2)  # a skipif mark fails at setup: an error
    strict.stdout.fnmatch_lines(["*The test setup installs it: python -m pip install \"torch==2.13.0\"*"])
    relaxed = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--allow-missing")
    relaxed.assert_outcomes(skipped=4)
    relaxed.stdout.fnmatch_lines(["*SKIPPED*TeX Live*"])
