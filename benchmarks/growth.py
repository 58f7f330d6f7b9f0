"""Growth of compile time and memory with the size of the input (issue 21: bounded, whatever the input).

Each kind of input grows by doubling: an MSL file with a long list, with many models, with many
blocks; a YAML spec with many keys, with many unknown keys (one diagnostic each); the range of an open
dimension (`? in 2..N`, which must cost the same for any N); the number of layers. Every point is
compiled by `metagenc --check` in a fresh interpreter that first compiles the smallest input of the
same kind (so imports, the grammar and the stdlib are loaded), then times the measured compile
alone: wall time and the process's CPU time (the fit uses CPU time, which a busy machine inflates
less); peak memory is the process's peak RSS (VmHWM), and `peak_delta_mb` its rise over the
warm-up. The fitted exponent b of time ~ size^b over the larger half of the points says how it grows:
b = 1 is linear (time x2 per doubling), b = 0 flat, b = 2 quadratic (x4 per doubling).
A second table compiles the hostile inputs of the issue (each once), which must end in seconds,
with a diagnostic or (`? in 2..4294967296`, 20,000 YAML anchors: within the limits) compiled:
`layers = 1e30`, `--set layers=100000`, `? in 2..4294967296`, 20,000 YAML anchors, an alias bomb,
50,000 YAML keys, 50 MB of invalid characters, a 50 MB MSL list.

Usage: python benchmarks/growth.py [--quick] [--repeat 3] [--out benchmarks/results/growth.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from metagen_compiler.semantics.limits import MAX_REPEAT, MAX_SOURCE_BYTES, MAX_YAML_NODES

HEADER = """msl 1
import std.transformer
"""

MODEL = """model m{i} {{
  modality text -> text
  task generation
  architecture transformer.decoder {{
    vocab = 256; context = 64; layers = {layers}; d_model = 64; heads = 2
  }}
  metadata {{ data = [{items}] }}
}}
"""

BLOCKS = """msl 1
{blocks}
block body(d: int) {{
  input x
  y0 = x
{chain}
  return y{n}
}}
family chain(d: int = 16, features: int = 16) {{
  encoder tabular = linear(features, d)
  backbone = body(d)
  head regression = linear(d, 1)
}}
model m {{
  modality tabular -> regression
  task regression
  architecture chain
}}
"""

RANGE = """msl 1
import std.transformer
model m {{
  modality text -> text
  task generation
  constraints {{ params <= 20M; context = 256 }}
  architecture transformer.decoder {{
    vocab = 1000; d_model = 128; heads = 2
    layers = ? in 2..{hi}
  }}
}}
"""

YAML = """metagen_version: "1.0"
name: "m"
modality:
  inputs: [text]
  outputs: [text]
task:
  type: generation
constraints:
  parameter_budget:
    max: "20M"
architecture:
  family: transformer
  layers: 2
  d_model: 64
  heads: 2
  vocab: 256
"""


def msl_list(n: int) -> tuple[str, str]:
    """One model whose metadata holds a list of n strings (the file grows ~9 bytes per item)."""
    items = ", ".join(f'"i{k}"' for k in range(n))
    return "msl", HEADER + MODEL.format(i=0, layers=2, items=items)


def msl_models(n: int) -> tuple[str, str]:
    """n small models in one file (each compiled through the whole pipeline)."""
    return "msl", HEADER + "".join(MODEL.format(i=k, layers=2, items='"x"') for k in range(n))


def msl_blocks(n: int) -> tuple[str, str]:
    """n block definitions, each applied once in a chain of n statements (the graph grows with n)."""
    blocks = "".join(f"block b{k}(d: int) {{\n  input x\n  return x >> l{k}: linear(d, d) >> relu\n}}\n"
                     for k in range(n))
    chain = "".join(f"  y{k + 1} = y{k} >> b{k}(d)\n" for k in range(n))
    return "msl", BLOCKS.format(blocks=blocks, chain=chain, n=n)


def yaml_keys(n: int) -> tuple[str, str]:
    """A YAML spec whose metadata (`description`) is a mapping of n keys."""
    return "yaml", YAML + "description:\n" + "".join(f"  key_{k}: value {k}\n" for k in range(n))


def yaml_unknown_keys(n: int) -> tuple[str, str]:
    """n unknown top-level YAML keys: n diagnostics (E007), each with a did-you-mean search."""
    return "yaml", YAML + "".join(f"unknown_{k}: 1\n" for k in range(n))


def solver_range(n: int) -> tuple[str, str]:
    """An open dimension over a range of n values: the solver's cost must not depend on n."""
    return "msl", RANGE.format(hi=n + 1)


