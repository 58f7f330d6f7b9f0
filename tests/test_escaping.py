"""Hostile text through every generated file (issue 15, "Security first").

Input file names (a Python-injection payload, a Windows path, newlines, bytes that are not UTF-8, bidi
controls) and spec strings (LaTeX commands, Markdown and HTML, DOT quotes) are compiled end to end through
the CLI with every installed backend; each output is parsed in its own language and must hold the text
as data. metagen_compiler/escape.py has one escaping function per target language; a scan of the
emitters' source fails when spec text reaches an f-string, `.format` or `+` without going through one.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metagen_compiler.escape import (
    dot_str,
    json_text,
    latex_rm,
    latex_tt,
    md_code,
    md_text,
    onnx_str,
    py_comment,
    py_doc,
    py_str,
    yaml_str,
)

PAYLOAD = 'e"""+__import__("os").system("touch pwned")+"""x.msl'
# file names: what each one attacks
HOSTILE_NAMES: dict[str, str | bytes] = {
    "payload": PAYLOAD,
    "windows": "C:\\Users\\me\\Nightly\\x.msl",  # \U, \N, \x: escapes a raw docstring would read
    "newlines": "a\nb\r\"\"\"c.msl",
    "markup": "$_%#{}~^&\\input{x}`<script>`'q'\"dot\" \\N\\G.msl",
    "not_utf8": b"bad\xff\xfe\"\"\".msl",  # decodes to lone surrogates
    "bidi": "\u202eevil\u2028.msl",
}
HOSTILE_TEXTS = [
    PAYLOAD, "C:\\Users\\me\\x.msl", "a\nb\r\nc", "\\input{/etc/passwd}", "\\write18{touch /tmp/pwned}",
    "% _ # $ { } ~ ^ &", "`code` ``x``", "<script>alert(1)</script>", 'dot "quote" \\N \\G \\l \\',
    "\x00\x1b\x7f\x0b\x0c", "\u202e\u2028\u0085", "\udcff\udc80", "'''", '"', "\\", "",
    "\u00e9 \u2603 \u4e2d \U0001f600",
    '"""', "x\\", "# comment\nimport os",
]
BACKENDS = ["pytorch", "latex"] + (["onnx"] if importlib.util.find_spec("onnx_ir") and importlib.util.find_spec("numpy")
                                   else [])
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_TEX = shutil.which("pdflatex") is not None

# A small spec with blocks of its own (their docstrings name the file) and hostile strings wherever the
# language takes a string: a device name and metadata.
SPEC = r'''msl 1
import std.layers
import std.transformer

device evil_box {
  name = "<script>alert(1)</script> \"\"\" ` \\input{/etc/passwd} \\write18{touch pwned} % _ # $ {} ~ ^"
  fp32 = 10e12; bf16 = 20e12; bandwidth = 500e9; memory = 16GB; overhead = 10us; efficiency = 0.5
}

block evil_block(d_model: int) {
  input x
  h = x >> ln: layernorm(d_model)
  return x + (h >> mlp: gelu_mlp(d_model))
}

block evil_stack(layers: int, d_model: int) {
  input x
  return x >> blocks: repeat(layers) evil_block(d_model) >> ln_f: layernorm(d_model)
}

family evil_family(vocab: int = 256, context: int = 16, layers: int = 1, d_model: int = 32) {
  encoder text = token_embedding(vocab, d_model, context)
  backbone = evil_stack(layers, d_model)
  head generation = lm_head(d_model, vocab)
}

model evil {
  modality text -> text
  task generation
  objective autoregressive
  constraints { params <= 1M; latency < 5ms on evil_box }
  architecture evil_family
  metadata {
    license = "mit\"\"\"<b>"
    payload = "e\"\"\"+__import__(\"os\").system(\"touch pwned\")+\"\"\""
    latex = "\\input{/etc/passwd} \\write18{touch /tmp/pwned} \\immediate\\write18{id} % _ # $ {} ~ ^ &"
    markdown = "<script>alert(1)</script> | pipe | `tick` ``two`` *em* [link](http://x) # h"
    dot = "\"; evil -> x [label=\"\\N\\G\" \\"
    lines = "first\nsecond\rthird\tfourth"
    data = ["<img src=x onerror=alert(1)>", "a|b", "`q`"]
  }
}
'''
METADATA_NEEDLES = ["<script>alert(1)</script>", "\\input{/etc/passwd}", "\\write18", '+__import__("os")']


