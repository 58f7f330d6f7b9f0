"""MODEL_CARD.md: a Hugging Face model card (YAML front matter + Markdown) with every field the
compiler knows, from report.json. No result is invented: `model-index` lists the model with an
empty `results` list until measurements exist, and estimates are labelled as estimates.
"""

from __future__ import annotations

import json
from typing import Any

from metagen_compiler.escape import md_code as code
from metagen_compiler.escape import md_text as md
from metagen_compiler.escape import yaml_str as _y

from .context import Paper

__all__ = ["PIPELINE_TAGS", "model_card"]

# (inputs, outputs, task) -> Hugging Face pipeline tag; `None` matches anything.
PIPELINE_TAGS: tuple[tuple[str | None, str | None, str, str], ...] = (
    ("text", "text", "generation", "text-generation"),
    ("text", None, "classification", "text-classification"),
    ("image", None, "classification", "image-classification"),
    ("image", None, "object_detection", "object-detection"),
    ("image", "text", "generation", "image-to-text"),
    ("text", "image", "generation", "text-to-image"),
    ("audio", None, "speech_recognition", "automatic-speech-recognition"),
    ("audio", None, "classification", "audio-classification"),
    (None, None, "embedding", "feature-extraction"),
    ("time_series", None, "time_series_forecast", "time-series-forecasting"),
    ("image", None, "instance_segmentation", "image-segmentation"),
    ("image", None, "panoptic_segmentation", "image-segmentation"),
    ("image", "text", "multimodal_generation", "image-text-to-text"),
    ("image", None, "multimodal_question_answering", "visual-question-answering"),
)


def _setting(v: Any) -> str:
    """A training setting as the spec would write it: a number, a name, or a list of names."""
    return ", ".join(map(str, v)) if isinstance(v, list) else str(v)


def _pipeline(r: dict[str, Any]) -> str | None:
    ins, outs, task = r["modality"]["inputs"], r["modality"]["outputs"], r["task"]["name"]
    for i, o, t, tag in PIPELINE_TAGS:
        if t == task and (i is None or i in ins) and (o is None or o in outs):
            return tag
    return None


def _human(v: float, unit: str = "") -> str:
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.4g} {prefix}{unit}"
    return f"{v:.4g} {unit}".rstrip()


def _bytes(v: float) -> str:
    for scale, unit in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if v >= scale:
            return f"{v / scale:.4g} {unit}"
    return f"{v:.0f} B"


def _constraint(c: dict[str, Any]) -> str:
    return f"{c['kind']} {c['op']} {c['value']}" + (f" on {c['device']}" if c.get("device") else "")


def _actual(c: dict[str, Any]) -> str:
    """A constraint's compiled value, in the unit its kind is stated in."""
    v = c.get("actual")
    if v is None:
        return "-"
    if c["kind"] in ("memory", "training_memory"):
        return _bytes(v)
    if c["kind"] == "latency":
        return f"{v * 1e3:.4g} ms"
    if c["kind"] == "throughput":
        return f"{v:.4g} /s"
    return f"{v:,}" if isinstance(v, int) else f"{v:.6g}"