def layers(n: int) -> tuple[str, str]:
    """A decoder of n layers (the graph grows ~11 nodes a layer)."""
    return "msl", HEADER + MODEL.format(i=0, layers=n, items='"x"')


Kind = Callable[[int], tuple[str, str]]
# kind -> (generator, sizes for the full run, sizes for --quick, what the size counts)
KINDS: dict[str, tuple[Kind, list[int], list[int], str]] = {
    "msl_list": (msl_list, [6_250 * 2**k for k in range(5)], [500, 1000, 2000], "list items"),
    "msl_models": (msl_models, [2 * 2**k for k in range(5)], [1, 2, 4], "models"),
    "msl_blocks": (msl_blocks, [32 * 2**k for k in range(6)], [8, 16, 32], "blocks"),
    "yaml_keys": (yaml_keys, [2_500 * 2**k for k in range(5)], [250, 500, 1000], "keys"),
    "yaml_unknown_keys": (yaml_unknown_keys, [2_000 * 2**k for k in range(5)], [250, 500, 1000], "diagnostics"),
    "solver_range": (solver_range, [2**k for k in (8, 16, 24, 32, 40, 48, 52)], [2**8, 2**32, 2**52], "range size"),
    "layers": (layers, [48 * 2**k for k in range(7)], [12, 24, 48], "layers"),
}


def hostile() -> list[tuple[str, str, Callable[[], str], list[str]]]:
    """The issue's inputs that hung, ran out of memory or crashed: (name, suffix, text maker, extra argv).
    Each text is made just before its run, so that this process stays small."""
    laughs = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{k}: &a{k} [" + ", ".join([f"*a{k - 1}"] * 10) + "]" for k in range(1, 10)]
    return [
        ("layers = 1e30", "msl", lambda: HEADER + MODEL.format(i=0, layers="1e30", items='"x"'), []),
        ("--set layers=100000", "msl", lambda: HEADER + MODEL.format(i=0, layers=2, items='"x"'),
         ["--set", "layers=100000"]),
        ("? in 2..4294967296", "msl", lambda: RANGE.format(hi=4294967296), []),
        ("YAML 20,000 anchors", "yaml", lambda: YAML + "description:\n"
         + "".join(f"  k{k}: &x{k} v\n" for k in range(20_000))
         + "evaluation: [" + ", ".join(f"*x{k}" for k in range(20_000)) + "]\n", []),
        ("YAML alias bomb (10^10 nodes)", "yaml", lambda: YAML + "description:\n" + "".join(f"  {x}\n" for x in laughs),
         []),
        ("YAML 50,000 keys", "yaml", lambda: YAML + "".join(f"unknown_{k}: 1\n" for k in range(50_000)), []),
        ("YAML nested 500 deep", "yaml", lambda: YAML + "description: " + "[" * 500 + "1" + "]" * 500 + "\n", []),
        ("YAML 50 MB of invalid characters", "yaml", lambda: YAML + "\x01" * (50 * 2**20), []),
        ("MSL 50 MB list", "msl", lambda: msl_list(5_000_000)[1], []),
    ]


def _peak_kib() -> int:
    """VmHWM: this process's own peak RSS. ru_maxrss would do elsewhere, but on Linux it keeps the
    high-water mark of the parent that spawned this interpreter (exec records it), however large."""
    try:
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("VmHWM:")).split()[1])
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(job: dict[str, list[str]]) -> dict[str, object]:
    """One measured compile, in the fresh interpreter that run_child starts: a warm-up compile (imports, the
    grammar, the stdlib), then the timed one, through what the `metagenc` console script runs."""
    import contextlib
    import io

    from metagen_compiler.cli import command

    def run(argv: list[str]) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = command(argv)
        return rc, err.getvalue()

    run(job["warm"])
    base = _peak_kib()
    t0, c0 = time.perf_counter(), time.process_time()
    rc, err = run(job["argv"])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _peak_kib()
    more = re.search(r"^(\d+) more errors?", err, re.MULTILINE)
    errors = len(re.findall(r"^\S*: ?error\[", err, re.MULTILINE)) + (int(more.group(1)) if more else 0)
    codes = sorted(set(re.findall(r"error\[(\w+)\]", err)))
    return {"rc": rc, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak / 1024, "base_rss_mb": base / 1024,
            "errors": errors, "codes": codes, "stderr_bytes": len(err)}


