"""The analysis sections: complexity and budget, training setup, evaluation, limitations, appendix."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from metagen_compiler.semantics.catalog import CONSTRAINTS

from .context import Paper
from .equations import OBJECTIVE_NAMES, objective_equations
from .escape import rm, tt
from .figures import roofline_devices
from .sections_core import _value, _words

__all__ = ["appendix", "complexity", "evaluation", "limitations", "training"]

_MEMORY_ROWS = (
    ("Gradients (fp32)", "gradients_bytes", "exact"),
    ("AdamW moments (fp32)", "adamw_state_bytes", "exact"),
    ("Activations, inference (peak)", "activations_inference_bytes", "estimate"),
    ("Activations, training (saved for backward)", "activations_training_bytes", "estimate"),
    ("Inference total (fp32 weights + activations)", "inference_total_bytes", "estimate"),
    ("Training total (weights, gradients, AdamW, activations)", "training_total_bytes", "estimate"),
)
_FALLBACK_CODES = ("W001", "W003")


def _dtype_words(label: str) -> str:
    """Row labels name dtypes (fp32): those go through tt so that no bare digit sits in a table."""
    for d in ("fp32", "bf16", "fp16", "int8"):
        label = label.replace(d, "\x00" + d + "\x00")
    return "".join(tt(x) if x in ("fp32", "bf16", "fp16", "int8") else rm(x) for x in label.split("\x00"))


def _actual(p: Paper, i: int, c: dict[str, Any]) -> str:
    if "actual" not in c or c["actual"] is None:
        # a constraint that sets a family parameter (image_size = 224): the value the model was compiled with
        kind = CONSTRAINTS.get(c["kind"])
        dim = kind.binds if kind is not None else None
        v = p.report["dims"].get(dim) if dim else None
        if isinstance(v, int) and not isinstance(v, bool):
            return p.ledger.count(f"dims.{dim}")
        return "--"
    key = f"constraints.{i}.actual"
    kind = c["kind"]
    if kind in ("memory", "training_memory"):
        return p.ledger.nbytes(key, basis=c["basis"])
    if kind == "latency":
        return p.ledger.seconds(key, basis=c["basis"])
    if kind == "throughput":
        return p.ledger.si(key, unit="/s", basis=c["basis"])
    if isinstance(c["actual"], int):
        return p.ledger.count(key, basis=c["basis"])
    return p.ledger.plain(key, basis=c["basis"])


def _constraint_text(c: dict[str, Any]) -> str:
    return tt(f"{c['kind']} {c['op']} {c['value']}" + (f" on {c['device']}" if c.get("device") else ""))


def _constraints_table(p: Paper) -> str:
    rows = p.constraint_rows()
    if not rows:
        return "The specification states no constraint.\n"
    lines = [
        "\\begin{table}[htbp]",
        "\\centering\\small",
        "\\caption{Every constraint of the specification, checked against the compiled model. Exact constraints "
        "are errors when broken; constraints on estimates are warnings.}",
        "\\label{tab:constraints}",
        "\\begin{tabularx}{\\linewidth}{@{}X r l l@{}}",
        "\\toprule",
        "Constraint & Compiled model & Basis & Status \\\\",
        "\\midrule",
    ]
    for i, c in rows:
        lines.append(f"{_constraint_text(c)} & {_actual(p, i, c)} & {rm(c['basis'])} & {rm(c['status'])} \\\\")
    lines += ["\\bottomrule", "\\end{tabularx}", "\\end{table}", ""]
    return "\n".join(lines)


def _memory_table(p: Paper) -> str:
    mem = p.report["memory"]
    lines = [
        "\\begin{table}[htbp]",
        "\\centering\\small",
        "\\caption{Memory of " + p.name + " at the nominal input, batch " + p.ledger.count("latency.batch")
        + ". Weights, gradients and optimizer state "
        "are exact; activations are estimates from the graph's tensor sizes (docs/estimates.md).}",
        "\\label{tab:memory}",
        "\\begin{tabular}{@{}l r l@{}}",
        "\\toprule",
        "Quantity & Bytes & Basis \\\\",
        "\\midrule",
    ]
    for dtype in mem["weights_bytes"]:
        lines.append(f"Weights, {tt(dtype)} & {p.ledger.nbytes(f'memory.weights_bytes.{dtype}')} & exact \\\\")
    for label, key, basis in _MEMORY_ROWS:
        if key in mem:
            lines.append(f"{_dtype_words(label)} & {p.ledger.nbytes(f'memory.{key}', basis=basis)} & {basis} \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _latency_table(p: Paper) -> str:
    lat = p.report["latency"]["seconds"]
    dtypes: list[str] = []
    for per in lat.values():
        dtypes += [d for d in per if d not in dtypes]
    lines = [
        "\\begin{table}[htbp]",
        "\\centering\\small",
        "\\caption{Estimated forward latency at batch " + p.ledger.count("latency.batch")
        + " per device class (roofline estimate per graph node plus "
        "a per-kernel overhead; not measured).}",
        "\\label{tab:latency}",
        "\\begin{tabularx}{\\linewidth}{@{}l X " + "r " * len(dtypes) + "@{}}",
        "\\toprule",
        "Device class & Device & " + " & ".join(tt(d) for d in dtypes) + " \\\\",
        "\\midrule",
    ]
    for dev, per in lat.items():
        name = p.devices.get(dev, {}).get("name", "")
        cells = [p.ledger.seconds(f"latency.seconds.{dev}.{d}") if d in per else "--" for d in dtypes]
        lines.append(f"{tt(dev)} & {tt(name) if name else '--'} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabularx}", "\\end{table}", ""]
    return "\n".join(lines)


def _device_table(p: Paper) -> str:
    lines = [
        "\\begin{table}[htbp]",
        "\\centering\\small",
        "\\caption{Device profiles behind the estimates: published peak throughput and bandwidth; "
        "\\emph{efficiency} (the share of peak a kernel reaches) and the per-kernel overhead are assumptions "
        "until calibrated.}",
        "\\label{tab:devices}",
        "\\begin{tabular}{@{}l r r r r r@{}}",
        "\\toprule",
        f"Device class & Peak {tt('fp32')} & Peak {tt('bf16')} & Bandwidth & Efficiency & Overhead \\\\",
        "\\midrule",
    ]
    for dev in p.report["latency"]["seconds"]:
        prof = p.devices.get(dev, {})
        cells = []
        for field, kind in (("fp32", "flops"), ("bf16", "flops"), ("bandwidth", "bw"), ("efficiency", "plain"),
                            ("overhead", "s")):
            v = prof.get(field)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                cells.append("--")
                continue
            key = f"{dev}.{field}"
            basis = "assumption" if field in ("efficiency", "overhead") else "exact"
            if kind == "flops":
                cells.append(p.ledger.si(key, v, unit="FLOP/s", source="device", basis=basis))
            elif kind == "bw":
                cells.append(p.ledger.si(key, v, unit="B/s", source="device", basis=basis))
            elif kind == "plain":
                cells.append(p.ledger.plain(key, v, source="device", basis=basis))
            else:
                cells.append(p.ledger.seconds(key, v, source="device", basis=basis))
        lines.append(f"{tt(dev)} & " + " & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}", ""]
    return "\n".join(lines)


def _calibrated(p: Paper) -> list[tuple[str, dict[str, Any]]]:
    cal = p.report["latency"].get("calibration") or {}
    return [(d, c) for d, c in cal.items() if isinstance(c, dict) and isinstance(c.get("relative_error"), float)]


def _calibration(p: Paper) -> str:
    known = _calibrated(p)
    if not known:
        return ("The estimator has not been calibrated against measurements on these device classes, so its error "
                "is unknown; read the latencies as the order of magnitude the device profiles imply.")
    items = [f"{p.ledger.percent(f'latency.calibration.{d}.relative_error', basis='measurement')} on {tt(d)}"
             + (f" ({tt(c['source'])})" if c.get("source") else "") for d, c in known]
    return ("The estimator's error has been measured against timed runs: mean relative error "
            + _words(items) + ". Device classes not listed are uncalibrated.")


def complexity(p: Paper) -> str:
    devs = roofline_devices(p)
    out = [
        "\\section{Complexity and budget}\\label{sec:complexity}",
        "",
        "\\subsection{Parameters against the budget}",
        "",
        f"{p.name} has {p.ledger.count('params')} parameters, an exact count of its weight tensors (tied tensors "
        "once). "
        + ("Table~\\ref{tab:constraints} checks every constraint of the specification against the compiled model, "
           "and " if p.report["constraints"] else "The specification sets no budget. ")
        + "Figure~\\ref{fig:params} shows where the parameters sit.",
        "",
        _constraints_table(p),
        "\\begin{figure}[htbp]",
        "\\centering",
        "\\input{figures/params_per_block}",
        "\\caption{Parameters per block (exact counts from the graph), the rows of Table~\\ref{tab:blocks}.}",
        "\\label{fig:params}",
        "\\end{figure}",
        "",
        "\\subsection{FLOPs}",
        "",
        f"At the nominal input a forward pass costs {p.ledger.si('flops_forward', unit='FLOP')} "
        f"({p.ledger.si('macs_forward', unit='MAC')}) in {p.mm_words()}, an exact "
        f"count; normalisations, activations, softmax and additions add an estimated "
        f"{p.ledger.si('flops_other', unit='FLOP', basis='estimate')}. By the usual convention that a backward pass "
        f"costs twice the forward pass, one training step on one example costs "
        f"{p.ledger.si('flops_training', unit='FLOP', basis='convention')}. Figure~\\ref{{fig:flops}} breaks the "
        "forward FLOPs down by block.",
        "",
        "\\begin{figure}[htbp]",
        "\\centering",
        "\\input{figures/flops_per_block}",
        f"\\caption{{Forward FLOPs per block at the nominal input: {p.mm_words()} "
        "(exact count) and other operations (estimate).}",
        "\\label{fig:flops}",
        "\\end{figure}",
        "",
        "\\subsection{Memory}",
        "",
        "Table~\\ref{tab:memory} gives the memory to hold the weights in each data type, and estimates of the "
        "activation memory for inference and for training with AdamW.",
        "",
        _memory_table(p),
        "\\subsection{Latency}",
        "",
        "Table~\\ref{tab:latency} estimates the latency of one forward pass at batch "
        + p.ledger.count("latency.batch") + " on each device class, "
        "summing over the graph's nodes the larger of compute time and memory time, plus a fixed overhead per "
        "kernel; Table~\\ref{tab:devices} lists the device profiles it uses and Figure~\\ref{fig:roofline} places "
        "the model's operations on each device's roofline. These are estimates, not measurements. " + _calibration(p),
        "",
        _latency_table(p),
        _device_table(p),
    ]
    if devs:
        out += ["\\begin{figure}[htbp]", "\\centering"]
        for i, _dev in enumerate(devs, start=1):
            out.append(f"\\begin{{minipage}}[t]{{0.48\\linewidth}}\\centering\\input{{figures/roofline_{i}}}\\end{{minipage}}"
                       + ("\\hfill" if i % 2 else "\\par\\smallskip"))
        out += [
            "\\caption{Roofline per device class: attainable FLOP/s against arithmetic intensity (FLOPs per byte "
            "moved, fp32), for peak times efficiency in fp32 and bf16. Dots are the graph's operations summed by "
            "kind, placed on the fp32 roof; the star is the whole model. From the device profiles, not measured.}",
            "\\label{fig:roofline}",
            "\\end{figure}",
            "",
        ]
    return "\n".join(out)


def _metadata_value(p: Paper, *names: str) -> Any:
    meta = p.report.get("metadata") or {}
    for n in names:
        if n in meta:
            return n, meta[n]
        if isinstance(meta.get("training"), dict) and n in meta["training"]:
            return f"training.{n}", meta["training"][n]
    return None, None


def training(p: Paper) -> str:
    r = p.report
    out = ["\\section{Training setup}\\label{sec:training}", ""]
    objectives = [tt(o) for o in p.objectives()]
    out.append((f"The specification trains {p.name} with the {_words(objectives)} objective"
                + ("s" if len(objectives) > 1 else "") + "." if objectives
                else "The specification names no objective; the task head's loss is used.")
               + f" The task head for {tt(r['task']['name'])} is trained with the loss {tt(r['task']['loss'])}"
               + (f" and evaluated with {_words([tt(m) for m in r['task']['metrics']])}"
                  if r["task"]["metrics"] else "")
               + ".")
    out.append("")
    eqs = objective_equations(p.objectives(), r["task"]["name"])
    for eq in eqs:
        cite = " " + p.cite(*eq.cites) if eq.cites else ""
        out += [f"\\paragraph{{{eq.title}{cite}.}} {eq.text}", ""]
    unknown = [o for o in p.objectives() if o not in OBJECTIVE_NAMES]
    if unknown:
        out += [f"\\paragraph{{Other objectives.}} This paper has no loss equation for {_words([tt(o) for o in unknown])}; "
                "the training run must define " + ("it" if len(unknown) == 1 else "them")
                + ", and the paper states none.", ""]
    data = p.data_names()
    out.append("\\paragraph{Data.} " + (
        f"The specification names the training data {_words([tt(d) for d in data])}. The compiler does not read "
        "the data; tokenisation, splits and preprocessing are left to the training run."
        if data else "The specification names no training data; a training run must choose and document it."))
    out.append("")
    key, compute = _metadata_value(p, "compute")
    comp_text = ""
    if compute is not None:
        comp_text = f" The specification's compute entry reads {_value(p, f'metadata.{key}', compute)}."
    out.append(
        "\\paragraph{Compute.} One forward and backward pass over one example at the nominal input costs "
        f"{p.ledger.si('flops_training', unit='FLOP', basis='convention')} (three times the forward count, a "
        "convention), and training it with AdamW needs an estimated "
        f"{p.ledger.nbytes('memory.training_total_bytes', basis='estimate')} at batch "
        f"{p.ledger.count('latency.batch')}." + comp_text)
    out.append("")
    settings = r.get("training") or {}
    if settings:
        out.append("\\paragraph{Optimisation.} " + _training_settings(p, settings)
                   + " They are the defaults of the generated \\texttt{train.py}, whose command-line flags override "
                   "them; the memory estimates assume AdamW " + p.cite("loshchilov2019decoupled")
                   + " with fp32 moments and gradients. The generated module initialises its weights with seed "
                   + p.ledger.count("compiler.seed") + ".")
    else:
        out.append(
            "\\paragraph{Optimisation.} The specification fixes no optimiser, schedule or batch size, and the compiler "
            "chooses none; the memory estimates assume AdamW " + p.cite("loshchilov2019decoupled")
            + " with fp32 moments and gradients. The generated module initialises its weights with seed "
            + p.ledger.count("compiler.seed") + ".")
    out.append("")
    return "\n".join(out)


_OPTIMIZER_WORDS = {"adamw": ("AdamW", "loshchilov2019decoupled"), "adam": ("Adam", "kingma2015adam"), "sgd": ("SGD", "")}
_SCHEDULE_WORDS = {"cosine": "cosine decay", "linear": "linear decay", "constant": "a constant rate"}
_PRECISION_WORDS = {"fp32": "in fp32", "bf16": "with bf16 autocast", "fp16": "with fp16 autocast and loss scaling"}


def _optimizer_words(p: Paper, v: str) -> str:
    word, key = _OPTIMIZER_WORDS[v]
    return f"the optimiser {word}" + (" " + p.cite(key) if key else "")


def _precision_words(p: Paper, v: str) -> str:
    return "training " + _PRECISION_WORDS[v] + (" " + p.cite("micikevicius2018mixed") if v == "fp16" else "")


def _augment_words(p: Paper, v: list[str]) -> str:
    if not v:
        return "no augmentation"
    return "the augmentation" + ("s " if len(v) > 1 else " ") + _words([tt(a) for a in v])


# each setting of a `training { ... }` section in the order the paper names them: (key, how it reads, the words
# around it at `{}`); "count" and "plain" are the ledger's integer and number forms of report key `training.<key>`
_SETTING_WORDS: tuple[tuple[str, str | Callable[[Paper, Any], str], str], ...] = (
    ("optimizer", _optimizer_words, "{}"),
    ("lr", "plain", "a peak learning rate of {}"),
    ("schedule", lambda p, v: _SCHEDULE_WORDS[v], "{} after warmup"),
    ("warmup", "count", "{} warmup steps"),
    ("warmup_epochs", "count", "{} warmup epochs"),
    ("weight_decay", "plain", "weight decay {}"),
    ("batch_size", "count", "a batch of {}"),
    ("grad_accum", "count", "{} accumulated micro-batches per step"),
    ("steps", "count", "{} optimiser steps"),
    ("epochs", "count", "{} epochs"),
    ("grad_clip", "plain", "gradient clipping at norm {}"),
    ("precision", _precision_words, "{}"),
    ("ema_decay", "plain", "an exponential moving average of the weights with decay {}"),
    ("augment", _augment_words, "{}"),
    ("noise_schedule", lambda p, v: tt(v), "the {} noise schedule"),
    ("timesteps", "count", "{} noise levels"),
    ("cfg_dropout", "plain", "the condition dropped with probability {} for classifier-free guidance"),
)


def _training_settings(p: Paper, t: dict[str, Any]) -> str:
    """The spec's `training { ... }` section in words; every number through the ledger (report key `training.*`)."""
    parts: list[str] = []
    for key, read, words in _SETTING_WORDS:
        if key in t:
            value = getattr(p.ledger, read)("training." + key) if isinstance(read, str) else read(p, t[key])
            parts.append(words.format(value))
    return "The specification's training section sets " + _words(parts) + "."


