"""Fuzzing: mutated specs through both front ends, the passes and the backends, counting what goes wrong.

The seeds are the examples (examples/*.msl), the broken-spec corpus (tests/broken/) and the seeds'
YAML specs (tests/seeds_yaml/). Each case takes one seed and applies one to three mutations: delete,
duplicate or swap tokens or lines; replace a number with a huge, zero, negative, fractional or
non-finite one; nest an expression hundreds deep; insert random unicode; truncate. The mutant is
compiled in this process (compile_model_set, as `metagenc` does) and, where it compiles, emitted by
the PyTorch and LaTeX backends in memory; with torch installed, the emitted model.py is executed as
a module (its classes and Config defined, nothing built), which catches generated code that does not
import.

Each case ends in one of: ok (compiled and emitted), input error (diagnostics, exit 1 in the CLI),
internal error (I001 or a backend failure, exit 3), traceback (an exception out of the compiler) or
timeout (past --case-timeout seconds). Diagnostics without a position are counted apart. The goal
is zero of everything but ok and input errors; the distinct causes of the failures are listed with a
case number that reproduces them: `python benchmarks/fuzz.py --show CASE` prints that mutant.

Case i is a function of (--seed, i) alone, so a quick run is a prefix of a long one.
Usage: python benchmarks/fuzz.py [--cases 10000] [--quick] [--seed 0] [--out FILE] [--show CASE]
tests/test_fuzz.py runs a few hundred cases of the same mutator in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import platform
import random
import re
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

SEED_GLOBS = ("examples/*.msl", "tests/broken/msl/*.msl", "tests/broken/yaml/*.yaml", "tests/seeds_yaml/*.yaml")
STATUSES = ("ok", "input_error", "internal_error", "traceback", "timeout")

# Numbers a mutation puts in place of a number: huge, past int64, zero, negative, fractional, non-finite.
HOSTILE_NUMBERS = (
    "0", "-1", "-64", "1", "0.5", "1.5", "1e30", "1e999", "-1e999", "1e-999", "2**62", "2**63", "2**64",
    "9007199254740993", "9223372036854775808", "9" * 40, "9" * 5000, "1" + "0" * 400, "10**400", "2**2**2**2**2",
    "0ms", "1e308*10", "1/3", "0.1", "3.0", "4096", "100000", "nan", "inf",
)
UNICODE = ("é", "ß", "\u00a0", "\u200b", "\u202e", "\u2028", "\u0301", "😀", "\x00", "\x0b", "\x0c", "\r", "\t",
           "\ufeff", "ı", "Ａ", "\x1b[31m", "\\", '"', "'", "#", "{", "}", "(", ")", "[", "]", "?", ":", ";", "=")
_TOKEN = re.compile(r"\s+|[A-Za-z_][A-Za-z0-9_]*|[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?[A-Za-z]*|\"(?:[^\"\\\n]|\\.)*\"|.",
                    re.DOTALL)
_NUMBER = re.compile(r"(?<![A-Za-z_0-9.])[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?(?:[A-Za-z]+)?")


def seeds(root: Path = ROOT) -> list[Path]:
    out: list[Path] = []
    for g in SEED_GLOBS:
        out += sorted(root.glob(g))
    return out


# ---------------------------------------------------------------- mutations
def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _words(toks: list[str]) -> list[int]:
    return [i for i, t in enumerate(toks) if not t.isspace()]


def m_delete_token(text: str, rng: random.Random) -> str:
    toks = _tokens(text)
    idx = _words(toks)
    if idx:
        del toks[rng.choice(idx)]
    return "".join(toks)


def m_duplicate_token(text: str, rng: random.Random) -> str:
    toks = _tokens(text)
    idx = _words(toks)
    if idx:
        i = rng.choice(idx)
        toks.insert(i, toks[i] + rng.choice(("", " ")))
    return "".join(toks)


def m_swap_tokens(text: str, rng: random.Random) -> str:
    toks = _tokens(text)
    idx = _words(toks)
    if len(idx) >= 2:
        i, j = rng.sample(idx, 2)
        toks[i], toks[j] = toks[j], toks[i]
    return "".join(toks)


def m_replace_token(text: str, rng: random.Random) -> str:
    """A token replaced by another token of the same file (a name where a number was, `{` for `(`)."""
    toks = _tokens(text)
    idx = _words(toks)
    if len(idx) >= 2:
        toks[rng.choice(idx)] = toks[rng.choice(idx)]
    return "".join(toks)


def m_delete_line(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    if len(lines) > 1:
        del lines[rng.randrange(len(lines))]
    return "\n".join(lines)


def m_duplicate_line(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    i = rng.randrange(len(lines))
    lines.insert(rng.randrange(len(lines) + 1), lines[i])
    return "\n".join(lines)


def m_swap_lines(text: str, rng: random.Random) -> str:
    lines = text.split("\n")
    if len(lines) >= 2:
        i, j = rng.sample(range(len(lines)), 2)
        lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def m_number(text: str, rng: random.Random) -> str:
    nums = list(_NUMBER.finditer(text))
    if not nums:
        return m_unicode(text, rng)
    m = rng.choice(nums)
    return text[:m.start()] + rng.choice(HOSTILE_NUMBERS) + text[m.end():]


def m_all_numbers(text: str, rng: random.Random) -> str:
    """Every number of the file replaced by one hostile value."""
    v = rng.choice(HOSTILE_NUMBERS[:20])
    return _NUMBER.sub(lambda m: v, text)


def m_nest(text: str, rng: random.Random) -> str:
    """A number or name wrapped hundreds deep: parentheses, negations, lists, calls, sums, `not`."""
    nums = list(_NUMBER.finditer(text)) or list(re.finditer(r"[A-Za-z_]+", text))
    if not nums:
        return text
    m = rng.choice(nums)
    n = rng.choice((50, 101, 150, 500, 2000))
    v = m.group(0)
    kind = rng.randrange(7)
    if kind == 0:
        s = "(" * n + v + ")" * n
    elif kind == 1:
        s = "-" * n + v
    elif kind == 2:
        s = "[" * n + v + "]" * n
    elif kind == 3:
        s = "max(" * n + v + ")" * n
    elif kind == 4:
        s = v + " + 1" * n
    elif kind == 5:
        s = "not " * n + v
    else:
        s = "(-(" * n + v + "))" * n
    return text[:m.start()] + s + text[m.end():]


def m_unicode(text: str, rng: random.Random) -> str:
    i = rng.randrange(len(text) + 1)
    s = "".join(rng.choice(UNICODE) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0x3000))
                for _ in range(rng.randint(1, 4)))
    return text[:i] + s + text[i:]


def m_truncate(text: str, rng: random.Random) -> str:
    return text[:rng.randrange(len(text) + 1)]


def m_yaml_nest(text: str, rng: random.Random) -> str:
    """YAML: a value nested deep in flow lists or mappings."""
    nums = list(_NUMBER.finditer(text))
    if not nums:
        return text
    m = rng.choice(nums)
    n = rng.choice((50, 101, 500))
    s = "[" * n + m.group(0) + "]" * n if rng.random() < 0.5 else "{a: " * n + m.group(0) + "}" * n
    return text[:m.start()] + s + text[m.end():]


# names a mutation puts where a name or a value was: primitives (some weightless), keywords, types,
# words that mean something in Python or LaTeX, the unknown `?`
NAMES = ("gelu", "relu", "dropout", "identity", "linear", "layernorm", "embedding", "conv2d", "softmax", "concat",
         "rmsnorm", "swiglu", "repeat", "input", "return", "model", "block", "family", "int", "float", "layer",
         "true", "false", "none", "None", "self", "class", "config", "torch", "inf", "nan", "x", "h", "std", "?",
         "d_model", "layers", "heads", "vocab", "context", "hidden", "num_classes", "features", "nodes")
VALUES = ("?", "? in 1..8", "? multiple_of 0 in 1..8", "gelu", "linear(in_features = 4, out_features = 4)",
          "swiglu(hidden = d_model)", "dropout(0.1)", "[1, 2, 3]", "[]", "()", '"text"', "true", "0ms", "5GB",
          "-1", "0", "1e999", "2**63", "d_model / 0", "round(1e300 * 1e300)", "sqrt(-1)", "(-8) ** 0.5",
          "0 ** -1", "max()", "[1][5]", "layers", "heads / 3", "1 / 3")


def m_name(text: str, rng: random.Random) -> str:
    """An identifier replaced by a primitive, a keyword, a type, a parameter or `?`."""
    toks = _tokens(text)
    idx = [i for i, t in enumerate(toks) if t[:1].isalpha() or t[:1] == "_"]
    if idx:
        toks[rng.choice(idx)] = rng.choice(NAMES)
    return "".join(toks)


def m_value(text: str, rng: random.Random) -> str:
    """The value after an `=` replaced: an open dimension, a layer value, a list, a string, a unit, ..."""
    eqs = [m for m in re.finditer(r"(?<![=<>!])=(?!=)[ \t]*([^;\n{}]*)", text)]
    if not eqs:
        return m_number(text, rng)
    m = rng.choice(eqs)
    return text[:m.start(1)] + rng.choice(VALUES) + text[m.end(1):]


def m_insert_field(text: str, rng: random.Random) -> str:
    """A field or statement inserted after an opening brace: a parameter set twice, a label, a layer."""
    opens = [m.end() for m in re.finditer(r"\{[ \t]*\n", text)]
    if not opens:
        return m_duplicate_line(text, rng)
    at = rng.choice(opens)
    line = rng.choice((
        f"  {rng.choice(NAMES)} = {rng.choice(VALUES)}\n",
        f"  {rng.choice(NAMES)} = {rng.choice(HOSTILE_NUMBERS[:20])}\n",
        "  x = x >> a: linear(4, 4) >> a: linear(4, 4)\n",
        "  backbone = gelu\n",
        f"  {rng.choice(NAMES)}\n",
    ))
    return text[:at] + line + text[at:]


MUTATIONS = {
    "delete_token": m_delete_token, "duplicate_token": m_duplicate_token, "swap_tokens": m_swap_tokens,
    "replace_token": m_replace_token, "delete_line": m_delete_line, "duplicate_line": m_duplicate_line,
    "swap_lines": m_swap_lines, "number": m_number, "all_numbers": m_all_numbers, "nest": m_nest,
    "unicode": m_unicode, "truncate": m_truncate, "name": m_name, "value": m_value, "insert_field": m_insert_field,
}
# how often each is drawn: numbers most, since they reach the passes and the backends
WEIGHTS = {"number": 5, "value": 4, "name": 3, "insert_field": 2, "all_numbers": 2, "nest": 2, "delete_token": 2,
           "replace_token": 2}
YAML_MUTATIONS = {**MUTATIONS, "nest": m_yaml_nest}


@dataclass(frozen=True)
class Case:
    index: int
    seed_path: Path
    text: str
    mutations: tuple[str, ...]

    @property
    def is_yaml(self) -> bool:
        return self.seed_path.suffix in (".yaml", ".yml")


def make_case(index: int, seed: int, seed_files: list[Path], texts: dict[Path, str]) -> Case:
    rng = random.Random(seed * 1_000_003 + index)
    path = seed_files[rng.randrange(len(seed_files))]
    text = texts[path]
    table = YAML_MUTATIONS if path.suffix in (".yaml", ".yml") else MUTATIONS
    names = sorted(table)
    weights = [WEIGHTS.get(n, 1) for n in names]
    applied = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        name = rng.choices(names, weights)[0]
        text = table[name](text, rng)
        applied.append(name)
    return Case(index, path, text, tuple(applied))


def cases(n: int, seed: int = 0, root: Path = ROOT) -> Iterator[Case]:
    files = seeds(root)
    texts = {p: p.read_text(encoding="utf-8") for p in files}
    for i in range(n):
        yield make_case(i, seed, files, texts)


# ---------------------------------------------------------------- running one case
class CaseTimeout(BaseException):
    """Raised by the alarm in a case that runs too long (a BaseException: the driver's `except Exception`
    that turns bugs into I001 must not swallow it)."""


@dataclass
class Outcome:
    status: str
    seconds: float
    cause: str | None = None  # for internal errors and tracebacks: exception and where it was raised
    codes: tuple[str, ...] = ()
    unpositioned: list[str] = field(default_factory=list)  # "CODE: message" of diagnostics without a position


def _where(tb_text: str) -> str:
    """`file:function` of the innermost frame in the compiler or the backends of a formatted traceback."""
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', tb_text)
    ours = [(f, fn) for f, fn in frames if "metagen_compiler" in f or "backends" in f or "metagen_backends" in f]
    f, fn = (ours or frames or [("?", "?")])[-1]
    parts = Path(f).parts
    for anchor in ("metagen_compiler", "backends"):
        if anchor in parts:
            f = "/".join(parts[parts.index(anchor):])
            break
    return f"{f}:{fn}"


def _exc_cause(e: BaseException) -> str:
    return f"{type(e).__name__} in {_where(''.join(traceback.format_exception(type(e), e, e.__traceback__)))}"


@functools.cache
def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _run(case_path: str, text: str, backends: tuple[str, ...], exec_model: bool) -> Outcome:
    from metagen_compiler.cli import write_outputs
    from metagen_compiler.compilation import Options
    from metagen_compiler.diagnostics import BackendError, render_json, render_text
    from metagen_compiler.driver import collect_diagnostics, compile_model_set
    from metagen_compiler.span import SourceFile

    comps = compile_model_set(SourceFile(case_path, text), Options())
    diags = collect_diagnostics(comps)
    render_text(diags)  # the renderers are on the path every diagnostic takes
    render_json(diags)
    unpositioned = [f"{d.code}: {d.message[:80]}" for d in diags if d.span is None or d.span.file is None]
    codes = tuple(sorted({d.code for d in diags}))
    internal = [d for d in diags if d.code == "I001"]
    if internal:
        d = internal[0]
        head = d.message.split(": ", 1)[-1].split(":", 1)[0]
        return Outcome("internal_error", 0.0, f"{head} in {_where(d.hint or '')}", codes, unpositioned)
    if any(c.bag.has_errors for c in comps):
        return Outcome("input_error", 0.0, None, codes, unpositioned)
    for c in comps:
        try:
            _target, files = write_outputs(c, Path("/nonexistent-out"), list(backends))
        except BackendError as e:
            diags = [d for d in e.diagnostics if hasattr(d, "span")]
            unpositioned += [f"{d.code}: {d.message[:80]}" for d in diags if d.span is None or d.span.file is None]
            return Outcome("input_error", 0.0, None, codes, unpositioned)
        except Exception as e:  # noqa: BLE001 - the CLI reports any of these as an internal error (exit 3)
            return Outcome("internal_error", 0.0, _exc_cause(e), codes, unpositioned)
        model_py = files.get("model.py")
        if isinstance(model_py, str):
            try:
                code = compile(model_py, "model.py", "exec")
            except SyntaxError as e:
                return Outcome("internal_error", 0.0, f"SyntaxError in generated model.py: {e.msg}", codes, unpositioned)
            if exec_model and _has_torch():
                import types

                mod = types.ModuleType("metagen_fuzzed_model")  # dataclasses look their module up in sys.modules
                sys.modules[mod.__name__] = mod
                try:
                    exec(code, mod.__dict__)  # noqa: S102 - the compiler's own output, as `import model` would
                except Exception as e:  # noqa: BLE001 - any failure to import is what is counted
                    return Outcome("internal_error", 0.0, f"{type(e).__name__} importing generated model.py: "
                                   f"{str(e)[:60]}", codes, unpositioned)
                finally:
                    del sys.modules[mod.__name__]
    return Outcome("ok", 0.0, None, codes, unpositioned)


def run_case(case_path: str, text: str, *, backends: tuple[str, ...] = ("pytorch", "latex"),
             exec_model: bool = True, timeout: float = 10.0) -> Outcome:
    """Compile (and emit) one text as the file `case_path`; never raises. The path matters: imports
    are looked up beside it, and its suffix picks the front end."""
    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout()

    t0 = time.perf_counter()
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            out = _run(case_path, text, backends, exec_model)
    except CaseTimeout:
        out = Outcome("timeout", 0.0, f"timeout past {timeout:g} s")
    except Exception as e:  # noqa: BLE001 - a traceback out of the compiler, whatever it is, is what is counted
        out = Outcome("traceback", 0.0, _exc_cause(e))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    out.seconds = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------- the campaign
def campaign(n: int, seed: int = 0, timeout: float = 10.0, progress: bool = False) -> dict:  # type: ignore[type-arg]
    counts = dict.fromkeys(STATUSES, 0)
    counts["unpositioned"] = 0
    causes: dict[str, dict] = {}  # type: ignore[type-arg]
    by_mutation: dict[str, dict[str, int]] = {}
    slowest: tuple[float, int] = (0.0, -1)
    t0 = time.perf_counter()
    for case in cases(n, seed):
        o = run_case(str(case.seed_path), case.text, timeout=timeout)
        counts[o.status] += 1
        for m in case.mutations:
            by_mutation.setdefault(m, dict.fromkeys(STATUSES, 0))[o.status] += 1
        if o.seconds > slowest[0]:
            slowest = (o.seconds, case.index)
        problems = ([o.cause] if o.status not in ("ok", "input_error") and o.cause else []) + [
            f"diagnostic without a position: {u}" for u in o.unpositioned[:1]]
        if o.unpositioned:
            counts["unpositioned"] += 1
        for p in problems:
            c = causes.setdefault(p, {"cause": p, "status": o.status if p == o.cause else "unpositioned",
                                      "count": 0, "example_case": case.index,
                                      "example_seed": case.seed_path.relative_to(ROOT).as_posix(),
                                      "example_mutations": list(case.mutations)})
            c["count"] += 1
        if progress and (case.index + 1) % 500 == 0:
            print(f"  {case.index + 1} cases, {time.perf_counter() - t0:.0f} s: {counts}", file=sys.stderr, flush=True)
    return {
        "cases": n, "seed": seed, "case_timeout_s": timeout, "counts": counts,
        "causes": sorted(causes.values(), key=lambda c: (-c["count"], c["cause"])),
        "by_mutation": dict(sorted(by_mutation.items())),
        "seconds": round(time.perf_counter() - t0, 1), "slowest_case_s": round(slowest[0], 3),
        "slowest_case": slowest[1], "torch": _has_torch(), "python": platform.python_version(),
    }


def table(data: dict) -> str:  # type: ignore[type-arg]
    c = data["counts"]
    lines = [(f"{data['cases']} mutated specs (seed {data['seed']}) in {data['seconds']} s; slowest case "
              f"{data['slowest_case_s']} s (case {data['slowest_case']})"), "",
             f"{'outcome':<34}{'cases':>8}", "-" * 42]
    labels = {"ok": "ok (compiled and emitted)", "input_error": "input errors (diagnosed)",
              "internal_error": "internal errors (exit 3)", "traceback": "tracebacks",
              "timeout": f"timeouts (> {data['case_timeout_s']:g} s)", "unpositioned": "with a diagnostic without position"}
    for k, label in labels.items():
        lines.append(f"{label:<34}{c[k]:>8}")
    if data["causes"]:
        lines += ["", "distinct causes:"]
        for cause in data["causes"]:
            lines.append(f"  {cause['count']:>5}  {cause['cause']}  (e.g. case {cause['example_case']}: "
                         f"{cause['example_seed']}, {'+'.join(cause['example_mutations'])})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--quick", action="store_true", help="200 cases (CI's smoke run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds one case may take")
    ap.add_argument("--out", type=Path, default=RESULTS / "fuzz.json")
    ap.add_argument("--show", type=int, metavar="CASE", help="print case CASE's mutant and its outcome, and stop")
    args = ap.parse_args(argv)
    if args.show is not None:
        (case,) = [c for c in cases(args.show + 1, args.seed) if c.index == args.show]
        print(f"# case {case.index}: {case.seed_path.relative_to(ROOT)} + {'+'.join(case.mutations)}")
        print(case.text)
        print(run_case(str(case.seed_path), case.text, timeout=args.case_timeout), file=sys.stderr)
        return 0
    try:  # a case that allocates without bound fails alone (MemoryError) instead of taking the machine
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.RLIM_INFINITY))
    except (ImportError, ValueError, OSError):
        pass
    n = 200 if args.quick else args.cases
    data = campaign(n, args.seed, args.case_timeout, progress=not args.quick)
    print(table(data))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    bad = sum(data["counts"][k] for k in ("internal_error", "traceback", "timeout", "unpositioned"))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
