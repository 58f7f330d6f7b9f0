"""The pipeline's structure: named passes, a verified IR between passes, deterministic dumps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import EXAMPLES, ROOT, compile_path

from metagen_compiler.driver import STAGES
from metagen_compiler.ir.graph import verify_graph
from metagen_compiler.passes import PASSES, PIPELINE


def test_registry_keys_are_pass_names() -> None:
    for key, p in PASSES.items():
        assert key == p.name
    assert [p.name for p in PIPELINE] == list(STAGES)
    assert STAGES == ("parse", "resolve", "check", "overrides", "modality", "heads", "solve", "lower", "shapes", "structure",
                      "estimate", "constraints")


def test_every_pass_is_documented() -> None:
    for p in PIPELINE:
        assert p.doc and p.doc[0].isupper()


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_verifier_between_passes(path) -> None:  # type: ignore[no-untyped-def]
    comp = compile_path(path, verify=True)  # verify=True asserts the IR invariants after each pass
    assert not comp.bag.has_errors, comp.bag.items
    assert verify_graph(comp.graph) == []


def test_verifier_catches_a_broken_graph() -> None:
    comp = compile_path(ROOT / "examples" / "gpt2.msl")
    node = next(d for d in comp.graph.nodes.values() if d.op == "linear")
    node.span = None
    comp.graph.ties.append(("head.proj.weight", "backbone.ln_f.weight"))
    problems = verify_graph(comp.graph)
    assert any("no span" in p for p in problems)
    assert any("shapes differ" in p for p in problems)


def test_graph_nodes_are_typed_records_of_the_topology() -> None:
    """Each node of the graph IR is a `Node` record (op, args, span, and what the passes filled: weights, shapes,
    dtypes, flops), one per node of the digraph; networkx gets the fields as attributes; a node without a record,
    or a record without a node, is a broken graph."""
    import dataclasses

    from metagen_compiler.ir.graph import Node

    comp = compile_path(ROOT / "examples" / "gpt2.msl")
    ir = comp.graph
    assert set(ir.nodes) == set(ir.g.nodes) and all(isinstance(d, Node) for d in ir.nodes.values())
    attn = next(d for d in ir.nodes.values() if d.op == "linear" and d.module)
    assert attn.shapes and attn.dtypes == ["float32"] * attn.n_outputs and attn.weights and attn.flops
    ng = ir.to_networkx()
    n = next(k for k, d in ir.nodes.items() if d is attn)
    assert ng.nodes[n]["op"] == "linear" and ng.nodes[n]["shapes"] == attn.shapes
    assert set(ng.nodes[n]) == {f.name for f in dataclasses.fields(Node)}
    del ir.nodes[n]
    assert any("without a record" in p for p in verify_graph(ir))


def test_nodes_carry_spans_into_the_right_files() -> None:
    comp = compile_path(ROOT / "examples" / "parallel_decoder.msl")
    span = comp.graph.nodes["backbone.blocks.0.ln"].span
    assert span is not None and span.path == "examples/parallel_decoder.msl" and span.line == 11
    span = comp.graph.nodes["backbone.blocks.0.attn.c_attn"].span
    assert span is not None and span.path == "<stdlib>/layers.msl"


def _emit(args: list[str], seed: str) -> str:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
    return r.stdout


@pytest.mark.parametrize("stage", ["ast", "ir", "estimate"])
def test_dumps_do_not_depend_on_hash_seed(stage: str) -> None:
    a = _emit(["examples/tiny_story.msl", f"--emit={stage}"], "1")
    b = _emit(["examples/tiny_story.msl", f"--emit={stage}"], "12345")
    assert a == b and a


def test_msl_spells_the_3d_modality() -> None:
    """`3d` (the seeds' text-to-3D output) parses in a modality list and builds the same model as
    `point_cloud`; another digit-led name is an unknown modality (W001), not a syntax error."""
    from metagen_compiler.driver import compile_source
    from metagen_compiler.span import SourceFile

    spec = """msl 1
import std.threed
model m {{
  modality text -> {out}
  task shape_generation
  constraints {{ params <= 20M }}
  architecture threed.text_to_points {{ points = 256 }}
}}
"""
    three, cloud = (compile_source(SourceFile("m.msl", spec.format(out=o))) for o in ("3d", "point_cloud"))
    assert not three.bag.items and not cloud.bag.items, [str(d) for d in three.bag.items + cloud.bag.items]
    assert three.graph.param_count() == cloud.graph.param_count() > 0
    two = compile_source(SourceFile("m.msl", spec.format(out="2d")))
    assert [d.code for d in two.bag.items] == ["W001"] and not two.bag.has_errors
    # outside a modality list `3d` is no name: a syntax error
    bad = compile_source(SourceFile("m.msl", spec.format(out="3d").replace("points = 256", "points = 3d")))
    assert [d.code for d in bad.bag.errors] == ["E001"]


def test_emit_graph_prints_the_shapes() -> None:
    """`--emit graph` prints the graph after shape inference: every node states its output shapes."""
    text = _emit(["examples/tiny_story.msl", "--emit=graph"], "1")
    nodes = [line for line in text.splitlines() if line.lstrip().startswith("%")]
    assert nodes and all("-> (" in line for line in nodes), [n for n in nodes if "-> (" not in n][:3]


def test_overrides_are_a_pass_of_the_pipeline() -> None:
    """--set is the `overrides` pass: it runs in compile_source as in compile_model_set, and `--emit ir` shows
    the overridden value and where it came from."""
    from metagen_compiler.compilation import Options
    from metagen_compiler.driver import compile_model_set, compile_source
    from metagen_compiler.semantics.program import read_source

    src = read_source(ROOT / "examples" / "tiny_story.msl")
    one = compile_source(src, Options(overrides=(("layers", "3"),)))
    (many,) = compile_model_set(src, Options(), overrides=(("layers", "3"),))
    plain = compile_source(src)
    params = [c.graph.g.graph["estimates"]["params"] for c in (one, many, plain) if c.graph is not None]
    assert len(params) == 3 and params[0] == params[1] != params[2]
    assert "layers = 3 in 2..48    # command line" in _emit(["examples/tiny_story.msl", "--emit=ir", "--set", "layers=3"], "1")


def test_compile_file_is_the_public_entry_point() -> None:
    import metagen_compiler

    (comp,) = metagen_compiler.compile_file(ROOT / "examples" / "tiny_story.msl", overrides=(("layers", "3"),))
    assert not comp.bag.has_errors and comp.spec is not None and comp.graph is not None
    assert comp.spec.bindings["layers"].source == "command line"
    (bad,) = metagen_compiler.compile_file(ROOT / "tests" / "broken" / "msl" / "029_infeasible_budget.msl")
    assert [d.code for d in bad.bag.items if d.severity.name == "ERROR"] == ["E401"]


def test_a_source_path_no_file_system_can_hold_compiles() -> None:
    """An in-memory source (the language server, a test) whose path holds a lone surrogate: resolving it raised
    UnicodeEncodeError, an internal error (I001)."""
    from metagen_compiler.driver import compile_source
    from metagen_compiler.span import SourceFile

    comp = compile_source(SourceFile("\ud800.msl", "msl 1\nmodel m { }\n"))
    assert [d.code for d in comp.bag.items] == ["E208", "E208", "E208"]  # no modality, task, architecture
