"""The LaTeX paper backend: a paper per compiled model, and its model card.

`emit(comp)` returns, relative to OUT/<name>/:

- paper/main.tex, paper/sections/*.tex, paper/figures/block_graph.tex (TikZ), paper/figures/*.tex
  (pgfplots, drawn by TeX), paper/references.bib (the cited subset of the curated
  references.bib), paper/metagen.sty, paper/Makefile (latexmk, else pdflatex + bibtex),
  paper/provenance.json (every number the paper prints, with its source);
- MODEL_CARD.md (Hugging Face layout).

Every number comes from report.json (`build_report`), graph.json or a device profile, through the
ledger; every string from the spec is escaped (escape.py). Nothing from a spec reaches a file path
or an \\input: every path here is a constant. docs/paper.md describes the paper. The backend
never imports torch, onnx or a plotting library.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from metagen_compiler.compilation import Compilation
from metagen_compiler.escape import json_text

__all__ = ["MAKEFILE", "build_paper", "emit"]

MAKEFILE = """\
# Builds main.pdf from the generated sources: latexmk when installed, else pdflatex + bibtex.
# Shell escape is off: nothing in the paper runs a program.
LATEXMK := $(shell command -v latexmk 2>/dev/null)
PDFLATEX := pdflatex -no-shell-escape -interaction=nonstopmode -halt-on-error -file-line-error
SOURCES := main.tex metagen.sty references.bib $(wildcard sections/*.tex) $(wildcard figures/*)
TEXLIVE := texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures latexmk

.PHONY: all check clean
all: main.pdf

# `make check`: are the programs the build runs installed? If not, say what to install (Debian, Ubuntu).
check:
\t@for prog in pdflatex bibtex; do \\
\t  command -v $$prog >/dev/null 2>&1 || { echo "$$prog not found: apt-get install $(TEXLIVE)" >&2; exit 1; }; \\
\tdone

main.pdf: $(SOURCES) | check
ifneq ($(LATEXMK),)
\tlatexmk -pdf -pdflatex="$(PDFLATEX) %O %S" main.tex
else
\t$(PDFLATEX) main.tex
\tbibtex main
\t$(PDFLATEX) main.tex
\t$(PDFLATEX) main.tex
endif

clean:
\trm -f main.aux main.bbl main.blg main.log main.out main.fls main.fdb_latexmk main.pdf
"""


def build_paper(comp: Compilation, report: dict[str, Any]) -> dict[str, str | bytes]:
    """The paper and model card for `comp`, from `report` (build_report's dict; a later stage may add
    `measurements` or `latency.calibration`, which the paper then prints with their provenance)."""
    from metagen_compiler.semantics.program import device_profiles

    from .bibliography import bib_for, related_work
    from .context import Paper
    from .figures import draw_figures
    from .modelcard import model_card
    from .sections_analysis import appendix, complexity, evaluation, limitations, training
    from .sections_core import abstract, introduction, main_tex, method
    from .tikz import block_graph

    assert comp.program is not None
    p = Paper(comp, report, device_profiles(comp.program))
    files: dict[str, str | bytes] = {}
    sections = {
        "abstract": abstract(p),
        "introduction": introduction(p),
        "related_work": related_work(p),
        "method": method(p),
        "complexity": complexity(p),
        "training": training(p),
        "evaluation": evaluation(p),
        "limitations": limitations(p),
        "appendix": appendix(p),
    }
    if report.get("search"):  # a model that `metagenc search` found: its search (sections_search.py)
        from .sections_search import search

        sections["search"] = search(p)
    files["paper/figures/block_graph.tex"] = block_graph(p)
    files["paper/main.tex"] = main_tex(p)
    for name, text in sections.items():
        files[f"paper/sections/{name}.tex"] = text
    files["paper/references.bib"] = bib_for(p.cited)
    files["paper/metagen.sty"] = resources.files(__package__).joinpath("metagen.sty").read_text(encoding="utf-8")
    files["paper/Makefile"] = MAKEFILE
    for rel, data in draw_figures(p).items():
        files[f"paper/{rel}"] = data
    files["paper/provenance.json"] = json_text(
        {"sources": {"report": "../report.json", "graph": "../graph.json",
                     "device": "device profiles of the compilation (stdlib/devices.msl)"},
         "numbers": p.ledger.as_json()}, indent=1) + "\n"
    files["MODEL_CARD.md"] = model_card(p)
    return files


def emit(comp: Compilation) -> dict[str, str | bytes]:
    from metagen_compiler.report import build_report, jsonable

    report = json.loads(json.dumps(jsonable(build_report(comp, []))))
    return build_paper(comp, report)
