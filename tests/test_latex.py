"""The LaTeX paper backend: every paper builds, every number is the compiler's, every spec string is
printed literally, figures are byte-identical across runs.

The build tests need TeX Live (pdflatex, bibtex; latexmk if present). They are skipped when pdflatex
is absent, except under CI (the `CI` environment variable set), where they run and fail loudly.
Papers are emitted and built once per module, in parallel.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, ROOT, compile_path

SPECIAL = ROOT / "tests" / "latex_specs" / "special_chars.msl"
PAPER_SPECS = [*EXAMPLES, ROOT / "tests" / "seeds_yaml" / "text_llm.yaml", SPECIAL]
IDS = [p.stem for p in PAPER_SPECS]
WEIRD = "name_%_#_&_$_^_~_{_}_\\_<>|\"'` \\input{/etc/passwd} ^^5c"  # every special, as a model name
HAVE_TEX = shutil.which("pdflatex") is not None and shutil.which("bibtex") is not None
_skip_without_tex = pytest.mark.skipif(not HAVE_TEX, reason="TeX Live (pdflatex, bibtex) is not installed")


def needs_tex(f):  # type: ignore[no-untyped-def]
    """A test that runs pdflatex: slow (the papers build for about 100 s on two cores), and failing without TeX
    Live unless --allow-missing (conftest)."""
    return pytest.mark.slow(_skip_without_tex(f))
# Strings of the special spec that the PDF must print character for character.
LITERALS = [
    "Specials: _ % # & $ ^ ~ { } \\ and < > | \" ' ` - -- --- [x] ^^5c ~~",
    "\\input{/etc/passwd} \\include{/etc/hostname} \\write18{touch /tmp/pwned} \\immediate\\write18{id}",
    "\\catcode`\\@=11 \\makeatletter \\def\\x{y} \\end{document}",
    "R&D box #1: 50% off $5 ~fast~ {x_y} ^caret \\input{/etc/passwd}",
    "8 x H100 ~ 3 days {estimate}",
    "C&C $corpus$",
    "a_b__c_",
]


@dataclass
class Emitted:
    comp: Any
    dir: Path  # OUT/<name>/, with report.json, graph.json, paper/, MODEL_CARD.md
    files: dict[str, str | bytes]


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data, encoding="utf-8")


@pytest.fixture(scope="module")
def emitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Emitted]:
    from metagen_compiler.cli import write_outputs

    root = tmp_path_factory.mktemp("papers")
    out: dict[str, Emitted] = {}
    for path, key in zip(PAPER_SPECS, IDS, strict=True):
        comp = compile_path(path)
        assert not comp.bag.has_errors, [d.message for d in comp.bag.sorted()]
        _, files = write_outputs(comp, root, ["latex"])
        d = root / key
        _write(d, files)
        out[key] = Emitted(comp, d, files)
    # the special spec again, with a model name holding every special character (the CLI would refuse
    # such a name as a folder; the backend must still escape it everywhere)
    comp = compile_path(SPECIAL)
    comp.spec.name = WEIRD
    _, files = write_outputs(comp, root, ["latex"])
    d = root / "weird_name"
    _write(d, files)
    out["weird_name"] = Emitted(comp, d, files)
    out["unknown_ops"] = _unknown_paper(root)
    return out


UNKNOWN_DOC = "1-D convolution over (B, C, L): x_{c,t} * w^T, 50% of $ ~ & #."


def _unknown_paper(root: Path) -> Emitted:
    """tiny_story with everything the paper has no text for: a newly registered primitive (`conv1d`, with a
    doc string full of specials), a primitive the registry lacks, an unknown block, task, objective and
    family. The paper must describe them generically (the registry's doc string, no equation) and build."""
    import dataclasses

    from metagen_backends.latex import build_paper

    from metagen_compiler.primitives import PRIMITIVES, Primitive
    from metagen_compiler.report import build_report, jsonable

    comp = compile_path(ROOT / "examples" / "tiny_story.msl")
    report = json.loads(json.dumps(jsonable(build_report(comp, []))))
    for d in comp.graph.nodes.values():
        d.op = {"silu": "conv1d", "rope": "mystery_op"}.get(d.op, d.op)
    comp.graph.modules = {k: dataclasses.replace(m, target="std.moe.expert_mix") if m.target == "std.layers.swiglu"
                          else m for k, m in comp.graph.modules.items()}
    comp.spec.objectives = ["score_matching"]
    report["task"].update(name="protein_folding", loss="mystery_loss", metrics=["tm_score"])
    report["family"], report["preset"] = "std.bio.mystery_net", None
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(PRIMITIVES, "conv1d", Primitive("conv1d", (), UNKNOWN_DOC))
        files = build_paper(comp, report)
    d = root / "unknown_ops"
    _write(d, files)
    return Emitted(comp, d, files)


# ------------------------------------------------------------------ building
@dataclass
class Build:
    rc: int
    seconds: float
    output: str
    log: str
    blg: str
    pages: int


def _build(paper: Path) -> Build:
    env = {**os.environ, "openin_any": "p", "shell_escape": "f"}
    t0 = time.monotonic()
    if shutil.which("make") and shutil.which("latexmk"):
        cmds = [["make", "-s"]]
    else:
        tex = ["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "main.tex"]
        cmds = [tex, ["bibtex", "main"], tex, tex]
    outs, rc = [], 0
    for cmd in cmds:
        r = subprocess.run(cmd, cwd=paper, capture_output=True, text=True, errors="replace", env=env, timeout=240,
                           check=False)
        outs.append(r.stdout + r.stderr)
        rc = rc or r.returncode
    log = (paper / "main.log").read_text(errors="replace") if (paper / "main.log").exists() else ""
    blg = (paper / "main.blg").read_text(errors="replace") if (paper / "main.blg").exists() else ""
    m = re.search(r"Output written on main\.pdf \((\d+) pages?", log)
    return Build(rc, time.monotonic() - t0, "\n".join(outs), log, blg, int(m.group(1)) if m else 0)


@pytest.fixture(scope="module")
def built(emitted: dict[str, Emitted]) -> dict[str, Build]:
    assert HAVE_TEX, "CI must install TeX Live (pdflatex, bibtex, latexmk): see .ci/run"
    keys = list(emitted)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        results = list(pool.map(lambda k: _build(emitted[k].dir / "paper"), keys))
    return dict(zip(keys, results, strict=True))


def _log_problems(log: str, blg: str) -> list[str]:
    bad = []
    for line in log.splitlines():
        low = line.lower()
        if (line.startswith("!") or "undefined" in low or "citation" in low or "missing" in low
                or re.search(r"File `[^']*' not found", line) or "LaTeX Error" in line or "runsystem" in line):
            bad.append(line)
        m = re.match(r"Overfull \\[hv]box \(([\d.]+)pt too (wide|high)\)", line)
        if m and float(m.group(1)) > 1.0:  # text running into the margin (or off the page)
            bad.append(line)
    bad += [line for line in blg.splitlines() if line.startswith("Warning--") or "error message" in line]
    return bad


def test_log_check_catches_what_a_reader_would_see() -> None:
    log = ("Overfull \\hbox (0.3pt too wide) in paragraph at lines 3--4\n"
           "Overfull \\hbox (24.5pt too wide) in alignment at lines 9--20\n"
           "LaTeX Warning: Reference `tab:x' on page 2 undefined on input line 7.\n"
           "LaTeX Warning: Citation `foo' on page 1 undefined on input line 3.\n"
           "! LaTeX Error: File `figures/x.pdf' not found.\n")
    bad = _log_problems(log, "Warning--I didn't find a database entry for \"foo\"\n")
    assert len(bad) == 5 and not any("0.3pt" in b for b in bad)


@needs_tex
@pytest.mark.parametrize("key", [*IDS, "weird_name", "unknown_ops"])
def test_paper_builds_cleanly(key: str, built: dict[str, Build]) -> None:
    b = built[key]
    assert b.rc == 0, b.output[-3000:]
    assert _log_problems(b.log, b.blg) == []
    assert 5 <= b.pages <= 20  # every example is 9-10 pages: an empty section or a runaway table shows here


@needs_tex
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_builds_without_latexmk(emitted: dict[str, Emitted], tmp_path: Path) -> None:
    """The Makefile's other branch: pdflatex + bibtex + pdflatex twice, as on a TeX without latexmk."""
    paper = tmp_path / "special_chars"
    _write(paper, {k: v for k, v in emitted["special_chars"].files.items()})
    r = subprocess.run(["make", "-s", "-C", str(paper / "paper"), "LATEXMK="], capture_output=True, text=True,
                       errors="replace", timeout=240, check=False)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    log = (paper / "paper" / "main.log").read_text(errors="replace")
    blg = (paper / "paper" / "main.blg").read_text(errors="replace")
    assert _log_problems(log, blg) == [] and (paper / "paper" / "main.pdf").exists()
    assert not (paper / "paper" / "main.fdb_latexmk").exists()  # latexmk did not run


@needs_tex
def test_page_counts_agree_with_the_pdf(emitted: dict[str, Emitted], built: dict[str, Build]) -> None:
    for key, b in built.items():
        pdf = emitted[key].dir / "paper" / "main.pdf"
        assert pdf.exists(), key
        if shutil.which("pdfinfo"):
            info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
            pages = re.search(r"^Pages:\s+(\d+)$", info, re.MULTILINE)
            assert pages is not None and pages.group(1) == str(b.pages), key
        else:  # the page tree's /Count, when pdfTeX left it uncompressed
            counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", pdf.read_bytes())]
            assert not counts or max(counts) == b.pages, key


def _unescape(m: re.Match[bytes]) -> bytes:
    esc = m.group(1)
    if re.fullmatch(rb"[0-7]{1,3}", esc):
        return bytes([int(esc, 8)])
    return {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f"}.get(esc, esc)


def _pdf_text(pdf: Path) -> str:
    """The strings a PDF's content streams show, whitespace dropped (enough for typewriter text, whose glyph
    codes are ASCII in OT1 cmtt, except the straight quote at 13 and the grave at 18)."""
    data = pdf.read_bytes()
    chunks = []
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        try:
            chunks.append(zlib.decompress(m.group(1)))
        except zlib.error:
            continue
    text = []
    for c in chunks:
        for s in re.finditer(rb"\((?:\\.|[^\\)])*\)", c, re.DOTALL):
            body = re.sub(rb"\\([0-7]{1,3}|.)", _unescape, s.group(0)[1:-1], flags=re.DOTALL)
            text.append(body.decode("latin-1").replace("\r", "'").replace("\x12", "`"))
    return re.sub(r"\s+", "", "".join(text))


@needs_tex
@pytest.mark.parametrize("key", ["special_chars", "weird_name"])
def test_special_characters_print_literally(key: str, emitted: dict[str, Emitted], built: dict[str, Build]) -> None:
    assert built[key].rc == 0
    pdf = emitted[key].dir / "paper" / "main.pdf"
    text = _pdf_text(pdf)
    literals = LITERALS if key == "special_chars" else [*LITERALS[:-1], WEIRD]
    for s in literals:
        assert re.sub(r"\s+", "", s) in text, s
    assert "root:" not in text  # /etc/passwd was never read
    assert "runsystem" not in built[key].log
    if shutil.which("pdftotext"):
        plain = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
        assert "\\input{/etc/passwd}" in plain


# ------------------------------------------------------------------ what the paper has no text for
def test_unknown_ops_blocks_tasks_and_objectives_get_generic_text(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex.escape import rm, tt

    files = emitted["unknown_ops"].files
    method = str(files["paper/sections/method.tex"])
    other = method.split("\\paragraph{Other operations.}", 1)[1]
    assert f"\\item {tt('conv1d')}: {rm(UNKNOWN_DOC)}" in other  # the registry's doc string, escaped
    assert f"\\item {tt('mystery_op')}: no description in the compiler's primitive registry." in other
    assert f"\\item {tt('mul')}: {rm('Elementwise product (gating).')}" in other  # SwiGLU's mul, no longer covered
    assert "\\begin{equation" not in other and not re.search(r"(?<!\\)\$", other)  # no invented formula
    assert tt("dropout") in other and tt("split") in other  # plumbing is named, not described
    for gone in ("SwiGLU", "SiLU", "Rotary", "rotary"):  # the renamed ops and block lose their equations
        assert gone not in method, gone
    assert "\\paragraph{Attention" in method and "RMS normalisation" in method  # the known ones keep theirs
    assert tt("expert_mix") in method  # the unknown block is listed by name in the tables
    training = str(files["paper/sections/training.tex"])
    assert f"no loss equation for {tt('score_matching')}" in training
    assert f"the loss {tt('mystery_loss')}" in training and tt("tm_score") in training
    main = str(files["paper/main.tex"])
    assert ": an attention-based and convolutional network for text-to-text protein folding," in main
    assert tt("std.bio.mystery_net") in str(files["paper/sections/abstract.tex"])
    assert "pipeline_tag" not in str(files["MODEL_CARD.md"])  # no tag is guessed for an unknown task


def test_other_operations_never_crash_on_new_primitives() -> None:
    from metagen_backends.latex.equations import component_equations, other_operations
    from metagen_backends.latex.escape import tt

    new = ["conv1d", "conv3d", "groupnorm", "lstm", "gru", "cross_attention", "scatter_add", "mamba_scan"]
    ops: dict[str, list[dict[str, Any]]] = {op: [{}] for op in new}
    ops["sdpa"] = [{"causal": True}]  # an attention node without head counts must not crash either
    eqs = component_equations(ops, {"std.moe.router", "std.unet.down_block"}, tied=False)
    assert [e.title for e in eqs] == ["Attention"]
    covered = {op for e in eqs for op in e.ops}
    text = other_operations(ops, covered)
    for op in new:
        assert f"\\item {tt(op)}: " in text, op
    assert tt("sdpa") not in text
    assert other_operations({"add": [{}]}, {"add"}) == ""


# ------------------------------------------------------------------ escaping, without TeX
def test_escaping_leaves_no_active_character() -> None:
    from metagen_backends.latex.escape import rm, tt

    nasty = "_ % # & $ ^ ~ { } \\ \\input{/etc/passwd} ^^5c \n\n\t \x00 é ☃ [opt]"
    for out in (tt(nasty), rm(nasty)):
        assert "\\input" not in out and "^^" not in out and "\n" not in out
        body = re.sub(r"\\(mgstr|char\d+|allowbreak|[_%#&${}]|ss|ae|AE|o|O|oe|OE|aa|AA|l|L|i|['`^~=u.\"Hvrc])", "", out)
        assert not re.search(r"[%#&$^~_\\]", body), body
        depth = 0
        for ch in re.sub(r"\\[{}]", "", out):
            depth += {"{": 1, "}": -1}.get(ch, 0)
            assert depth >= 0
        assert depth == 0


def test_nothing_from_a_spec_reaches_a_path_or_an_input(emitted: dict[str, Emitted]) -> None:
    for key in ("special_chars", "weird_name"):
        e = emitted[key]
        for rel, data in e.files.items():
            assert re.fullmatch(r"[A-Za-z0-9_./-]+", rel), rel
            assert "passwd" not in rel and "%" not in rel
            if rel.endswith(".tex"):
                assert isinstance(data, str)
                for m in re.finditer(r"\\(input|include|includegraphics)(\[[^\]]*\])?\{([^}]*)\}", data):
                    assert re.fullmatch(r"(sections|figures)/[a-z_0-9]+(\.pdf)?", m.group(3)), m.group(0)
                assert "\\write18" not in data and "\\immediate" not in data


# ------------------------------------------------------------------ numbers
def _graph_value(graph: dict[str, Any], key: str) -> Any:
    kind, _, arg = key.partition(":")
    nodes = graph["nodes"]

    def under(p: str | None, prefix: str) -> bool:
        return p is not None and (p == prefix or p.startswith(prefix + "."))

    if kind == "shape":
        node, i = arg.rsplit(":", 1)
        return next(n for n in nodes if n["id"] == node)["shapes"][0][int(i)]
    if kind == "block.count":
        return next(m for m in graph["modules"] if m["path"] == arg)["args"]["n"]
    mine = [n for n in nodes if n["op"] != "input" and under(n["module"] or n["scope"], arg)]
    if kind.startswith("block.own."):  # the nodes a block applies itself, outside its child modules
        mine = [n for n in mine if (n["module"] or n["scope"]) == arg]
        kind = "block." + kind.removeprefix("block.own.")
    if kind == "block.params":
        tied = {t["target"] for t in graph["ties"]}
        return sum(math.prod(s) for n in mine for w, s in n["weights"].items() if f"{n['module']}.{w}" not in tied)
    if kind == "block.flops":
        return sum(n["flops"] for n in mine)
    if kind == "block.flops_other":
        return sum(n["flops_other"] for n in mine)
    raise AssertionError(f"unknown graph key {key}")


def _strip_macros(tex: str, names: tuple[str, ...]) -> str:
    """Removes \\name[opt]{balanced} for each macro name."""
    out, i = [], 0
    pat = re.compile(r"\\(" + "|".join(names) + r")(\[[^\]]*\])?\{")
    while True:
        m = pat.search(tex, i)
        if not m:
            out.append(tex[i:])
            return "".join(out)
        out.append(tex[i:m.start()])
        j, depth = m.end(), 1
        while depth:
            if tex[j] == "\\":
                j += 2
                continue
            depth += {"{": 1, "}": -1}.get(tex[j], 0)
            j += 1
        i = j


@pytest.mark.parametrize("key", IDS)
def test_every_number_is_the_compilers(key: str, emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex.ledger import lookup

    from metagen_compiler.semantics.program import device_profiles

    e = emitted[key]
    report = json.loads(str(e.files["report.json"]))
    graph = json.loads(str(e.files["graph.json"]))
    devices = device_profiles(e.comp.program)
    prov = json.loads(str(e.files["paper/provenance.json"]))
    entries = {n["id"]: n for n in prov["numbers"]}
    assert entries
    for n in entries.values():
        if n["source"] == "report":
            expected = lookup(report, n["key"])
        elif n["source"] == "graph":
            expected = _graph_value(graph, n["key"])
        else:
            dev, field = n["key"].split(".", 1)
            expected = devices[dev][field]
        assert n["value"] == expected, n
        printed = float(n["text"].replace(",", "")) * n["scale"]
        tol = 0.5 * 10 ** -n["decimals"] * n["scale"] * (1 + 1e-9) + 1e-12 * abs(expected)
        assert abs(printed - expected) <= tol, n
    # every \mgnum in the paper is a ledger entry with the same text; tables hold no other digit
    for rel, data in e.files.items():
        if not rel.endswith(".tex"):
            continue
        assert isinstance(data, str)
        for m in re.finditer(r"\\mgnum\[(n\d+)\]\{([^{}]*)\}", data):
            assert m.group(2).replace("\\,", ",") == entries[m.group(1)]["text"], m.group(0)
        for t in re.finditer(r"\\begin\{(tabularx?)\}(.*?)\\end\{\1\}", data, re.DOTALL):
            body = t.group(2).split("\n", 1)[1]  # drop the column specification
            rest = _strip_macros(body, ("mgnum", "mgstr", "ref"))
            assert not re.search(r"\d", rest), (rel, rest)


def test_block_rows_sum_to_the_report(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex.blocks import Tree

    for key in IDS:
        comp = emitted[key].comp
        tree = Tree(comp.graph)
        est = comp.graph.g.graph["estimates"]
        rows = [tree.row(s, 0) for s in tree.top()]
        assert sum(r.params for r in rows) == est["params"], key
        assert sum(r.flops for r in rows) == est["flops_forward"], key
        assert sum(r.flops_other for r in rows) == est["flops_other"], key


def test_block_tables_add_up(emitted: dict[str, Emitted]) -> None:
    """In every block table, a block's rows (children and its own operations) add up to the block."""
    from metagen_backends.latex.blocks import Tree

    checked = 0
    for key in IDS:
        tree = Tree(emitted[key].comp.graph)
        groups = [(tree.row(s, 0), tree.inside(s), tree.own_row(s, 1)) for s in tree.top() if tree.children(s)]
        groups += [(tree.row(r.first, 0), tree.inside(r.first), tree.own_row(r.first, 1))
                   for r in tree.repeated() if r.first]
        for block, kids, own in groups:
            rows = kids + ([own] if own else [])
            for field in ("params", "flops", "flops_other"):
                assert sum(getattr(r, field) for r in rows) == getattr(block, field), (key, block.path, field)
            checked += 1
    assert checked >= 3 * len(IDS)


def test_evaluation_prints_no_number_without_measurements(emitted: dict[str, Emitted]) -> None:
    for key in IDS:
        text = str(emitted[key].files["paper/sections/evaluation.tex"])
        assert "\\mgnum" not in text
        assert not re.search(r"\d", _strip_macros(text, ("mgstr", "ref"))), key


def test_measurements_appear_with_their_provenance(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex import build_paper

    e = emitted["gpt2"]
    report = json.loads(str(e.files["report.json"]))
    report["measurements"] = [{"metric": "perplexity", "value": 29.41, "dataset": "OpenWebText", "split": "val",
                               "source": "run 7f3a (train.py, commit abc123)"}]
    files = build_paper(e.comp, report)
    text = str(files["paper/sections/evaluation.tex"])
    prov = json.loads(str(files["paper/provenance.json"]))["numbers"]
    entry = next(n for n in prov if n["key"] == "measurements.0.value")
    assert entry["value"] == 29.41 and entry["text"] == "29.41"
    assert f"\\mgnum[{entry['id']}]{{29.41}}" in text
    assert "run 7f3a" in text.replace("{\\char", "")
    assert "No model has been trained" not in str(files["paper/sections/abstract.tex"])
    card = str(files["MODEL_CARD.md"])
    meta = yaml.safe_load(card.split("---\n")[1])
    result = meta["model-index"][0]["results"][0]
    assert result["metrics"] == [{"type": "perplexity", "value": 29.41, "name": "perplexity"}]
    assert result["dataset"] == {"name": "OpenWebText", "type": "OpenWebText", "split": "val"}
    assert result["task"] == {"type": "text-generation"} and "run 7f3a" in result["source"]["name"]
    assert "| `perplexity` | 29.41 | `OpenWebText / val` | `run 7f3a (train.py, commit abc123)` |" in card
    assert "Not evaluated" not in card and "Untrained" not in card


def test_limitations_list_unmet_constraints_fallbacks_and_warnings(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex import build_paper
    from metagen_backends.latex.escape import tt

    e = emitted["gpt2"]
    report = json.loads(str(e.files["report.json"]))
    lat = next(i for i, c in enumerate(report["constraints"]) if c["kind"] == "latency")
    report["constraints"][lat]["status"] = "violated"
    report["constraints"].append({"kind": "memory", "op": "<=", "value": "2GB", "device": None,
                                  "basis": "estimate", "status": "not-checked"})
    msg = "modality `lidar_50%` is unknown; using `3d` \\input{x}"
    report["warnings"] = [{"code": "W001", "message": msg}, {"code": "W002", "message": "latency is an estimate"}]
    lim = str(build_paper(e.comp, report)["paper/sections/limitations.tex"])
    actual = json.loads(str(e.files["report.json"]))["constraints"][lat]["actual"]
    assert "\\item Unmet constraint: " + tt("latency < 50ms on consumer_gpu") in lim
    assert "{7.664}\\,ms (estimate)" in lim and f"{actual * 1e3:.3f}" == "7.664"
    assert "\\item Not checked: " + tt("memory <= 2GB") in lim
    assert f"\\item Fallback taken ({tt('W001')}), as the compiler reported it: {tt(msg)}" in lim
    assert f"\\item Compiler warning {tt('W002')}, as reported: {tt('latency is an estimate')}" in lim
    assert "raised no warning" not in lim and "Every checked constraint holds" not in lim


def test_calibrated_estimator_error_is_printed_as_a_measurement(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex import build_paper

    e = emitted["gpt2"]
    report = json.loads(str(e.files["report.json"]))
    report["latency"]["calibration"] = {"consumer_gpu": {"relative_error": 0.183, "source": "calibrate run 12"}}
    files = build_paper(e.comp, report)
    prov = json.loads(str(files["paper/provenance.json"]))["numbers"]
    entries = [n for n in prov if n["key"] == "latency.calibration.consumer_gpu.relative_error"]
    assert entries and all(n["basis"] == "measurement" and n["text"] == "18.30" for n in entries)
    for sec in ("complexity", "limitations"):
        text = str(files[f"paper/sections/{sec}.tex"])
        assert "\\mgnum[" in text and "{18.30}\\,\\%" in text and "has not been calibrated" not in text, sec
    card = str(files["MODEL_CARD.md"])
    assert "measured relative error: 18.30% on `consumer_gpu` (calibrate run 12)" in card
    assert "not calibrated" in str(e.files["MODEL_CARD.md"])


# ------------------------------------------------------------------ determinism, goldens, model card
def test_figures_are_byte_identical_across_runs(emitted: dict[str, Emitted]) -> None:
    """A second emission in a fresh process (other hash seed) gives the same bytes, figures included."""
    from metagen_backends.latex import emit

    again = emit(compile_path(ROOT / "examples" / "gpt2.msl"))
    first = {k: v for k, v in emitted["gpt2"].files.items() if k in again}
    assert again == first
    code = (
        "import hashlib, json, sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from pathlib import Path\n"
        "from conftest import compile_path\n"
        "from metagen_backends.latex import emit\n"
        "files = emit(compile_path(Path('examples/gpt2.msl')))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'matplotlib'))\n"
        "print(json.dumps({'bad': bad, 'sha': {k: hashlib.sha256(v if isinstance(v, bytes) else v.encode())"
        ".hexdigest() for k, v in files.items()}}))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONHASHSEED": "977"}, check=True)
    got = json.loads(r.stdout)
    assert got["bad"] == []  # the backend never imports torch, onnx or a plotting library
    figures = [k for k in first if k.startswith("paper/figures/")]
    assert len([f for f in figures if f.endswith(".tex")]) >= 4
    for k, v in first.items():
        assert got["sha"][k] == hashlib.sha256(v if isinstance(v, bytes) else v.encode()).hexdigest(), k
    assert all(isinstance(first[k], str) for k in figures)  # pgfplots source, drawn by TeX


def test_roofline_labels_never_overlap() -> None:
    """Labels are placed in points from the fixed axis box: none overlap, even for points that coincide."""
    import re as _re

    from metagen_backends.latex import figures as f

    labels = [(f"op{i}" * (1 + i % 3), 10.0 ** (i / 7), 1e11) for i in range(12)] + [("same", 1.0, 1e11)] * 3
    nodes = [n for n in f._label_nodes(labels, 1e9, 1e13) if n.startswith("\\node")]
    assert len(nodes) == len(labels)
    boxes = []
    for n, (text, x, y) in zip(nodes, sorted(labels, key=lambda t: t[1]), strict=True):
        dx, dy = (float(v) for v in _re.search(r"xshift=(-?[\d.]+)pt, yshift=(-?[\d.]+)pt", n).groups())
        px = f._W * (math.log10(x) - math.log10(f._XMIN)) / (math.log10(f._XMAX) - math.log10(f._XMIN))
        py = f._H * (math.log10(y) - 9) / 4
        w = f._CHAR * len(text)
        x0 = px + dx if "north west" in n else px + dx - w
        boxes.append((x0, x0 + w, py + dy - f._LINE, py + dy))
    for i, a in enumerate(boxes):
        for b in boxes[:i]:
            assert not (a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]), (a, b)


@pytest.mark.parametrize("key", ["gpt2", "resnet50", "special_chars"])
def test_paper_sources_golden(key: str, emitted: dict[str, Emitted], text_snapshot) -> None:  # type: ignore[no-untyped-def]
    files = emitted[key].files
    names = ["paper/main.tex", *sorted(k for k in files if k.startswith("paper/sections/")),
             *sorted(k for k in files if k.startswith("paper/figures/"))]
    text = "".join(f"=== {n}\n{files[n]!s}" for n in names)
    assert text == text_snapshot


def test_paper_layout(emitted: dict[str, Emitted]) -> None:
    files = emitted["gpt2"].files
    for rel in ("paper/main.tex", "paper/references.bib", "paper/Makefile", "paper/metagen.sty",
                "paper/provenance.json", "paper/figures/block_graph.tex", "paper/figures/params_per_block.tex",
                "paper/figures/flops_per_block.tex", "paper/figures/roofline_1.tex", "MODEL_CARD.md"):
        assert rel in files, rel
    assert "latexmk" in str(files["paper/Makefile"]) and "bibtex" in str(files["paper/Makefile"])
    assert "-no-shell-escape" in str(files["paper/Makefile"])


def test_bibliography_is_curated(emitted: dict[str, Emitted]) -> None:
    from metagen_backends.latex.bibliography import database

    db = database()
    for key in IDS:
        files = emitted[key].files
        cited = set()
        for rel, data in files.items():
            if rel.endswith(".tex"):
                for m in re.finditer(r"\\citep?\{([^}]*)\}", str(data)):
                    cited |= set(m.group(1).split(","))
        bib = str(files["paper/references.bib"])
        in_bib = set(re.findall(r"^@\w+\{([^,]+),", bib, re.MULTILINE))
        assert cited and cited == in_bib, key
        assert all(k in db for k in cited)
    for entry in db.values():
        assert re.search(r"year\s*=\s*\{\d{4}\}", entry) and ("author" in entry or "editor" in entry)


@pytest.mark.parametrize("key", ["gpt2", "resnet50", "special_chars"])
def test_model_card(key: str, emitted: dict[str, Emitted]) -> None:
    e = emitted[key]
    card = str(e.files["MODEL_CARD.md"])
    report = json.loads(str(e.files["report.json"]))
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "pytorch"
    assert meta["model-index"] == [{"name": report["name"], "results": []}]
    assert "metagenc" in meta["tags"]
    assert f"{report['params']:,}" in card
    if key == "gpt2":
        assert meta["pipeline_tag"] == "text-generation" and meta["datasets"] == ["OpenWebText"]
    if key == "resnet50":
        assert meta["pipeline_tag"] == "image-classification"
    if key == "special_chars":
        assert meta["license"] == "mit"
        prose = re.sub(r"(`+).*?\1", "", card.split("---\n", 2)[2])  # code spans are literal in Markdown
        assert "<" not in prose  # no raw HTML from the spec


def test_parameters_the_model_does_not_use_are_marked(emitted: dict[str, Emitted]) -> None:
    """A decoder compiled for generation does not read `num_classes` or `outputs` (only its classification and
    regression heads do)."""
    from metagen_backends.latex.escape import tt

    method = str(emitted["gpt2"].files["paper/sections/method.tex"])
    assert tt("num_classes") + "$^{*}$ &" in method
    assert tt("outputs") + "$^{*}$ &" in method
    assert f"read only by the family's {tt('classification')} and {tt('regression')} heads" in method
    assert tt("vocab") + " &" in method  # read by the encoder and the head: not marked
    for key in ("resnet50", "vit_b_16"):  # classifiers read num_classes: not marked
        assert tt("num_classes") + " &" in str(emitted[key].files["paper/sections/method.tex"]), key
