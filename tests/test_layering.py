"""The compiler's layering (issue 20): no import cycles among the compiler's and the backends' modules, the
compiler core never imports a backend or a tool at import time, and every package is declared in pyproject."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"metagen_compiler": ROOT / "metagen_compiler", "metagen_backends": ROOT / "backends"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg, folder in PACKAGES.items():
        for f in folder.rglob("*.py"):
            parts = f.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join((pkg, *parts))] = f
    return out


def _imports(name: str, f: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that `name` imports when it runs (lazy imports inside functions count; imports
    under `if TYPE_CHECKING:` are for annotations only and do not)."""
    tree = ast.parse(f.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip |= {id(m) for b in n.body for m in ast.walk(b)}
    package = name if f.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names]
            # `from . import ast` needs the submodule; the package itself only for a name defined in it
            targets += [*subs, *([mod] if any(x not in known for x in subs) else [])]
        elif isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        out |= {t for t in targets if t in known and t != name}
    return out


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, f in mods.items():
        g.add_edges_from((name, t) for t in _imports(name, f, mods))
    return g


def test_no_import_cycles(graph: nx.DiGraph) -> None:
    cycles = sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)
    assert not cycles, f"modules that import each other: {cycles}"


def test_the_scanner_sees_lazy_and_relative_imports(graph: nx.DiGraph) -> None:
    # the test above can only fail if the graph holds the imports: relative ones (`..primitives`, `.driver`),
    # absolute ones and ones inside a function (cli's `.driver`, outputs' backends)
    assert graph.has_edge("metagen_compiler.editor.textmate", "metagen_compiler.primitives")
    assert graph.has_edge("metagen_compiler.cli", "metagen_compiler.driver")
    assert graph.has_edge("metagen_compiler.passes.estimate", "metagen_compiler.semantics.program")
    assert graph.has_edge("metagen_compiler.outputs", "metagen_backends")


# the compiler's core: what `metagenc FILE` runs. The CLI, the output writer, the search (its modules compile,
# train and write papers) and the language server drive backends and tools; the core below them never reaches up.
DRIVERS = ("metagen_compiler.cli", "metagen_compiler.outputs", "metagen_compiler.search", "metagen_compiler.editor.lsp",
           "metagen_compiler.tools")


def test_the_core_never_imports_backends_or_tools(graph: nx.DiGraph) -> None:
    bad = sorted((a, b) for a, b in graph.edges
                 if a.startswith("metagen_compiler.") and not a.startswith(DRIVERS)
                 and (b.startswith(("metagen_backends", "metagen_compiler.tools"))))
    assert not bad, bad


def test_backends_import_no_pass(graph: nx.DiGraph) -> None:
    bad = sorted((a, b) for a, b in graph.edges
                 if a.startswith("metagen_backends") and b.startswith("metagen_compiler.passes"))
    assert not bad, bad


# the backends read the IRs (spec, graph, structure) and the compiler's analyses (the unused family parameters),
# never the AST, the parser or the elaborator (issue 20, section 1)
def test_backends_read_no_ast_and_run_no_elaborator(graph: nx.DiGraph) -> None:
    bad = sorted((a, b) for a, b in graph.edges if a.startswith("metagen_backends")
                 and (b == "metagen_compiler.semantics.elaborate" or b.startswith("metagen_compiler.syntax")))
    assert not bad, bad
    assert graph.has_edge("metagen_backends.pytorch.codegen", "metagen_compiler.ir.structure")


def test_every_package_is_declared() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {".".join((pkg, *init.parent.relative_to(folder).parts))
             for pkg, folder in PACKAGES.items() for init in folder.rglob("__init__.py")}
    assert found <= set(cfg["packages"]), f"packages missing from pyproject's [tool.setuptools]: {found - set(cfg['packages'])}"
    for pkg in found:
        rel = Path(cfg["package-dir"][pkg])
        assert (ROOT / rel / "__init__.py").is_file(), pkg


def test_the_unused_parameters_are_the_compilers_analysis() -> None:
    """The paper's 'parameters this model does not read' come from the compile (semantics/unused.py), not from a
    backend walking the AST: a decoder's classification and regression head sizes, a ResNet's mask size."""
    from metagen_compiler import compile_file

    (gpt2,) = compile_file(ROOT / "examples" / "gpt2.msl")
    assert gpt2.unused_params == {"num_classes": ["classification"], "outputs": ["regression"]}
    (resnet,) = compile_file(ROOT / "examples" / "resnet50.msl")
    assert resnet.unused_params == {"mask_size": ["semantic_segmentation"]}