def _value(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{code(k, True)}: {_value(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return code(json.dumps(v) if not isinstance(v, str) else v, True)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _results(r: dict[str, Any], tag: str | None, measured: list[dict[str, Any]]) -> list[str]:
    """model-index results (Hugging Face layout), one per measurement, as report.json gives them."""
    out = ["  results:"]
    for m in measured:
        out += ["  - task:", f"      type: {_y(tag or r['task']['name'])}"]
        if m.get("dataset"):
            out += ["    dataset:", f"      name: {_y(m['dataset'])}", f"      type: {_y(m['dataset'])}"]
            if m.get("split"):
                out.append(f"      split: {_y(m['split'])}")
        out += ["    metrics:", f"    - type: {_y(m.get('metric', 'unknown'))}", f"      value: {json.dumps(m['value'])}",
                f"      name: {_y(m.get('metric', 'unknown'))}"]
        if m.get("source"):
            out.append(f"    source:\n      name: {_y(m['source'])}")
    return out


def _measurement_table(measured: list[dict[str, Any]]) -> list[str]:
    rows = ["| Metric | Value | Data | Source |", "|---|---|---|---|"]
    for m in measured:
        data = " / ".join(str(m[k]) for k in ("dataset", "split") if m.get(k)) or "-"
        unit = f" {md(m['unit'])}" if m.get("unit") else ""
        rows.append(f"| {code(m.get('metric', '?'), True)} | {m['value']}{unit} | {code(data, True)} | "
                    f"{code(m.get('source', 'unknown'), True)} |")
    return rows


def model_card(p: Paper) -> str:
    r = p.report
    meta = r.get("metadata") or {}
    comp = r["compiler"]
    data = p.data_names()
    tags = ["metagen", "metagenc", "generated-architecture", r["family"].rsplit(".", 1)[-1], r["task"]["name"]]
    tags += [m for m in r["modality"]["inputs"] + r["modality"]["outputs"] if m not in tags]
    front = ["---", "library_name: pytorch"]
    lic = meta.get("license")
    if isinstance(lic, str) and lic.strip():
        front.append(f"license: {_y(lic.strip())}")
    tag = _pipeline(r)
    if tag:
        front.append(f"pipeline_tag: {tag}")
    front.append("tags:")
    front += [f"- {_y(t)}" for t in dict.fromkeys(tags)]
    if data:
        front.append("datasets:")
        front += [f"- {_y(d)}" for d in data]
    measured = [m for m in r.get("measurements") or [] if _is_num(m.get("value"))]
    front += ["model-index:", f"- name: {_y(r['name'])}"]
    front += _results(r, tag, measured) if measured else ["  results: []"]
    front += ["---", ""]
    cal = {d: c for d, c in (r["latency"].get("calibration") or {}).items()
           if isinstance(c, dict) and _is_num(c.get("relative_error"))}

    lat = r["latency"]["seconds"]
    mem = r["memory"]
    body = [
        f"# {md(meta.get('display_name') or r['name'])}",
        "",
        *([f"Identifier: {code(r['name'])}", ""] if meta.get("display_name") else []),
        f"Model card generated by {md(comp['name'])} {md(comp['version'])} from the MetaGen specification with SHA-256 "
        f"{code(comp['input_sha256'])}. Every value comes from the compiler's `report.json`; exact values are counts "
        "over the compiled graph, estimates are marked. "
        + ("Measured results are listed with their source." if measured
           else "The model has not been trained: this card reports no result."),
        "",
        "## Model details",
        "",
        "| Field | Value |",
        "|---|---|",
        f"| Family | {code(r['family'], True)}" + (f" (preset {code(r['preset'], True)})" if r.get("preset") else "")
        + " |",
        f"| Modalities | {', '.join(code(m, True) for m in r['modality']['inputs'])} -> "
        f"{', '.join(code(m, True) for m in r['modality']['outputs'])} |",
        f"| Task | {code(r['task']['name'], True)}" + (f" {_value(r['task']['fields'])}" if r["task"]["fields"] else "")
        + " |",
        f"| Objectives | {', '.join(code(o, True) for o in p.objectives()) or 'none'} |",
        f"| Loss | {code(r['task']['loss'], True)} |",
        f"| Metrics | {', '.join(code(m, True) for m in r['task']['metrics']) or 'none'} |",
        f"| Parameters | {r['params']:,} (exact) |",
        f"| Forward FLOPs | {r['flops_forward']:,} at the nominal input (exact count; {_human(r['flops_forward'])}) |",
        f"| Other forward FLOPs | {_human(r['flops_other'])} (estimate) |",
        f"| Training FLOPs per example | {_human(r['flops_training'])} (3 x forward, convention) |",
        f"| Nominal input | {', '.join(f'{code(k, True)} = {v}' for k, v in r['nominal_input']['symbols'].items())} |",
        f"| Seed | {comp['seed']} |",
        "",
        "## Dimensions",
        "",
        "| Parameter | Value |",
        "|---|---|",
        *[f"| {code(k, True)} | {_value(v)} |" for k, v in r["dims"].items()],
        "",
        "## Uses",
        "",
        f"An untrained {md(p.family_words())} for {md(r['task']['name'])} from "
        f"{', '.join(code(m) for m in r['modality']['inputs'])} to "
        f"{', '.join(code(m) for m in r['modality']['outputs'])}, "
        "generated as readable PyTorch code (`model.py`) to be trained. It has no intended use before training "
        "and evaluation.",
        "",
        "## Training",
        "",
        f"- Objectives: {', '.join(code(o) for o in p.objectives()) or 'none named'}; loss {code(r['task']['loss'])}.",
        f"- Data: {', '.join(code(d) for d in data) if data else 'none named in the specification'}.",
        ("- Training settings of the specification (the defaults of `train.py`): "
         + ", ".join(f"{code(k)} {code(_setting(v))}" for k, v in sorted(r["training"].items())) + "."
         if r.get("training") else
         "- Optimiser, schedule, batch size: not fixed by the specification; memory estimates assume AdamW."),
        "",
        "## Evaluation",
        "",
        *(_measurement_table(measured) if measured else [
            "Not evaluated. A training run would measure "
            f"{', '.join(code(m) for m in r['task']['metrics']) or 'the task metrics'}"
            " on held-out data, the latency per device class and the peak memory."]),
        "",
        "## Compute and memory",
        "",
        "| Quantity | Value | Basis |",
        "|---|---|---|",
        *[f"| Weights ({md(d)}) | {_bytes(v)} | exact |" for d, v in mem["weights_bytes"].items()],
        f"| Activations, inference | {_bytes(mem['activations_inference_bytes'])} | estimate |",
        *([f"| Activations, training | {_bytes(mem['activations_training_bytes'])} | estimate |"]
          if "activations_training_bytes" in mem else []),
        f"| Training total (AdamW, batch {r['latency']['batch']}) | {_bytes(mem['training_total_bytes'])} | estimate |",
        *[f"| Latency, {code(dev, True)}, {md(d)}, batch {r['latency']['batch']} | {v * 1e3:.4g} ms "
          "| estimate (roofline, not measured) |"
          for dev, per in lat.items() for d, v in per.items()],
        "",
        "## Constraints",
        "",
        "| Constraint | Compiled model | Basis | Status |",
        "|---|---|---|---|",
        *[f"| {code(_constraint(c), True)} | {_actual(c)} | {md(c['basis'])} | {md(c['status'])} |"
          for c in r["constraints"]],
        "",
        "## Limitations",
        "",
        *([f"- {code(w['code'])}: {md(w['message'])}" for w in r["warnings"]] or ["- The compiler raised no warning."]),
        "- Latency and activation memory are estimates; "
        + ("the latency estimator's measured relative error: "
           + ", ".join(f"{c['relative_error'] * 100:.2f}% on {code(d)}"
                       + (f" ({md(c['source'])})" if c.get("source") else "") for d, c in cal.items())
           + "; other device classes are uncalibrated." if cal else "the latency estimator is not calibrated."),
        *([] if measured else ["- Untrained: nothing here measures the quality of the architecture."]),
        "",
        "## Metadata",
        "",
        *([f"- {code(k)}: {_value(v)}" for k, v in meta.items()] or ["None."]),
        "",
        "## Paper",
        "",
        "`paper/` holds a LaTeX paper on this model (`make -C paper`), with the architecture block by block, the "
        "complexity analysis and the references; `paper/provenance.json` lists the source of each number in it.",
        "",
    ]
    return "\n".join(front + body)
