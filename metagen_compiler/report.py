"""report.json: the compiled model's numbers, each exact or labelled as an estimate."""

from __future__ import annotations

import hashlib
from typing import Any

from .compilation import Compilation
from .escape import json_value
from .version import __version__

__all__ = ["build_report", "jsonable"]


def jsonable(v: Any) -> Any:
    """`v` as plain JSON data (escape.json_value); a compiler value (a quantity, a layer) as its MSL text."""
    from metagen_compiler.semantics.values import format_value

    return json_value(v, format_value)


def build_report(comp: Compilation, backends: list[str]) -> dict[str, Any]:
    assert comp.graph is not None and comp.spec is not None
    est = comp.graph.g.graph["estimates"]
    spec = comp.spec
    measured = {"measurements": comp.measurements} if comp.measurements else {}
    return {
        **measured,
        "name": spec.name,
        "params": est["params"],
        "flops_forward": est["flops_forward"],
        "macs_forward": est["macs_forward"],
        "flops_other": est["flops_other"],
        "flops_training": est["flops_training"],
        "flops_convention": "2 FLOPs per multiply-add in matmul, convolution and attention, as torch.utils.flop_counter "
                            "counts them, at the nominal input; flops_other estimates norms, activations, softmax and "
                            "adds; flops_training = 3 x flops_forward",
        "nominal_input": {"symbols": est["symbols"],
                          "inputs": [{"name": i.name, "dtype": i.dtype, "shape": list(i.shape)} for i in comp.graph.inputs]},
        "memory": {**est["memory"], "basis": "estimate: weights exact per dtype; activations from the graph's tensor sizes"},
        "latency": {"seconds": est["latency_s"], "batch": 1,
                    "basis": "estimate: roofline per node from stdlib/devices.msl profiles plus per-kernel overhead; "
                             "not measured"},
        "constraints": comp.graph.g.graph["constraints"],
        "dims": {k: jsonable(v) for k, v in spec.dims.items()},
        "solve": {"unknowns": spec.solve.unknowns, "binding": spec.solve.binding, "fill": spec.solve.fill,
                  **({"first_choices": spec.solve.first_choices} if spec.solve.first_choices else {})}
        if spec.solve else None,
        "task": {"name": spec.task, "loss": spec.loss, "metrics": spec.metrics, "fields": jsonable(spec.task_fields)},
        "family": spec.family.qualname,
        "preset": spec.preset,
        "modality": {"inputs": [n for n, _ in spec.inputs], "outputs": [n for n, _ in spec.outputs]},
        "metadata": spec.metadata,
        # the spec's `training { ... }` settings (all of them: also those set as Config defaults); absent without one
        **({"training": jsonable(spec.training)} if spec.training else {}),
        "warnings": [{"code": d.code, "message": d.message} for d in comp.bag.sorted() if d.severity.value == "warning"],
        "compiler": {"name": "metagenc", "version": __version__,
                     "input_sha256": hashlib.sha256(comp.source.text.encode("utf-8")).hexdigest(),
                     "backends": backends, "seed": comp.options.seed},
    }