def run_child(path: Path, warm: Path, extra: list[str], out: Path, timeout: float) -> dict[str, object]:
    job = {"argv": [str(path), "--check", "-o", str(out), *extra], "warm": [str(warm), "--check", "-o", str(out)]}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    try:
        r = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=False, cwd=ROOT,
                           capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"timeout": timeout}
    if r.returncode != 0 or not r.stdout.strip():
        raise RuntimeError(f"the child failed on {path}:\n{r.stdout}\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def exponent(sizes: list[int], seconds: list[float]) -> float:
    """The least-squares slope of log(time) against log(size) over the larger half of the points."""
    first = len(sizes) // 2 - 1 if len(sizes) > 3 else 0
    pts = [(math.log(s), math.log(t)) for s, t in zip(sizes, seconds) if t > 0][first:]
    if len(pts) < 2:
        return float("nan")
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="three small sizes per kind, one run each, no hostile table")
    ap.add_argument("--repeat", type=int, default=3, help="runs per point; the fastest is kept")
    ap.add_argument("--out", default=str(RESULTS / "growth.json"))
    ap.add_argument("--child", metavar="JOB", help=argparse.SUPPRESS)  # one measured compile (run_child)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    repeat = 1 if args.quick else args.repeat
    kinds: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="metagen-growth-") as d:
        tmp = Path(d)
        print(f"{'kind':18} {'size':>16} {'file KB':>9} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'delta MB':>9} "
              f"{'errors':>7}")
        for name, (gen, full, quick, unit) in KINDS.items():
            sizes = quick if args.quick else full
            suffix, text = gen(sizes[0])
            warm = tmp / f"{name}_warm.{suffix}"
            warm.write_text(text + "\n# warm-up: another text, so that no cache keyed by it serves the first point\n",
                            encoding="utf-8")
            rows = []
            for n in sizes:
                suffix, text = gen(n)
                path = tmp / f"{name}_{n}.{suffix}"
                path.write_text(text, encoding="utf-8")
                size_bytes = len(text.encode("utf-8"))
                assert size_bytes <= MAX_SOURCE_BYTES, (name, n, size_bytes)  # growth is measured within the limits
                runs = [run_child(path, warm, [], tmp / "out", 600) for _ in range(repeat)]
                best = min(runs, key=lambda r: float(r["cpu_seconds"]))  # type: ignore[arg-type]
                delta = float(best["peak_rss_mb"]) - float(best["base_rss_mb"])  # type: ignore[arg-type]
                row = {"size": n, "file_bytes": size_bytes, **best, "peak_delta_mb": delta}
                rows.append(row)
                print(f"{name:18} {n:16,} {size_bytes / 1024:9.1f} {row['seconds']:8.3f} {row['cpu_seconds']:8.3f} "
                      f"{row['peak_rss_mb']:8.1f} {row['peak_delta_mb']:9.1f} {row['errors']:7}")
            b = exponent([int(r["size"]) for r in rows],  # type: ignore[arg-type]
                         [float(r["cpu_seconds"]) for r in rows])  # type: ignore[arg-type]
            kinds[name] = {"unit": unit, "exponent": b, "time_ratio_per_doubling": 2**b, "rows": rows}
            print(f"{'':18} CPU time ~ size^{b:.2f}: x{2**b:.2f} per doubling of the {unit}")
        hostile_rows = []
        if not args.quick:
            print(f"\n{'hostile input':34} {'file MB':>8} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} {'codes':>12}")
            for label, suffix, make, extra in hostile():
                path = tmp / f"hostile.{suffix}"
                text = make()
                path.write_text(text, encoding="utf-8")
                size_bytes = len(text.encode("utf-8"))
                del text
                warm = tmp / f"hostile_warm.{suffix}"
                warm.write_text(yaml_keys(1)[1] if suffix == "yaml" else msl_list(1)[1], encoding="utf-8")
                t0 = time.perf_counter()
                r = run_child(path, warm, extra, tmp / "out", 600)
                wall = time.perf_counter() - t0
                hostile_rows.append({"input": label, "file_bytes": size_bytes, "wall_s": wall, **r})
                print(f"{label:34} {size_bytes / 2**20:8.2f} {r.get('seconds', float('nan')):8.3f} "
                      f"{r.get('cpu_seconds', float('nan')):8.3f} {r.get('peak_rss_mb', float('nan')):8.1f} "
                      f"{','.join(r.get('codes', [])):>12}")  # type: ignore[arg-type]
    result = {"benchmark": "growth", "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "quick": args.quick, "repeat": repeat,
              "limits": {"MAX_REPEAT": MAX_REPEAT, "MAX_SOURCE_BYTES": MAX_SOURCE_BYTES,
                         "MAX_YAML_NODES": MAX_YAML_NODES},
              "kinds": kinds, "hostile": hostile_rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
