"""Compiler speed and scale: whole-process wall time and peak memory.

Runs `metagenc` in fresh processes (as a user would) on the examples, the GPT-3 175B spec and a
decoder at several depths, prints a table and writes benchmarks/results/compile.json.

Bytecode: an installed metagenc runs from cached bytecode (pip compiles it; Python writes
`__pycache__` on first import). So that a PYTHONDONTWRITEBYTECODE in the environment does not turn
every run into a recompile of the compiler's sources, the children write and read bytecode under a
private PYTHONPYCACHEPREFIX, warmed by one run first. `--no-bytecode-cache` measures the other case;
the first example is also timed that way, as `cold_bytecode` in the JSON.
`--compare TREE ...` times the examples with other checkouts of this repository as well (say
`git worktree add /tmp/base <commit>`), run by run in turn with this one, so every tree sees the same state of a
shared, noisy machine; each row then gives every tree's median and the summary the ratio of the medians.
Besides wall time, each child reports its own CPU time (user + system, start-up included): `cpu_s`.
Usage: python benchmarks/compile.py [--repeat 5] [--quick] [--no-bytecode-cache] [--compare TREE ...]
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
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

# One compile in a fresh interpreter; prints its own peak RSS (KiB) on the last line.
_CHILD = """
import resource, sys
from metagen_compiler.cli import command  # what the `metagenc` console script runs
rc = command(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
print("RSS_KIB", u.ru_maxrss, "RC", rc, "CPU_S", u.ru_utime + u.ru_stime)
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


def run_once(spec: Path, out: Path, extra: list[str], env: dict[str, str],
             tree: Path = ROOT) -> tuple[float, float, float]:
    """One compile in a fresh process of the compiler of `tree` (its root is the child's working directory, so
    its packages come first on the path): wall seconds, peak RSS (MB), CPU seconds."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _CHILD, str(spec), "-o", str(out), *extra],
                       cwd=tree, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    last = r.stdout.strip().splitlines()[-1].split() if r.stdout.strip() else [""]
    if r.returncode != 0 or last[0] != "RSS_KIB" or last[3] != "0":
        raise RuntimeError(f"compile of {spec} ({tree}) failed:\n{r.stdout}\n{r.stderr}")
    return wall, int(last[1]) / 1024, float(last[5])


def model_name(spec: Path) -> str:
    m = re.search(r"^model\s+(\w+)", spec.read_text(), re.MULTILINE)
    assert m is not None, spec
    return m.group(1)


def nodes_of(out: Path, name: str) -> int:
    return len(json.loads((out / name / "graph.json").read_text())["nodes"])


def measure(spec: Path, name: str, repeat: int, extra: list[str], env: dict[str, str],
            compare: dict[Path, dict[str, str]] | None = None) -> dict[str, object]:
    """`repeat` compiles of `spec` (into one output folder, as a user recompiles); with `compare` (other trees, each
    with its children's environment), each run of this tree goes with one of each other tree, in an order that
    rotates from run to run, and their medians go under "compare" (by tree)."""
    trees = {ROOT: env, **(compare or {})}
    with tempfile.TemporaryDirectory() as d:
        outs = {t: Path(d) / str(k) for k, t in enumerate(trees)}
        walls: dict[Path, list[float]] = {t: [] for t in trees}
        cpus: dict[Path, list[float]] = {t: [] for t in trees}
        rss = []
        order = list(trees)
        for i in range(repeat):
            for t in order[i % len(order):] + order[:i % len(order)]:
                w, m, c = run_once(spec, outs[t], extra, trees[t], tree=t)
                walls[t].append(w)
                cpus[t].append(c)
                if t == ROOT:
                    rss.append(m)
        row: dict[str, object] = {"spec": name, "median_s": statistics.median(walls[ROOT]), "min_s": min(walls[ROOT]),
                                  "cpu_s": statistics.median(cpus[ROOT]), "peak_rss_mb": max(rss),
                                  "nodes": nodes_of(outs[ROOT], name), "runs": repeat}
        if compare:
            row["compare"] = {str(t): {"median_s": statistics.median(walls[t]), "cpu_s": statistics.median(cpus[t])}
                              for t in compare}
        return row


def _line(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares line y = a + b x, its r^2 and the largest residual relative to y."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    a = my - b * mx
    ss_res = sum((y - a - b * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys) or 1.0
    return {"intercept": a, "slope": b, "r2": 1 - ss_res / ss_tot,
            "max_rel_residual": max(abs(y - a - b * x) / y for x, y in zip(xs, ys))}


def _num(x: object) -> float:
    assert isinstance(x, (int, float)), x
    return float(x)


def _compared(ex: list[dict[str, object]], tree: str) -> dict[str, float]:
    """The examples' medians with another tree, and this tree's over its: the median of the per-example ratios."""
    mine = [(_num(r["median_s"]), _num(r["cpu_s"])) for r in ex]
    theirs = []
    for r in ex:
        c = r["compare"]
        assert isinstance(c, dict)
        theirs.append((_num(c[tree]["median_s"]), _num(c[tree]["cpu_s"])))
    out = {"example_median_s": statistics.median(w for w, _ in theirs),
           "example_median_cpu_s": statistics.median(c for _, c in theirs),
           "median_ratio_wall": statistics.median(a[0] / b[0] for a, b in zip(mine, theirs)),
           "median_ratio_cpu": statistics.median(a[1] / b[1] for a, b in zip(mine, theirs))}
    print(f"{tree}: examples' median {out['example_median_s']:.4f} s wall, {out['example_median_cpu_s']:.4f} s CPU; "
          f"this tree / it, median per example: wall x{out['median_ratio_wall']:.4f}, "
          f"CPU x{out['median_ratio_cpu']:.4f}")
    return out


def _describe(tree: Path) -> str:
    """A tree's commit, and whether its tracked files differ from it."""
    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], cwd=tree, capture_output=True, text=True, check=False)
        return r.stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    return f"{head}{' + uncommitted changes' if git('status', '--porcelain', '--untracked-files=no') else ''}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one run each, fewer depths (CI smoke)")
    ap.add_argument("--out", default=str(RESULTS / "compile.json"))
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="children never write bytecode: every run compiles the compiler's sources")
    ap.add_argument("--compare", nargs="+", default=[], metavar="TREE",
                    help="other checkouts of this repository whose compiler times the examples too, run by run in "
                         "turn with this one")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="metagen-bench-pycache-") as pycache, \
            tempfile.TemporaryDirectory(prefix="metagen-bench-trees-") as shims:
        return run(args, None if args.no_bytecode_cache else pycache, Path(shims))


