"""Re-estimate the committed latency benchmark offline: the current estimator against stored measurements.

Takes benchmarks/results/latency.json (the onnxruntime latencies measured by benchmarks/latency.py, and the
device profile calibrated in that run), recompiles every benchmark model with the estimator as it is now and
prints, per family and over all rows, the error of the stored estimate and of the new one (MAPE, the share
within +-20%, Spearman). Nothing is timed, so it runs on a busy machine; the measurements are the stored ones.
With --profile FILE the new estimate uses that profile instead (a fresh `metagenc calibrate`, for a field the
stored run did not measure); mixing a fresh calibration with old measurements is a diagnostic, not a result.
Usage: python benchmarks/latency_offline.py [--results FILE] [--profile FILE] [-v]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def family_of(name: str) -> str:
    """`dec3` -> `dec`, `t5_1` -> `t5`: the model's name without its index."""
    return name.rstrip("0123456789").rstrip("_")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "latency.json"))
    ap.add_argument("--profile", help="a device profile to estimate with (default: the one stored in --results)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every row, not only the changed ones")
    args = ap.parse_args()
    from latency import scores, specs

    from metagen_compiler.compilation import Options
    from metagen_compiler.driver import compile_model_set
    from metagen_compiler.passes.estimate import estimate
    from metagen_compiler.span import SourceFile

    data = json.loads(Path(args.results).read_text())
    measured = {(r["model"], r["batch"]): r for r in data["rows"]}
    profile_source = Path(args.profile).read_text() if args.profile else data["profile"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        profile = Path(d) / "calibrated.msl"
        profile.write_text(profile_source)
        options = Options(device_profiles=(profile,))
        for name, _, src, batch in specs(data.get("quick", False)):
            r = measured.get((name, batch))
            if r is None:
                continue
            (comp,) = compile_model_set(SourceFile(f"{name}.msl", src), options)
            assert comp.graph is not None and comp.program is not None
            est = estimate(comp.graph, comp.program, {**comp.graph.symbols, "B": batch})
            rows.append((name, batch, r["measured_s"], r["estimate_s"], est["latency_s"]["calibrated"]["fp32"]))
    print(f"{'model':9} {'B':>2} {'measured ms':>11} {'stored ms':>10} {'err':>6} {'new ms':>10} {'err':>6}")
    for name, batch, m, old, new in rows:
        if args.verbose or abs(new / old - 1) > 1e-3:
            print(f"{name:9} {batch:2d} {m * 1e3:11.3f} {old * 1e3:10.3f} {(old / m - 1) * 100:+5.0f}% "
                  f"{new * 1e3:10.3f} {(new / m - 1) * 100:+5.0f}%")
    families: dict[str, list[tuple[float, float]]] = {}
    for name, _, m, old, new in rows:
        families.setdefault(family_of(name), []).append((abs(old / m - 1), abs(new / m - 1)))
    print(f"\n{'family':9} {'rows':>4} {'MAPE stored':>11} {'MAPE new':>9}")
    for fam, errs in families.items():
        print(f"{fam:9} {len(errs):4d} {statistics.fmean(e[0] for e in errs) * 100:10.1f}% "
              f"{statistics.fmean(e[1] for e in errs) * 100:8.1f}%")
    meas = [r[2] for r in rows]
    for label, k in (("stored estimate", 3), ("new estimate", 4)):
        s = scores([r[k] for r in rows], meas)
        print(f"{label:16} MAPE {s['mape'] * 100:5.1f}%  within +-20% {s['within_20'] * 100:5.1f}%  "
              f"Spearman {s['spearman']:.3f}   ({len(rows)} rows, measured latencies from {args.results})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
