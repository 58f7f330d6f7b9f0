"""The paper's architecture-search section, for a model that `metagenc search` found (docs/search.md).

The search writes its numbers to out/search/search.json (`search_outputs.search_summary`) and, for each Pareto
candidate it compiles with the latex backend, puts them in that candidate's report.json under `search` (with
`this_trial`: which trial the model is), so every number here goes through the ledger from report.json like the
other sections'. The figures are the search's PNGs, copied to paper/figures/search_*.png beside the section.
"""

from __future__ import annotations

from typing import Any

from .context import Paper
from .escape import tt
from .sections_core import _words

__all__ = ["search"]

_SAMPLERS = {"nsga2": "NSGA-II", "tpe": "TPE (tree-structured Parzen estimator)", "random": "random"}
_STATUS = (("ok", "met every constraint"), ("infeasible", "broke a constraint"), ("pruned", "were pruned"),
           ("failed", "failed"), ("interrupted", "were interrupted and run again"))


def _objective_value(p: Paper, i: int, name: str) -> str:
    """Front row `i`'s value of objective `name` (a name of the search's fixed vocabulary), through the ledger."""
    if name == "latency" or name == "train_seconds":
        return p.ledger.seconds(f"search.front.{i}.objectives.{name}", basis="estimate" if name == "latency" else "measurement")
    if name in ("memory", "training_memory"):
        return p.ledger.nbytes(f"search.front.{i}.objectives.{name}", basis="estimate")
    if name in ("params", "flops", "flops_training"):
        return p.ledger.si(f"search.front.{i}.objectives.{name}", basis="exact")
    return p.ledger.si(f"search.front.{i}.objectives.{name}", basis="measurement", sig=4)