# ------------------------------------------------------------------ parsers of the outputs
_DOT_TOKEN = re.compile(r'[ \t\n]+|"(?:[^"\\]|\\.)*"|->|[{}\[\];=,]|[A-Za-z_][A-Za-z_0-9]*|.', re.DOTALL)


def dot_unquote(tok: str) -> str:
    """A quoted DOT string as Graphviz reads it as a label: `\\"` is a quote, backslash-newline a
    continuation, `\\\\` one backslash. Any other escape (`\\N`, `\\l`...) would be a Graphviz directive,
    which text from a spec must never become."""
    assert tok.startswith('"') and tok.endswith('"') and len(tok) >= 2, tok

    def rep(m: re.Match[str]) -> str:
        c = m.group(1)
        assert c in '"\\\n', f"a DOT escape sequence \\{c!r} in {tok!r}"
        return "" if c == "\n" else c

    return re.sub(r"\\(.)", rep, tok[1:-1], flags=re.DOTALL)


def parse_dot(text: str) -> tuple[str, dict[str, str], list[tuple[str, str]]]:
    """graph.dot as the backend writes it: (graph name, {node: label}, edges); fails on anything else."""
    toks = [t for t in (m.group(0) for m in _DOT_TOKEN.finditer(text)) if not t.isspace()]
    assert toks[:1] == ["digraph"] and toks[2] == "{" and toks[-1] == "}", toks[:3]
    name = dot_unquote(toks[1])
    body = toks[3:-1]
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str]] = []
    stmt: list[str] = []
    for t in body:
        if t != ";":
            stmt.append(t)
            continue
        if len(stmt) == 3 and stmt[1] == "=":
            pass  # rankdir=TB
        elif stmt[:2] == ["node", "["] and stmt[-1] == "]":
            pass
        elif len(stmt) == 6 and stmt[1:4] == ["[", "label", "="] and stmt[5] == "]":
            nodes[dot_unquote(stmt[0])] = dot_unquote(stmt[4])
        elif len(stmt) == 3 and stmt[1] == "->":
            edges.append((dot_unquote(stmt[0]), dot_unquote(stmt[2])))
        else:
            raise AssertionError(f"not a statement of graph.dot: {stmt}")
        stmt = []
    assert not stmt, stmt
    assert all(a in nodes and b in nodes for a, b in edges)
    return name, nodes, edges


def doc_value(s: str) -> str:
    """What a docstring through `py_doc` reads: the text, a lone surrogate as its escape (`\\udcff`)."""
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", s)


def _module_doc(path: str) -> str:
    return f"evil: generated by metagenc from {doc_value(path)}.\n\n"


def _no_nan(c: str) -> Any:
    raise AssertionError(f"{c} is not JSON")


def load_json(text: str) -> Any:
    return json.loads(text, parse_constant=_no_nan)


