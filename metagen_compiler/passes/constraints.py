"""constraints: check each declared constraint against the compiled model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from metagen_compiler.semantics.catalog import LATENCY_CLASSES
from metagen_compiler.semantics.values import Sym

from ..compilation import Compilation

_EXACT = {"params", "flops", "context"}


def _holds(op: str, actual: float, bound: float) -> bool:
    return {"<=": actual <= bound, "<": actual < bound, ">=": actual >= bound, ">": actual > bound,
            "=": actual == bound}[op]


def _real(v: float) -> float:
    """A float for comparing, however large the integer: past the float range, infinity (never an
    OverflowError, whatever a budget or a count comes to)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _fmt(kind: str, v: float) -> str:
    if not math.isfinite(_real(v)):
        return "more than 1.8e308"
    if kind in ("memory", "training_memory"):
        return f"{v / 1e9:.3g} GB"
    if kind == "latency":
        return f"{v * 1e3:,.1f} ms" if v >= 0.01 else f"{v * 1e3:.3g} ms"
    if kind == "throughput":
        return f"{v:.3g}/s"
    return f"{int(v):,}"


@dataclass(frozen=True)
class ConstraintsPass:
    name: ClassVar[str] = "constraints"
    doc: ClassVar[str] = "Check every constraint: exact ones are errors when broken, estimated ones warnings."

    def run(self, comp: Compilation) -> None:
        spec, ir, bag = comp.spec, comp.graph, comp.bag
        assert spec is not None and ir is not None
        est = ir.g.graph["estimates"]
        results: list[dict[str, Any]] = []
        for c in spec.constraints:
            actual: float | None = None
            bound: float | None = None
            basis = "exact"
            if c.kind == "params":
                actual = est["params"]
            elif c.kind == "flops":
                actual = est["flops_forward"]
            elif c.kind == "memory":
                actual, basis = est["memory"]["inference_total_bytes"], "estimate"
            elif c.kind == "training_memory":
                actual, basis = est["memory"]["training_total_bytes"], "estimate"
            elif c.kind in ("latency", "throughput") and c.device:
                lat = est["latency_s"].get(c.device, {}).get("fp32")
                basis = "estimate"
                if lat is not None:
                    actual = lat if c.kind == "latency" else (1.0 / lat if lat > 0 else math.inf)
            elif c.kind == "context":
                actual = spec.dims.get("context")  # type: ignore[assignment]
            if isinstance(c.value, Sym):
                bound = LATENCY_CLASSES.get(c.value.name)
            elif isinstance(c.value, (int, float)):
                bound = _real(c.value)
            op = "<=" if (c.kind == "latency" and isinstance(c.value, Sym)) or (c.kind == "latency" and c.op == "=") else c.op
            entry: dict[str, Any] = {"kind": c.kind, "op": c.op, "value": c.text, "device": c.device, "basis": basis,
                                     "span": f"{c.span.path}:{c.span.line}:{c.span.col}"}
            if actual is None or bound is None or c.kind in ("device", "batch_size") or actual is None:
                entry["status"] = "not-checked" if c.kind not in ("device", "image_size", "patch_size", "channels",
                                                                   "sample_rate", "frames", "batch_size") else "applied"
                results.append(entry)
                continue
            ok = _holds(op, _real(actual), _real(bound))
            entry.update(actual=actual, status="ok" if ok else "violated")
            if c.kind == "params" and spec.solve and spec.solve.binding.startswith("params"):
                entry["binds"] = True
            if not ok:
                msg = f"`{c.kind} {c.op} {c.text}` is broken: the model has {_fmt(c.kind, actual)}"
                if basis == "estimate":
                    bag.warning("W002", msg.replace("has", "is estimated at") + (f" on {c.device}" if c.device else ""),
                                c.span, hint="estimates come from the device profile; see docs/estimates.md")
                else:
                    bag.error("E403", msg, c.span)
            results.append(entry)
        ir.g.graph["constraints"] = results

    def dump(self, comp: Compilation) -> str:
        if not comp.graph:
            return ""
        lines = ["constraints:"]
        for r in comp.graph.g.graph["constraints"]:
            actual = f" actual={r['actual']}" if "actual" in r else ""
            lines.append(f"  {r['kind']} {r['op']} {r['value']}: {r['status']} ({r['basis']}){actual}"
                         + (" [binds]" if r.get("binds") else ""))
        return "\n".join(lines) + "\n"
