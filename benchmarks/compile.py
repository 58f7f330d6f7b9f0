"""Compiler speed and scale: whole-process wall time and peak memory.

Runs `metagenc` in fresh processes (as a user would) on the examples, the GPT-3 175B spec and a
decoder at several depths, prints a table and writes benchmarks/results/compile.json.

Bytecode: an installed metagenc runs from cached bytecode (pip compiles it; Python writes
`__pycache__` on first import). So that a PYTHONDONTWRITEBYTECODE in the environment does not turn
every run into a recompile of the compiler's sources, the children write and read bytecode under a
private PYTHONPYCACHEPREFIX, warmed by one run first. `--no-bytecode-cache` measures the other case;
the first example is also timed that way, as `cold_bytecode` in the JSON.
Usage: python benchmarks/compile.py [--repeat 5] [--quick] [--no-bytecode-cache]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# One compile in a fresh interpreter; prints its own peak RSS (KiB) on the last line.
_CHILD = """
import resource, sys
from metagen_compiler.cli import command  # what the `metagenc` console script runs
rc = command(sys.argv[1:])
print("RSS_KIB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "RC", rc)
"""

DEPTH_SPEC = """msl 1
import std.layers
import std.transformer
model depth_{n} {{
  modality text -> text
  task generation
  constraints {{ context = 2048 }}
  architecture transformer.decoder {{
    vocab = 50257; layers = {n}; d_model = 4096; heads = 32
    norm = layernorm; mlp = gelu_mlp; position = learned; bias = true; tied = true
  }}
}}
"""


def child_env(pycache: str | None) -> dict[str, str]:
    """The children's environment: bytecode cached under `pycache`, or never written (None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def run_once(spec: Path, out: Path, extra: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, str(spec), "-o", str(out), *extra],
                       cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    last = r.stdout.strip().splitlines()[-1].split()
    if r.returncode != 0 or last[0] != "RSS_KIB" or last[3] != "0":
        raise RuntimeError(f"compile of {spec} failed:\n{r.stdout}\n{r.stderr}")
    return wall, int(last[1]) / 1024, int(last[3])


def model_name(spec: Path) -> str:
    m = re.search(r"^model\s+(\w+)", spec.read_text(), re.MULTILINE)
    assert m is not None, spec
    return m.group(1)


def nodes_of(out: Path, name: str) -> int:
    return len(json.loads((out / name / "graph.json").read_text())["nodes"])


def measure(spec: Path, name: str, repeat: int, extra: list[str], env: dict[str, str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        walls, rss = [], []
        for _ in range(repeat):
            w, m, _rc = run_once(spec, out, extra, env)
            walls.append(w)
            rss.append(m)
        return {"spec": name, "median_s": statistics.median(walls), "min_s": min(walls), "peak_rss_mb": max(rss),
                "nodes": nodes_of(out, name), "runs": repeat}


def _line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line y = a + b x, its r^2 and the largest residual relative to y."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1.0
    return {"intercept": a, "slope": b, "r2": 1 - ss_res / ss_tot,
            "max_rel_residual": max(abs(y - a - b * x) / y for x, y in zip(xs, ys))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one run each, fewer depths (CI smoke)")
    ap.add_argument("--out", default=str(RESULTS / "compile.json"))
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="children never write bytecode: every run compiles the compiler's sources")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="metagen-bench-pycache-") as pycache:
        return run(args, None if args.no_bytecode_cache else pycache)


def run(args: argparse.Namespace, pycache: str | None) -> int:
    env = child_env(pycache)
    repeat = 1 if args.quick else args.repeat
    rows = []
    # the interpreter alone (site imports included): the floor under every whole-process time below
    startup = []
    for _ in range(max(3, repeat)):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        startup.append(time.perf_counter() - t0)
    examples = sorted((ROOT / "examples").glob("*.msl"))
    if args.quick:
        examples = examples[:2]
    with tempfile.TemporaryDirectory() as d:
        run_once(examples[0], Path(d), [], env)  # writes the bytecode cache (when there is one)
    cold = measure(examples[0], model_name(examples[0]), max(3, repeat) if not args.quick else 1, [], child_env(None))
    for spec in examples:
        rows.append({"group": "example", **measure(spec, model_name(spec), repeat, [], env)})
    for big in ("gpt3_175b", "moe_1t"):
        rows.append({"group": "scale", **measure(ROOT / "benchmarks" / "specs" / f"{big}.msl", big, repeat, [], env)})
    depths = [12, 48] if args.quick else [12, 48, 96, 192]
    with tempfile.TemporaryDirectory() as d:
        for n in depths:
            p = Path(d) / f"depth_{n}.msl"
            p.write_text(DEPTH_SPEC.format(n=n))
            rows.append({"group": "depth", "layers": n, **measure(p, f"depth_{n}", repeat, [], env)})
    print(f"python -c pass: median {statistics.median(startup):.3f} s (interpreter start-up, in every row)")
    print(f"bytecode: {'cached (warm)' if pycache else 'not cached'}; {examples[0].name} without a bytecode "
          f"cache: median {cold['median_s']:.3f} s")
    print(f"{'group':8} {'spec':22} {'median s':>9} {'min s':>7} {'peak MB':>8} {'nodes':>6}")
    for r in rows:
        print(f"{r['group']:8} {r['spec']:22} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['peak_rss_mb']:8.1f} {r['nodes']:6}")
    dep = [r for r in rows if r["group"] == "depth"]
    if len(dep) >= 2:
        a, b = dep[0], dep[-1]
        ratio_nodes = b["nodes"] / a["nodes"]  # type: ignore[operator]
        ratio_time = b["median_s"] / a["median_s"]  # type: ignore[operator]
        print(f"depth {a['layers']} -> {b['layers']}: nodes x{ratio_nodes:.2f}, time x{ratio_time:.2f} "
              f"(layers x{b['layers'] / a['layers']:.0f})")  # type: ignore[operator]
    ex = [r for r in rows if r["group"] == "example"]
    summary = {"examples": len(ex), "example_median_s": statistics.median(float(r["median_s"]) for r in ex),
               "example_max_median_s": max(float(r["median_s"]) for r in ex),
               "example_max_peak_rss_mb": max(float(r["peak_rss_mb"]) for r in ex),
               "gpt3_175b_median_s": next(float(r["median_s"]) for r in rows if r["spec"] == "gpt3_175b")}
    print(f"examples: median of the {len(ex)} medians {summary['example_median_s']:.3f} s (target <= 0.4), slowest "
          f"{summary['example_max_median_s']:.3f} s, peak RSS <= {summary['example_max_peak_rss_mb']:.1f} MB "
          f"(target <= 120); gpt3_175b {summary['gpt3_175b_median_s']:.3f} s (target <= 2)")
    linear = {}
    if len(dep) >= 3:
        for key in ("nodes", "median_s"):
            fit = _line([float(r["layers"]) for r in dep], [float(r[key]) for r in dep])  # type: ignore[arg-type]
            linear[key] = fit
            print(f"{key:9} = {fit['intercept']:.4g} + {fit['slope']:.4g} x layers   (r^2 {fit['r2']:.4f}, "
                  f"largest residual {fit['max_rel_residual'] * 100:.1f}%)")
    result = {"benchmark": "compile", "python": platform.python_version(), "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_average": list(os.getloadavg()), "quick": args.quick,
              "backends": "default (pytorch, latex)", "interpreter_startup_s": statistics.median(startup),
              "bytecode_cache": pycache is not None,
              "cold_bytecode": {"spec": examples[0].name, "median_s": cold["median_s"], "min_s": cold["min_s"]},
              "summary": summary, "depth_fit": linear, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