def evaluation(p: Paper) -> str:
    r = p.report
    out = ["\\section{Evaluation}\\label{sec:evaluation}", ""]
    ms = r.get("measurements") or []
    if ms:
        out += [
            "Table~\\ref{tab:measured} lists the measured results that accompany this model. Each comes with its "
            "provenance: the run that produced it and the data it was measured on.",
            "",
            "\\begin{table}[htbp]", "\\centering\\small",
            "\\caption{Measured results, with their provenance.}", "\\label{tab:measured}",
            "\\begin{tabularx}{\\linewidth}{@{}l r l X@{}}", "\\toprule",
            "Metric & Value & Data & Source \\\\", "\\midrule",
        ]
        for i, m in enumerate(ms):
            v = m.get("value")
            val = p.ledger.plain(f"measurements.{i}.value", basis="measurement") \
                if isinstance(v, (int, float)) and not isinstance(v, bool) else "--"
            unit = f"\\,{tt(m['unit'])}" if m.get("unit") else ""
            where = tt(" / ".join(str(m[k]) for k in ("dataset", "split") if m.get(k))) \
                if m.get("dataset") or m.get("split") else "--"
            out.append(f"{tt(m.get('metric', '?'))} & {val}{unit} & {where} & {tt(m.get('source', 'unknown'))} \\\\")
        out += ["\\bottomrule", "\\end{tabularx}", "\\end{table}", ""]
        return "\n".join(out)
    metrics = _words([tt(m) for m in r["task"]["metrics"]]) if r["task"]["metrics"] else "the task's metrics"
    data = p.data_names()
    out += [
        f"No measurement of {p.name} exists yet, so this section reports no number. A training run would measure:",
        "\\begin{itemize}",
        f"\\item {metrics} on held-out data"
        + (f" of {_words([tt(d) for d in data])}" if data else " (the specification names none)")
        + ", against the published models of the same family cited in Section~\\ref{sec:related} where they "
          "share a benchmark;",
        f"\\item the training loss ({tt(r['task']['loss'])}) against steps and against the compute spent;",
        "\\item the forward latency on each device class of Table~\\ref{tab:latency}, which would also "
        "give the latency estimator its measured error;",
        "\\item the peak memory in inference and in training, to compare with Table~\\ref{tab:memory}.",
        "\\end{itemize}",
        "Each measured value will be printed with its provenance: the run, the data, the compiler version and the "
        "hash of the specification (Appendix~\\ref{sec:appendix}).",
        "",
    ]
    return "\n".join(out)