def search(p: Paper) -> str:
    s: dict[str, Any] = p.report["search"]
    objs = s["objectives"]
    words = _words([f"{tt(o['name'])} ({'minimised' if o['direction'] == 'minimize' else 'maximised'})"
                    for o in objs])
    dims = list(s["space"])
    out = ["\\section{Architecture search}\\label{sec:search}", ""]
    text = (f"The specification leaves {p.ledger.count('search.space_size', len(dims))} "
            f"dimension{'s' if len(dims) != 1 else ''} open ({_words([tt(d) for d in dims])}). "
            f"\\texttt{{metagenc search}} searched them with Optuna's {_SAMPLERS.get(s['sampler'], tt(s['sampler']))} "
            f"sampler over {p.ledger.count('search.trials')} trials, for {words} on {tt(s['device'])}, with every "
            "constraint of the specification as a constraint of the search: a candidate that breaks one is never "
            "on the front. ")
    counts = [f"{p.ledger.count(f'search.status.{k}')} {w}" for k, w in _STATUS if s["status"].get(k)]
    if counts:
        text += f"Of the trials, {_words(counts)}. "
    if s.get("warm_started"):
        text += (f"The first {p.ledger.count('search.warm_started')} were the best configurations of the nearest "
                 "earlier searches (warm start). ")
    out.append(text)
    out.append("")
    tr = s.get("training")
    if tr:
        budget = f"{p.ledger.count('search.training.steps')} optimizer steps"
        if tr.get("seconds"):
            budget += f" or {p.ledger.seconds('search.training.seconds', basis='convention')}, whichever came first"
        out.append(
            f"Each feasible candidate was trained for {budget} on {tt(str(tr['data']))} by the generated "
            f"\\texttt{{train.py}} and evaluated on its validation split every "
            f"{p.ledger.count('search.training.eval_every')} steps; "
            + _pruner_text(tr)
            + "The quality objectives are measurements on that data, at that budget: a prototype's, not the "
              "trained model's.")
        out.append("")
    hv = s["hypervolume"]
    text = (f"The normalised hypervolume of the feasible front (each objective scaled to $[0, 1]$ over every "
            f"feasible trial, reference point $1.1$) reached "
            f"{p.ledger.si('search.hypervolume.final', basis='measurement', sig=3)} after the last trial")
    if hv.get("random_final") is not None:
        text += (f", against {p.ledger.si('search.hypervolume.random_final', basis='measurement', sig=3)} for "
                 "random search with the same budget")
    figures = s.get("figures", ())
    out.append(text + (" (Figure~\\ref{fig:search-hv})." if "hypervolume" in figures else "."))
    out.append("")
    front = s["front"]
    this = s.get("this_trial")
    if front:
        cols = "l" + "r" * (len(dims) + len(objs))
        out += ["\\begin{table}[htbp]", "\\centering\\small",
                f"\\caption{{The Pareto front of the search: {p.ledger.count('search.front_size', len(front))} "
                "candidates; the row in bold is this model.}", "\\label{tab:search-front}",
                "\\begin{adjustbox}{max width=\\linewidth}", f"\\begin{{tabular}}{{@{{}}{cols}@{{}}}}", "\\toprule",
                " & ".join(["Trial", *(tt(d) for d in dims), *(tt(o["name"]) for o in objs)]) + " \\\\",
                "\\midrule"]
        for i, c in enumerate(front):
            cells = [p.ledger.count(f"search.front.{i}.trial")]
            cells += [p.ledger.count(f"search.front.{i}.values.{d}") if isinstance(c["values"].get(d), int)
                      and not isinstance(c["values"].get(d), bool) else tt(str(c["values"].get(d))) for d in dims]
            cells += [_objective_value(p, i, o["name"]) for o in objs]
            if c["trial"] == this:
                cells = [f"\\textbf{{{x}}}" for x in cells]
            out.append(" & ".join(cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", "\\end{adjustbox}", "\\end{table}", ""]
    imp = s.get("importance") or {}
    if imp:
        parts = []
        for name, vals in imp.items():
            top = max(vals, key=lambda k: vals[k])
            parts.append(f"{tt(top)} for {tt(name)} "
                         f"({p.ledger.si(f'search.importance.{name}.{top}', basis='measurement', sig=2)})")
        see = ", Figure~\\ref{fig:search-importance}" if "importance" in figures else ""
        out.append(f"The most important dimension (PED-ANOVA importance over the evaluated trials{see}) is "
                   f"{_words(parts)}.")
        out.append("")
    t = s.get("timing") or {}
    if t.get("trained_trial_s_mean") is not None:
        out.append(f"A trained candidate took {p.ledger.seconds('search.timing.trained_trial_s_mean', basis='measurement')} "
                   f"on average: {p.ledger.seconds('search.timing.train_s_mean', basis='measurement')} of training, "
                   f"{p.ledger.seconds('search.timing.compile_s_mean', basis='measurement')} of in-process compiling "
                   "(a mean over all trials) and "
                   f"{p.ledger.seconds('search.timing.overhead_s_mean', basis='measurement')} of search machinery.")
        out.append("")
    elif t.get("trial_s_mean") is not None and t.get("compile_s_mean") is not None:
        out.append(f"A trial took {p.ledger.seconds('search.timing.trial_s_mean', basis='measurement')} on average, "
                   f"of which the in-process compile {p.ledger.seconds('search.timing.compile_s_mean', basis='measurement')}.")
        out.append("")
    figs = [("hypervolume", "fig:search-hv", "Normalised hypervolume of the feasible front against trials"
             + (", next to random search with the same budget." if hv.get("random_final") is not None else ".")),
            ("pareto", "fig:search-pareto", "The trials in the plane of the first two objectives: breaking a "
             "constraint, feasible, and Pareto-optimal."),
            ("importance", "fig:search-importance", "Importance of each open dimension for each objective.")]
    for name, label, caption in figs:
        if name in figures:
            out += ["\\begin{figure}[htbp]", "\\centering",
                    f"\\includegraphics[width=0.7\\linewidth]{{figures/search_{name}.png}}",
                    f"\\caption{{{caption}}}\\label{{{label}}}", "\\end{figure}", ""]
    return "\n".join(out)


def _pruner_text(tr: dict[str, Any]) -> str:
    """What stopped hopeless prototypes: Optuna's pruner on one metric, or the Pareto pruner (search/pruning.py)."""
    pruner = tr.get("pruner")
    if not pruner or pruner == "none":
        return "no pruner ran. "
    if pruner == "pareto":
        return (f"a run was stopped at an evaluation when other runs dominated it there, with a better or equal "
                f"{tt(tr['watch'])} at that step and better or equal cost objectives. ")
    return f"Optuna's {tt(pruner)} pruner stopped hopeless candidates on {tt(tr['watch'])}. "