def md_outside_code(line: str) -> str:
    """A Markdown line less its code spans (a run of n backticks up to the next run of exactly n)."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append(line[i:i + 2])
            i += 2
            continue
        if line[i] == "`":
            n = len(line[i:]) - len(line[i:].lstrip("`"))
            m = re.compile(r"(?<!`)" + "`" * n + r"(?!`)").search(line, i + n)
            if m is not None:
                i = m.end()
                continue
            out.append(line[i:i + n])
            i += n
            continue
        out.append(line[i])
        i += 1
    return "".join(out)


def _table_cells(line: str) -> int:
    """Unescaped `|` in a table row: GFM splits cells at each one, inside a code span too."""
    return len(re.findall(r"(?<!\\)\|", line))


# ------------------------------------------------------------------ the escaping functions
@pytest.mark.parametrize("s", HOSTILE_TEXTS)
def test_python_escapes_round_trip(s: str) -> None:
    assert ast.literal_eval(py_str(s)) == s
    assert ast.literal_eval(py_str(s, quote='"')) == s
    doc = py_doc(s)
    assert ast.literal_eval('"""' + doc + '"""') == doc_value(s)
    assert ast.literal_eval('"""' + doc + ' """') == doc_value(s) + " "
    assert ast.literal_eval('"""x' + doc + '"""') == "x" + doc_value(s)
    ns: dict[str, Any] = {}
    exec(compile('class A:\n    """' + doc + '"""\n', "<doc>", "exec"), ns)  # noqa: S102 - CPython can build the class
    assert ns["A"].__doc__ == doc_value(s)
    assert len(('"""' + doc + '"""').splitlines()) == 1
    src = f"x = 1  # {py_comment(s)}\n"
    src.encode("utf-8")  # no lone surrogate: the file can be written
    compile(src, "<test>", "exec")  # no NUL, no newline that ends the comment
    comments = [t for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT]
    assert len(comments) == 1 and len(src.splitlines()) == 1


@pytest.mark.parametrize("s", HOSTILE_TEXTS)
def test_markup_escapes_hold_the_text(s: str) -> None:
    # YAML: a double-quoted scalar that reads back as the text (a lone surrogate is no character: U+FFFD)
    assert yaml.safe_load(yaml_str(s)) == re.sub("[\ud800-\udfff]", "\ufffd", s)
    assert yaml_str(s).isascii()
    # JSON
    assert json.loads(json_text(s)) == s and json_text(s).isascii()
    # Markdown: one line; no HTML; every inline-markup character escaped; a code span closes where it should
    text = md_text(s)
    assert len(text.splitlines()) <= 1 and "<" not in text and ">" not in text
    plain = re.sub(r"\\.", "", text)
    assert not set(plain) & set("\\`*_[]#|~!{}"), text
    span = md_code(s)
    fence = len(span) - len(span.lstrip("`"))
    assert span.endswith("`" * fence) and "`" * fence not in span[fence:-fence].replace("`" * (fence + 1), "")
    assert len(span.splitlines()) == 1 and md_outside_code(span) == ""
    # DOT: one quoted string, ended where it should be, read back as the text where it is printable
    q = dot_str(s)
    assert _DOT_TOKEN.match(q).group(0) == q  # type: ignore[union-attr]
    if all(c.isprintable() or c == "\n" for c in s):
        assert dot_unquote(q) == s
    q.encode("utf-8")
    # ONNX strings: valid UTF-8, no control character
    o = onnx_str(s)
    o.encode("utf-8")
    assert all(c.isprintable() or c in "\n\t" for c in o)
    # LaTeX: ASCII, and once the escapes are taken out no active character or command is left
    for tex in (latex_tt(s), latex_rm(s)):
        assert tex.isascii()
        rest = re.sub(r"\\(char[0-9]+|mgstr|allowbreak|ss|ae|AE|oe|OE|aa|AA|[oOlLi](?![A-Za-z])|[_%#&${}])|"
                      r"\\[`'^~=u.\"rHvc]\{", "", tex)
        assert not set(rest) & set("\\%#$&^~_"), (s, tex)
        assert tex.count("{") == tex.count("}")


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text())
def test_escapes_hold_any_text(s: str) -> None:
    assert ast.literal_eval('"""' + py_doc(s) + '"""') == doc_value(s)
    assert ast.literal_eval(py_str(s, quote='"')) == s
    compile(f"x = 1  # {py_comment(s)}\n", "<test>", "exec")
    assert len(f"# {py_comment(s)}".splitlines()) == 1
    assert json.loads(json_text(s)) == s
    assert yaml.safe_load(yaml_str(s)) == re.sub("[\ud800-\udfff]", "\ufffd", s)
    q = dot_str(s)
    assert _DOT_TOKEN.match(q).group(0) == q  # type: ignore[union-attr]
    onnx_str(s).encode("utf-8")


# ------------------------------------------------------------------ end to end through the CLI
@dataclass
class Compiled:
    key: str
    path: str  # the input path as the compiler saw it (a str; lone surrogates for bytes that are not UTF-8)
    out: Path  # OUT/evil/
    rc: int
    stderr: str

    def ok(self) -> Compiled:
        assert self.rc == 0, (self.key, self.stderr[-2000:])
        return self


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Compiled]:
    out: dict[str, Compiled] = {}
    for key, name in HOSTILE_NAMES.items():
        work = tmp_path_factory.mktemp(f"spec_{key}")
        fname = os.fsdecode(name)
        (work / fname).write_text(SPEC, encoding="utf-8")
        # ONNX strings hold no path: the onnx backend runs for one name only (it is the slow one to import)
        backends = BACKENDS if key == "payload" else [b for b in BACKENDS if b != "onnx"]
        r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", fname, "-o", "out", "--backend",
                            ",".join(backends)], cwd=work, capture_output=True, text=True, errors="replace",
                           env={**os.environ, "PYTHONHASHSEED": "0"}, check=False)
        out[key] = Compiled(key, fname, work / "out" / "evil", r.returncode, r.stderr)
    return out


def test_model_py_holds_the_path_as_data(compiled: dict[str, Compiled]) -> None:
    for c in compiled.values():
        c.ok()
        src = (c.out / "model.py").read_text(encoding="utf-8")
        tree = ast.parse(src)  # a Windows path or a quote in the name made this a SyntaxError
        assert ast.get_docstring(tree, clean=False).startswith(_module_doc(c.path))
        calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
        assert "__import__" not in calls and not any(isinstance(n, ast.Attribute) and n.attr == "system"
                                                     for n in ast.walk(tree))
        blocks = [ast.get_docstring(n, clean=False) for n in tree.body if isinstance(n, ast.ClassDef)
                  and n.name in ("EvilBlock", "EvilStack")]
        assert len(blocks) == 2 and all(f"; {doc_value(c.path)}:" in (d or "") for d in blocks), blocks
        # no line break other than \n (a \r, \x0c or U+2028 from a path would split a comment or docstring)
        assert all(len(line.splitlines()) <= 1 for line in src.split("\n"))


@pytest.mark.skipif(not HAVE_TORCH, reason="importing model.py needs torch")
def test_importing_model_py_runs_nothing(compiled: dict[str, Compiled], tmp_path: Path) -> None:
    code = ("import importlib.util, json, sys\n"
            "docs = []\n"
            "for i, p in enumerate(sys.argv[1:]):\n"
            "    s = importlib.util.spec_from_file_location(f'm{i}', p)\n"
            "    m = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            "    docs.append(m.__doc__)\n"
            "print(json.dumps(docs))\n")
    paths = [str(c.ok().out / "model.py") for c in compiled.values()]
    r = subprocess.run([sys.executable, "-c", code, *paths], cwd=tmp_path, capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr
    docs = json.loads(r.stdout)
    assert [d.startswith(_module_doc(c.path)) for d, c in zip(docs, compiled.values(), strict=True)] == [True] * 6
    assert list(tmp_path.iterdir()) == []  # the payload's `touch pwned` never ran
    assert not any((c.out.parent.parent / "pwned").exists() for c in compiled.values())


def test_graph_files_parse_and_hold_names_as_data(compiled: dict[str, Compiled]) -> None:
    for c in compiled.values():
        c.ok()
        name, nodes, edges = parse_dot((c.out / "graph.dot").read_text(encoding="utf-8"))
        assert name == "evil" and nodes and edges
        assert all(f" {node}\n" in label for node, label in nodes.items())
        graph = load_json((c.out / "graph.json").read_text(encoding="utf-8"))
        spans = [n["span"] for n in graph["nodes"] if n["span"] and not n["span"].startswith("<stdlib>")]
        assert spans and all(s.startswith(c.path + ":") for s in spans)
        report = load_json((c.out / "report.json").read_text(encoding="utf-8"))
        assert report["metadata"]["payload"] == 'e"""+__import__("os").system("touch pwned")+"""'
        assert report["metadata"]["lines"] == "first\nsecond\\rthird\tfourth"  # MSL reads \n and \t, keeps \\r


def test_model_card_holds_the_text_literally(compiled: dict[str, Compiled]) -> None:
    card = (compiled["payload"].ok().out / "MODEL_CARD.md").read_text(encoding="utf-8")
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == 'mit"""<b>' and meta["datasets"] == ["<img src=x onerror=alert(1)>", "a|b", "`q`"]
    header = None
    for line in body.split("\n"):
        rest = md_outside_code(line)
        assert "<" not in rest and ">" not in rest.replace("->", ""), line  # no HTML outside code spans
        if line.startswith("|"):
            header = _table_cells(line) if header is None else header
            assert _table_cells(line) == header, line  # no cell split by a `|` from the spec
        else:
            header = None
    assert "\\input{/etc/passwd}" in card  # inside a code span: printed, not run