def limitations(p: Paper) -> str:
    r = p.report
    items: list[str] = []
    violated = [(i, c) for i, c in p.constraint_rows() if c["status"] == "violated"]
    for i, c in violated:
        items.append(f"\\item Unmet constraint: {_constraint_text(c)}; the compiled model has {_actual(p, i, c)} "
                     f"({rm(c['basis'])}).")
    if not violated and r["constraints"]:
        est = [c for c in r["constraints"] if c["basis"] == "estimate"]
        items.append("\\item Every checked constraint holds"
                     + (f", but {_words([_constraint_text(c) for c in est])} "
                        + ("is" if len(est) == 1 else "are") + " checked against estimates, not measurements."
                        if est else "."))
    unchecked = [c for c in r["constraints"] if c["status"] == "not-checked"]
    if unchecked:
        items.append(f"\\item Not checked: {_words([_constraint_text(c) for c in unchecked])}.")
    fallbacks = [w for w in r["warnings"] if w["code"] in _FALLBACK_CODES]
    others = [w for w in r["warnings"] if w["code"] not in _FALLBACK_CODES]
    for w in fallbacks:
        items.append(f"\\item Fallback taken ({tt(w['code'])}), as the compiler reported it: {tt(w['message'])}")
    for w in others:
        items.append(f"\\item Compiler warning {tt(w['code'])}, as reported: {tt(w['message'])}")
    if not r["warnings"]:
        items.append("\\item The compiler raised no warning for this specification.")
    if r.get("solve") and r["solve"]["unknowns"]:
        items.append(f"\\item The solver chose {_words([tt(u) for u in r['solve']['unknowns']])} to satisfy the "
                     "constraints and the family's preferences, not for quality: no alternative was trained.")
    if r.get("solve") and r["solve"].get("first_choices"):
        items.append(f"\\item The specification left {_words([tt(u) for u in r['solve']['first_choices']])} open "
                     "as a choice of values; the compiler took the first value listed, without comparing them "
                     "(\\texttt{metagenc search} explores every value).")
    items += [
        "\\item Latency and activation memory are estimates from device profiles and tensor sizes; "
        "\\emph{other FLOPs} are a per-element estimate. "
        + (_calibration(p) if _calibrated(p) else "The latency estimator is uncalibrated on every device class "
           "(Section~\\ref{sec:complexity}), so its error is unknown."),
        "\\item The model has not been trained: the paper contains no measured quality, and nothing in it "
        "shows how well the architecture performs its task.",
    ]
    return "\n".join(["\\section{Limitations}\\label{sec:limitations}", "", "\\begin{itemize}", *items,
                      "\\end{itemize}", ""])


