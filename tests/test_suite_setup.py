"""The test command's own promise: a test that skips for want of what the setup installs fails, naming the
command that installs it, unless the user opts out with --allow-missing; other skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import missing_requirement

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8")
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