def test_latex_escapes_the_text(compiled: dict[str, Compiled]) -> None:
    paper = compiled["payload"].ok().out / "paper"
    for tex in paper.rglob("*.tex"):
        text = tex.read_text(encoding="utf-8")
        assert text.isascii(), tex
        for needle in ("\\input{/etc", "\\write18", "\\immediate", "<script>", "__import__"):
            assert needle not in text, (tex, needle)
    appendix = (paper / "sections" / "appendix.tex").read_text(encoding="utf-8")
    assert latex_tt("\\input{/etc/passwd} \\write18{touch /tmp/pwned}")[len("\\mgstr{"):-1] in appendix


@pytest.mark.skipif(not HAVE_TEX, reason="TeX Live (pdflatex) is not installed")
def test_latex_builds_and_reads_no_file(compiled: dict[str, Compiled]) -> None:
    paper = compiled["payload"].ok().out / "paper"
    env = {**os.environ, "openin_any": "p", "shell_escape": "f"}
    r = subprocess.run(["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "main.tex"],
                       cwd=paper, capture_output=True, text=True, errors="replace", env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stdout[-3000:]
    log = (paper / "main.log").read_text(encoding="latin-1")
    assert "(/etc/passwd" not in log and "root:x:0:0" not in log  # TeX logs every file it opens as `(path`
    assert not (paper / "pwned").exists() and not Path("/tmp/pwned").exists()


@pytest.mark.skipif("onnx" not in BACKENDS, reason="the onnx backend's dependencies are not installed")
def test_onnx_metadata(compiled: dict[str, Compiled]) -> None:
    onnx = pytest.importorskip("onnx")
    m = onnx.load(str(compiled["payload"].ok().out / "model.onnx"))
    onnx.checker.check_model(m)
    props = {p.key: p.value for p in m.metadata_props}
    assert props["metagen.model"] == "evil" and props["metagen.family"] == "evil_family"
    assert m.graph.doc_string.startswith("evil: text -> generation, family evil_family")


# ------------------------------------------------------------------ any text, in process
def _msl_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@settings(max_examples=15, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.text(st.characters(exclude_characters="\x00"), min_size=1, max_size=40),  # no NUL in a real path
       text=st.text(max_size=40))
def test_any_path_and_string_compile_to_valid_outputs(path: str, text: str) -> None:
    """Random Unicode (surrogates, controls, quotes) as the input path and a metadata string: model.py
    parses and holds the path in its docstring, graph.dot and the JSON files parse, the card's front
    matter loads, the paper prints the string through the LaTeX escaper."""
    from metagen_compiler.cli import write_outputs
    from metagen_compiler.driver import compile_source
    from metagen_compiler.span import SourceFile

    spec = SPEC.replace('license = "mit\\"\\"\\"<b>"', f"license = {_msl_string(text)}")
    comp = compile_source(SourceFile(path, spec))
    assert not comp.bag.has_errors, [d.message for d in comp.bag.sorted()]
    _, files = write_outputs(comp, Path("unused"), ["pytorch", "latex"])
    for data in files.values():
        if isinstance(data, str):
            data.encode("utf-8")  # every file can be written
    tree = ast.parse(str(files["model.py"]))
    assert ast.get_docstring(tree, clean=False).startswith(_module_doc(path))
    ns: dict[str, Any] = {}
    exec(compile("class A:\n    " + '"""' + py_doc(path) + '"""', "<doc>", "exec"), ns)  # a class can hold it
    assert parse_dot(str(files["graph.dot"]))[0] == "evil"
    assert load_json(str(files["report.json"]))["metadata"]["license"] == text
    load_json(str(files["graph.json"]))
    load_json(str(files["paper/provenance.json"]))
    meta = yaml.safe_load(str(files["MODEL_CARD.md"]).split("---\n")[1])
    if text.strip():
        assert meta["license"] == re.sub("[\ud800-\udfff]", "\ufffd", text.strip())


# ------------------------------------------------------------------ no other route
# Text a spec controls, as the emitters reach it: paths (spans, sources), metadata, descriptions, names
# of the spec and its family, report fields that hold names.
_TAINT_ATTRS = {"path", "source", "metadata", "description", "preset", "qualname", "dotted", "message", "doc"}
_TAINT_KEYS = {"name", "metadata", "source", "message", "family", "preset", "dataset", "metric", "unit", "split",
               "title", "reference", "description", "span"}
# Calls whose result is safe in the output they build: the escapers (metagen_compiler/escape.py and the
# backends' short names for them), identifier makers (only [A-Za-z0-9_] out), json.dumps, numbers.
_SAFE = {"py_str", "py_doc", "py_comment", "latex_tt", "latex_tt_body", "latex_rm", "latex_value", "md_text", "md_code",
         "yaml_str", "json_value", "json_text", "dot_str", "onnx_str", "tt", "tt_body", "rm", "spec_str", "code", "md",
         "_y", "q", "dumps", "py_ident", "attr_ident", "camel", "state_dict_key", "_path", "short_target", "len",
         "int", "float"}
# What is scanned: every emitter of the backends, and graph.py's DOT writer (its JSON is data for json.dumps;
# dump_graph prints a debugging dump, not a file).
_SCANNED: dict[str, tuple[str, ...] | None] = {
    **{p.relative_to(ROOT).as_posix(): None for p in sorted((ROOT / "backends").rglob("*.py"))},
    "metagen_compiler/ir/graph.py": ("graph_dot",),
}


def _call_name(c: ast.Call) -> str | None:
    f = c.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None


def _tainted(e: ast.AST) -> str | None:
    stack = [e]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Call) and _call_name(n) in _SAFE:
            continue
        if isinstance(n, ast.IfExp):  # the test picks a branch; it is not printed
            stack += [n.body, n.orelse]
            continue
        if isinstance(n, ast.Compare):
            continue
        if isinstance(n, ast.Attribute) and (n.attr in _TAINT_ATTRS or (
                n.attr == "name" and ast.unparse(n.value).split(".")[-1] in ("spec", "family"))):
            return ast.unparse(n)
        if isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and n.slice.value in _TAINT_KEYS:
            return ast.unparse(n)
        stack.extend(ast.iter_child_nodes(n))
    return None


def unescaped_routes(src: str, where: str, functions: tuple[str, ...] | None = None) -> list[str]:
    """Each place in `src` where spec text is formatted into a string (f-string, `.format`, `+` or `%`
    with a string) without an escaper around it. Allowed without one: ledger keys (provenance.json
    data), exception and assert messages, and a line marked `# escaped: <by whom>`."""
    tree = ast.parse(src)
    parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
    lines = src.splitlines()
    roots: list[ast.AST] = [tree] if functions is None else [
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in functions]
    out = set()
    for root in roots:
        for n in ast.walk(root):
            vals: list[ast.expr] = []
            if isinstance(n, ast.FormattedValue):
                vals = [n.value]
            elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "format":
                vals = [*n.args, *(k.value for k in n.keywords)]
            elif isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Add, ast.Mod)) and any(
                    isinstance(x, ast.JoinedStr) or (isinstance(x, ast.Constant) and isinstance(x.value, str))
                    for x in (n.left, n.right)):
                vals = [x for x in (n.left, n.right) if not isinstance(x, (ast.Constant, ast.JoinedStr))]
            for v in vals:
                t = _tainted(v)
                if t is None:
                    continue
                a: ast.AST = n
                ok = False
                while a in parents:
                    child, a = a, parents[a]
                    ok = ((isinstance(a, ast.Call) and _call_name(a) in _SAFE)
                          or (isinstance(a, ast.Call) and isinstance(a.func, ast.Attribute)
                              and ast.unparse(a.func.value).endswith("ledger") and bool(a.args) and child is a.args[0])
                          or isinstance(a, (ast.Raise, ast.Assert)))
                    if ok:
                        break
                if not ok and "# escaped:" not in lines[n.lineno - 1]:
                    out.add(f"{where}:{n.lineno}: `{t}` reaches `{ast.unparse(v)[:60]}` unescaped")
    return sorted(out)


