"""What the stdlib covers, measured: every family and every task, from compiling and running every example,
every preset no example uses (slotted into an example of its family, as tests/test_presets.py does) and every
seed YAML spec.

For each spec: compile with `metagenc`; instantiate on the meta device and compare the parameter count with
report.json; at the family's reduced size (tests/test_numeric.py SMALL) run forward, loss and backward and
record the outputs' shapes, the loss and the metrics (tests/test_numeric.py `check_small`, the suite's own
check); compare a preset's count with the reference implementation's (REFERENCE_PARAMS) where one is listed.
Prints two markdown tables (family x ..., task x ...) and writes benchmarks/results/coverage.json.
Usage: python benchmarks/coverage.py [--quick] [--out FILE]   (--quick: three examples; CI smoke)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import torch
from conftest import EXAMPLES, load_module
from test_numeric import REFERENCE_PARAMS, check_small
from test_presets import TEMPLATES, stdlib_presets, stdlib_program, with_preset
from test_yaml_frontend import BUILT

from metagen_compiler.cli import main as metagenc
from metagen_compiler.semantics.catalog import TASKS
from metagen_compiler.semantics.tasks import TASK_SPECS


def measure(kind: str, name: str, spec: Path, work: Path) -> dict[str, Any]:
    out = work / name
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        rc = metagenc([str(spec), "-o", str(out), "--backend", "pytorch"])
    row: dict[str, Any] = {"kind": kind, "name": name, "spec": str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT)
                           else spec.name, "compiles": rc == 0}
    if rc != 0:
        row["error"] = err.getvalue()[-2000:]
        return row
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((d / "report.json").read_text())
    graph = json.loads((d / "graph.json").read_text())
    mod = load_module(d / "model.py", f"cov_{kind}_{name}")
    with torch.device("meta"):
        meta = sum(p.numel() for p in mod.build_model().parameters())
    row.update(family=report["family"], preset=report.get("preset"), task=report["task"]["name"],
               loss=report["task"]["loss"], metrics=report["task"]["metrics"], params=report["params"],
               params_meta=meta, params_exact=meta == report["params"],
               head=[o["name"] for o in graph["outputs"]],
               head_ops=sorted({n["op"] for n in graph["nodes"] if n.get("scope") == "head"}))
    reference = REFERENCE_PARAMS.get(name)
    if reference is not None:
        row.update(reference=reference, reference_exact=reference == report["params"])
    try:
        row["small"] = check_small(mod, report)
        row["train_ok"] = True
    except Exception:  # noqa: BLE001 - recorded in the table, not raised: the table shows what fails
        row.update(train_ok=False, train_error=traceback.format_exc(limit=3)[-2000:])
    return row


def specs(quick: bool, work: Path) -> list[tuple[str, str, Path]]:
    examples = EXAMPLES[:3] if quick else EXAMPLES
    out = [("example", p.stem, p) for p in examples]
    if quick:
        return out
    presets = stdlib_presets()
    for preset, example in sorted(TEMPLATES.items()):
        path = work / "specs" / f"{preset}.msl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(with_preset(example, preset, presets[preset]), encoding="utf-8")
        out.append(("preset", preset, path))
    out += [("seed", name, ROOT / "tests" / "seeds_yaml" / f"{name}.yaml") for name in BUILT]
    return out


def _yes(values: list[bool]) -> str:
    return "-" if not values else ("yes" if all(values) else f"NO ({values.count(False)} of {len(values)})")


def family_table(rows: list[dict[str, Any]], families: list[str]) -> list[dict[str, Any]]:
    presets = stdlib_presets()
    table = []
    for fam in families + sorted({r["family"] for r in rows if r.get("family") and r["family"] not in families}):
        mine = [r for r in rows if r.get("family") == fam]
        table.append({
            "family": fam,
            "examples": [r["name"] for r in mine if r["kind"] == "example"],
            "seeds": [r["name"] for r in mine if r["kind"] == "seed"],
            "presets": sorted({r["preset"].split(".")[-1] for r in mine if r.get("preset")}
                              & set(presets)),
            "train_ok": [r["train_ok"] for r in mine],
            "params_exact": [r["params_exact"] for r in mine],
            "reference": [f"{r['name']} {r['params']:,} {'=' if r['reference_exact'] else '!='} {r['reference']:,}"
                          for r in mine if "reference" in r],
        })
    return table


def task_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for task in TASKS:
        mine = [r for r in rows if r.get("task") == task]
        spec = TASK_SPECS.get(task)
        shapes = sorted({f"{r['name']}: " + ", ".join(f"{h} {tuple(s)}" for h, s in zip(r["head"], r["small"]["outputs"],
                                                                                       strict=False))
                         for r in mine if r.get("train_ok")})
        table.append({
            "task": task, "specs": len(mine), "losses": sorted({r["loss"] for r in mine}),
            "metrics": sorted({m for r in mine for m in r["metrics"]}),
            "heads": sorted({", ".join(r["head"]) for r in mine}),
            "head_ops": sorted({op for r in mine for op in r["head_ops"]}),
            "shape_example": shapes[0] if shapes else None,
            "describes": spec.describes if spec else None,
            "train_ok": [r["train_ok"] for r in mine],
        })
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "coverage.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [measure(kind, name, path, work) for kind, name, path in specs(args.quick, work)]
    families = [d.qualname for d in stdlib_program().defs_of("family")]
    fams, tasks = family_table(rows, families), task_table(rows)

    print("| family | examples | presets | seeds | forward/loss/backward | params = report | preset = reference |")
    print("|---|---|---|---|---|---|---|")
    for f in fams:
        print(f"| {f['family']} | {', '.join(f['examples']) or '-'} | {', '.join(f['presets']) or '-'} | "
              f"{', '.join(f['seeds']) or '-'} | {_yes(f['train_ok'])} | {_yes(f['params_exact'])} | "
              f"{'; '.join(f['reference']) or '-'} |")
    print()
    print("| task | specs | head outputs | loss | metrics | forward/loss/backward |")
    print("|---|---|---|---|---|---|")
    for t in tasks:
        print(f"| {t['task']} | {t['specs']} | {'; '.join(t['heads']) or '-'} | {', '.join(t['losses']) or '-'} | "
              f"{', '.join(t['metrics']) or '-'} | {_yes(t['train_ok'])} |")
    failed = [r["name"] for r in rows if not r["compiles"] or not r.get("train_ok") or not r.get("params_exact")]
    print(f"\n{len(rows)} specs; failing: {', '.join(failed) or 'none'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "coverage", "quick": args.quick, "torch": torch.__version__,
                                    "families": fams, "tasks": tasks, "rows": rows}, indent=1, sort_keys=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