def tree_env(env: dict[str, str], tree: Path, shims: Path) -> dict[str, str]:
    """`env` for children that run `tree`'s compiler: the installed (editable) package maps the import names
    metagen_backends, metagen_stdlib, ... to one checkout's folders, so a folder of links with those names to
    `tree`'s (pyproject's package-dir) goes first on PYTHONPATH."""
    shim = shims / str(abs(hash(tree)))
    shim.mkdir(parents=True, exist_ok=True)
    package_dir = tomllib.loads((tree / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for name, folder in package_dir.items():
        if "." not in name and not (shim / name).exists():
            (shim / name).symlink_to(tree / folder, target_is_directory=True)
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (str(shim), env.get("PYTHONPATH", "")) if p)}


def run(args: argparse.Namespace, pycache: str | None, shims: Path) -> int:
    env = child_env(pycache)
    repeat = 1 if args.quick else args.repeat
    compare = {Path(t).resolve(): tree_env(env, Path(t).resolve(), shims) for t in args.compare}
    if compare:  # this tree's children too, so that every tree imports the same way
        env = tree_env(env, ROOT, shims)
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
    for tree, t_env in {ROOT: env, **compare}.items():
        with tempfile.TemporaryDirectory() as d:
            run_once(examples[0], Path(d), [], t_env, tree=tree)  # writes the bytecode cache (when there is one)
    cold_env = tree_env(child_env(None), ROOT, shims) if compare else child_env(None)
    cold = measure(examples[0], model_name(examples[0]), max(3, repeat) if not args.quick else 1, [], cold_env)
    for spec in examples:
        rows.append({"group": "example", **measure(spec, model_name(spec), repeat, [], env, compare)})
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
    summary: dict[str, object] = {
        "examples": len(ex), "example_median_s": statistics.median(_num(r["median_s"]) for r in ex),
        "example_median_cpu_s": statistics.median(_num(r["cpu_s"]) for r in ex),
        "example_max_median_s": max(_num(r["median_s"]) for r in ex),
        "example_max_peak_rss_mb": max(_num(r["peak_rss_mb"]) for r in ex),
        "gpt3_175b_median_s": next(_num(r["median_s"]) for r in rows if r["spec"] == "gpt3_175b")}
    print(f"examples: median of the {len(ex)} medians {summary['example_median_s']:.3f} s (target <= 0.4), slowest "
          f"{summary['example_max_median_s']:.3f} s, peak RSS <= {summary['example_max_peak_rss_mb']:.1f} MB "
          f"(target <= 120); gpt3_175b {summary['gpt3_175b_median_s']:.3f} s (target <= 2)")
    if compare:
        print(f"this tree ({ROOT}): examples' median {summary['example_median_s']:.4f} s wall, "
              f"{summary['example_median_cpu_s']:.4f} s CPU")
        summary["compare"] = {str(t): _compared(ex, str(t)) for t in compare}
    linear: dict[str, dict[str, float]] = {}
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
              "bytecode_cache": pycache is not None, "tree": _describe(ROOT),
              "compare": {str(t): _describe(t) for t in compare},
              "cold_bytecode": {"spec": examples[0].name, "median_s": cold["median_s"], "min_s": cold["min_s"]},
              "summary": summary, "depth_fit": linear, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
