"""Fuzzing in CI (issue 15): a few hundred mutated specs through both front ends, the passes and the
PyTorch and LaTeX backends. None may end in an internal error (I001, or a backend failure: exit 3), a
traceback, a diagnostic without a position, or take longer than the time bound.

The mutator and the runner are benchmarks/fuzz.py's (which runs 10,000 cases and reports counts);
case i is a function of the seed and i alone, so a failure here is reproduced by
`python benchmarks/fuzz.py --seed SEED --show CASE`. METAGEN_FUZZ_CASES and METAGEN_FUZZ_SEED change
the number of cases and the seed (a longer local run: METAGEN_FUZZ_CASES=3000).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = int(os.environ.get("METAGEN_FUZZ_CASES", "300"))
SEED = int(os.environ.get("METAGEN_FUZZ_SEED", "0"))
# a case is a compile of one spec of at most a few kB: the slowest take a few seconds on a loaded machine
# (a solve over two open dims, a LaTeX paper); a hang or a quadratic path takes minutes
CASE_TIMEOUT_S = 60.0


def _fuzz() -> types.ModuleType:
    name = "metagen_fuzz_benchmark"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / "fuzz.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_mutants_are_deterministic_and_varied() -> None:
    fuzz = _fuzz()
    a = [(c.seed_path, c.text, c.mutations) for c in fuzz.cases(40, seed=SEED)]
    b = [(c.seed_path, c.text, c.mutations) for c in fuzz.cases(40, seed=SEED)]
    assert a == b
    seeds = {p for p, _, _ in a}
    assert any(p.suffix == ".yaml" for p in seeds) and any(p.suffix == ".msl" for p in seeds)
    assert len({m for _, _, ms in a for m in ms}) >= 8  # most mutations are drawn within 40 cases
    originals = {p: p.read_text(encoding="utf-8") for p in seeds}
    assert sum(t != originals[p] for p, t, _ in a) >= 35  # a mutation may rarely leave a file as it was


def test_the_runner_reports_what_it_must(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner itself: an exception in a pass is an internal error with its cause, an endless pass a
    timeout, a clean input ok (a fuzz test that cannot see a failure would pass whatever the compiler does)."""
    from metagen_compiler.passes.estimate import EstimatePass

    fuzz = _fuzz()
    path = ROOT / "examples" / "house_prices.msl"
    text = path.read_text(encoding="utf-8")
    assert fuzz.run_case(str(path), text, exec_model=False).status == "ok"
    assert fuzz.run_case(str(path), text.replace("model ", "modle "), exec_model=False).status == "input_error"

    def boom(self: object, comp: object) -> None:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setattr(EstimatePass, "run", boom)
    o = fuzz.run_case(str(path), text, exec_model=False)
    assert o.status == "internal_error" and o.cause is not None and "OverflowError" in o.cause

    def hang(self: object, comp: object) -> None:
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(EstimatePass, "run", hang)
    assert fuzz.run_case(str(path), text, exec_model=False, timeout=0.5).status == "timeout"


def test_fuzzed_specs_never_crash() -> None:
    fuzz = _fuzz()
    failures: list[str] = []
    slowest = 0.0
    statuses: dict[str, int] = {}
    for case in fuzz.cases(CASES, seed=SEED):
        o = fuzz.run_case(str(case.seed_path), case.text, timeout=CASE_TIMEOUT_S)
        statuses[o.status] = statuses.get(o.status, 0) + 1
        slowest = max(slowest, o.seconds)
        if o.status in ("internal_error", "traceback", "timeout") or o.unpositioned:
            what = o.cause or "; ".join(o.unpositioned)
            failures.append(f"case {case.index} ({case.seed_path.relative_to(ROOT)}, {'+'.join(case.mutations)}): "
                            f"{o.status}: {what}")
    assert not failures, (f"{len(failures)} of {CASES} mutants failed (reproduce: python benchmarks/fuzz.py "
                          f"--seed {SEED} --show CASE):\n" + "\n".join(failures))
    # the mutants reach past the parser: some compile and emit, most are refused with diagnostics
    assert statuses.get("ok", 0) >= CASES // 50 and statuses.get("input_error", 0) >= CASES // 2, statuses
    assert slowest < CASE_TIMEOUT_S