def test_no_spec_text_reaches_an_output_unescaped() -> None:
    found = []
    for rel, functions in _SCANNED.items():
        found += unescaped_routes((ROOT / rel).read_text(encoding="utf-8"), rel, functions)
    assert not found, "\n".join(found)


def test_the_scan_finds_the_routes_it_is_for() -> None:
    """The scan flags what the code before issue 15 did (the path raw in model.py's docstring), a name in
    a DOT label and metadata in a .format, and accepts the same through an escaper."""
    bad = '''
def emit(spec, out, w, m):
    out.line('"""' + f"{spec.name}: generated by metagenc from {spec.span.path}.")
    w.line(f'"""MSL block `{d.qualname}`; {block.span.path}:{block.span.line}.')
    lines.append("label=" + q(x) + r["family"])
    text = "{}".format(spec.metadata["title"])
'''
    good = '''
def emit(spec, out, w, m):
    out.line('"""' + f"{py_doc(spec.name)}: generated by metagenc from {py_doc(spec.span.path)}.")
    w.line(f'"""MSL block `{py_doc(d.qualname)}`; {py_doc(block.span.path)}:{block.span.line}.')
    lines.append("label=" + q(x) + md(r["family"]))
    text = "{}".format(tt(spec.metadata["title"]))
    raise ValueError(f"no such file {spec.span.path}")
'''
    assert len(unescaped_routes(bad, "bad")) == 5, unescaped_routes(bad, "bad")
    assert unescaped_routes(good, "good") == []