def _meta_items(p: Paper, meta: dict[str, Any], prefix: str) -> list[str]:
    out = []
    for k, v in meta.items():
        if isinstance(v, dict) and v:
            out += [f"\\item {tt(k)}:", "\\begin{itemize}\\raggedright", *_meta_items(p, v, f"{prefix}{k}."), "\\end{itemize}"]
        else:
            out.append(f"\\item {tt(k)}: {_value(p, f'{prefix}{k}', v)}")
    return out


def appendix(p: Paper) -> str:
    r = p.report
    c = r["compiler"]
    fields = r["task"]["fields"]
    out = [
        "\\section{Specification and provenance}\\label{sec:appendix}",
        "",
        "\\subsection{Specification}",
        "",
        "\\begin{itemize}",
        f"\\item Name: {p.name}",
        f"\\item Modalities: {_words([tt(m) for m in r['modality']['inputs']] or ['--'])} $\\to$ "
        f"{_words([tt(m) for m in r['modality']['outputs']] or ['--'])}",
        f"\\item Task: {tt(r['task']['name'])}" + (f" {_value(p, 'task.fields', fields)}" if fields else ""),
        f"\\item Objectives: {_words([tt(o) for o in p.objectives()]) if p.objectives() else 'none'}",
        f"\\item Family: {p.family_ref()}",
        "\\end{itemize}",
        "",
    ]
    meta = r.get("metadata") or {}
    if meta:
        out += ["The specification's metadata, printed literally:", "\\begin{itemize}\\raggedright",
                *_meta_items(p, meta, "metadata."), "\\end{itemize}", ""]
    else:
        out += ["The specification carries no metadata.", ""]
    out += [
        "\\subsection{Reproducibility}",
        "",
        f"This paper, the PyTorch module and the report were generated by {tt(c['name'])} {tt(c['version'])} "
        f"from the specification with SHA-256 {tt(c['input_sha256'], breakable=False)}, with seed "
        f"{p.ledger.count('compiler.seed')}. Running the compiler again on the same specification regenerates "
        "them; the figures are byte-identical across runs.",
        "",
        "\\subsection{Where the numbers come from}",
        "",
        "Each number is printed through one helper that records it in \\texttt{provenance.json}: its identifier, "
        "the printed text, the exact value, and its source, a key of \\texttt{report.json} (the compiler's report), "
        "a quantity of \\texttt{graph.json} (per-block sums over the graph's nodes, tensor shapes), or a field of a "
        "device profile. Its basis says whether it is exact, an estimate, a convention or an assumption. The "
        "compiler's documentation (\\texttt{docs/estimates.md}) defines each quantity.",
        "",
    ]
    return "\n".join(out)
