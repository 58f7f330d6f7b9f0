"""Graph attention reading edge features (gat_conv_edge, std.graph.gat_edge / gat_graph_edge): PyTorch
Geometric's GATConv(edge_dim=...) formula checked against a hand-written per-node reference, the parameter count,
ONNX parity, and the YAML front end's `task.edge_features` choosing the family."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT, load_module

from metagen_compiler.compilation import Options


def _reference(x: Any, edge_index: Any, attr: Any, conv: Any) -> Any:
    """GATConv(edge_dim) node by node, in float64 with plain loops: self loops whose features are the mean of the
    node's incoming edges' (zeros where none), alpha_ij = softmax_j LeakyReLU(a_src . W x_j + a_dst . W x_i +
    a_edge . W_e f_ji), out_i = sum_j alpha_ij W x_j + b, heads concatenated."""
    x, attr = x.double(), attr.double()
    W, We = conv.weight.double(), conv.lin_edge.double()
    a_src, a_dst, a_edge = (p.double()[0] for p in (conv.att_src, conv.att_dst, conv.att_edge))  # (H, C)
    H, C, n = conv.heads, conv.out_features, x.shape[0]
    edges = [(int(s), int(t), attr[k]) for k, (s, t) in enumerate(edge_index.t())]
    for i in range(n):
        incoming = [f for s, t, f in edges if t == i]
        edges.append((i, i, torch.stack(incoming).mean(0) if incoming else torch.zeros(attr.shape[1], dtype=x.dtype)))
    out = torch.zeros(n, H * C, dtype=torch.float64)
    for i in range(n):
        into = [(s, f) for s, t, f in edges if t == i]
        for h in range(H):
            sl = slice(h * C, (h + 1) * C)
            scores = torch.stack([
                torch.nn.functional.leaky_relu(a_src[h] @ (W[sl] @ x[j]) + a_dst[h] @ (W[sl] @ x[i])
                                               + a_edge[h] @ (We[sl] @ f), conv.negative_slope)
                for j, f in into])
            alpha = torch.softmax(scores, 0)
            out[i, sl] = sum(a * (W[sl] @ x[j]) for a, (j, _) in zip(alpha, into))
    return out + conv.bias.double()


def test_gat_edge_conv_matches_the_reference_formula() -> None:
    from metagen_backends.pytorch.runtime.helpers import GATEdgeConv

    g = torch.Generator().manual_seed(0)
    n, e, d = 7, 15, 3
    x = torch.randn(n, 5, generator=g)
    edge_index = torch.randint(0, n - 1, (2, e), generator=g)  # node n - 1 has no incoming edge: a zero self loop
    attr = torch.randn(e, d, generator=g)
    torch.manual_seed(0)
    conv = GATEdgeConv(5, 4, d, heads=2)
    with torch.no_grad():
        conv.bias.normal_()
    got = conv(x, edge_index, attr).double()
    ref = _reference(x, edge_index, attr, conv)
    assert got.shape == (n, 8)
    assert torch.allclose(got, ref, atol=1e-5), float((got - ref).abs().max())
    # the edge features change the output (the edge term is not silently dropped)
    assert not torch.allclose(conv(x, edge_index, attr + 1.0), conv(x, edge_index, attr))


SPEC = """msl 1
import std.graph

model {name} {{
  modality graph -> label
  task {task} {{ num_classes = 3 }}
  objective classification
  architecture graph.{family} {{ nodes = 40; edges = 120; features = 7; edge_features = 3; hidden = 8; heads = 2;
                                layers = 1{extra} }}
}}
"""


def _spec(tmp: Path, family: str) -> Path:
    graph = family == "gat_graph_edge"
    path = tmp / f"{family}.msl"
    path.write_text(SPEC.format(name=family, family=family, task="graph_classification" if graph else
                                "node_classification", extra="; graphs = 4" if graph else ""), encoding="utf-8")
    return path


def _params(f: int, hc: int, h: int, d: int) -> int:
    """gat_conv_edge(f -> h heads of c, edge_dim d): W (hc, f), att_src, att_dst, att_edge (hc each), W_e (hc, d), b."""
    return hc * f + 3 * hc + hc * d + hc


@pytest.mark.parametrize("family", ["gat_edge", "gat_graph_edge"])
def test_parameter_count(family: str, tmp_path: Path) -> None:
    from metagen_backends.pytorch import emit

    comp = _compile(_spec(tmp_path, family))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    (tmp_path / "model.py").write_text(emit(comp)["model.py"], encoding="utf-8")
    mod = load_module(tmp_path / "model.py", f"graph_edges_{family}")
    model = mod.build_model()
    counted = sum(p.numel() for p in model.parameters())
    # input layer 7 -> 2 x 8, one layer 16 -> 2 x 8, then the head: a 1-head layer to 3 classes, or pool + linear
    body = _params(7, 16, 2, 3) + _params(16, 16, 2, 3)
    expected = body + (_params(16, 3, 1, 3) if family == "gat_edge" else 16 * 3 + 3)
    assert counted == comp.graph.g.graph["estimates"]["params"] == expected
    xs = mod.example_inputs(model)
    assert [tuple(t.shape) for t in xs[:3]] == [(40, 7), (2, 120), (120, 3)]
    assert tuple(model.eval()(*xs).shape) == ((4, 3) if family == "gat_graph_edge" else (40, 3))


@pytest.mark.parametrize("family", ["gat_edge", "gat_graph_edge", "gps_graph"])
def test_onnx_parity(family: str, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    ort = pytest.importorskip("onnxruntime")
    from metagen_backends.onnx import emit
    from metagen_backends.onnx.weights import import_weights
    from metagen_backends.pytorch import emit as emit_py

    from metagen_compiler.driver import compile_source
    from metagen_compiler.semantics.program import read_source

    if family == "gps_graph":  # GraphGPS over a batch of graphs (below): same_graph_bias
        path = tmp_path / "gps_batch.msl"
        path.write_text(GPS, encoding="utf-8")
    else:
        path = _spec(tmp_path, family)
    comp = compile_source(read_source(path), options=Options(opset=18))
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    out = tmp_path / "out"
    out.mkdir()
    for name, data in {**emit_py(comp), **emit(comp)}.items():
        (out / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    mod = load_module(out / "model.py", f"graph_edges_onnx_{family}")
    model = mod.build_model().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    sess = ort.InferenceSession(str(import_weights(out, model.state_dict(), tmp_path / "trained.onnx")),
                                providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    xs = mod.example_inputs(model, seed=3)
    with torch.no_grad():
        ref = model(*xs).numpy()
    got = sess.run(None, {n: x.numpy() for n, x in zip(names, xs, strict=True)})[0]
    assert got.shape == ref.shape
    worst = float(np.abs(got - ref).max())
    assert worst < 5e-5


def _yaml(tmp: Path, family: str, task: str, edge_features: int) -> Any:
    text = (ROOT / "tests" / "yaml_corpus" / "graph_edge_features.yaml").read_text(encoding="utf-8")
    text = text.replace("family: gnn", f"family: {family}").replace("type: node_classification", f"type: {task}")
    text = text.replace("edge_features: 6", f"edge_features: {edge_features}")
    path = tmp / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return _compile(path)


def _compile(path: Path) -> Any:
    from metagen_compiler.driver import compile_source
    from metagen_compiler.semantics.program import read_source

    return compile_source(read_source(path))


@pytest.mark.parametrize("family,task,edges,target", [
    ("gnn", "node_classification", 6, "std.graph.gat_edge"),
    ("gnn", "graph_classification", 6, "std.graph.gat_graph_edge"),
    ("gnn", "node_classification", 0, "std.graph.gcn"),
])
def test_yaml_edge_features_choose_the_edge_family(family: str, task: str, edges: int, target: str,
                                                   tmp_path: Path) -> None:
    comp = _yaml(tmp_path, family, task, edges)
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    assert comp.spec.family.qualname == target
    if edges:
        assert comp.spec.dims["edge_features"] == edges
    assert not [d for d in comp.bag.sorted() if "edge_features" in d.message]


def test_yaml_edge_features_on_gcn_still_warn(tmp_path: Path) -> None:
    comp = _yaml(tmp_path, "gcn", "node_classification", 6)
    assert not comp.bag.has_errors
    notes = [d for d in comp.bag.sorted() if d.code == "W003" and "edge_features" in d.message]
    assert notes and "variant: gat" in (notes[0].hint or "")


# ------------------------------------------------------------------ GraphGPS over a batch of graphs
GPS = """msl 1
import std.graphtransformer

model gps_batch {
  modality graph -> label
  task graph_classification { num_classes = 3 }
  objective classification
  architecture graphtransformer.gps_graph { nodes = 40; edges = 120; features = 7; graphs = 4; layers = 2;
                                            d_model = 32; heads = 2 }
}
"""


def _gps(tmp: Path) -> tuple[Any, Any]:
    from metagen_backends.pytorch import emit

    path = tmp / "gps_batch.msl"
    path.write_text(GPS, encoding="utf-8")
    comp = _compile(path)
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    (tmp / "model.py").write_text(emit(comp)["model.py"], encoding="utf-8")
    return comp, load_module(tmp / "model.py", "graph_edges_gps_batch")


def test_same_graph_bias() -> None:
    from metagen_backends.pytorch.runtime.helpers import same_graph_bias

    bias = same_graph_bias(torch.tensor([0, 0, 1, 2, 1]), 3)
    assert bias.shape == (1, 3, 5, 5)
    allowed = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 1, 0, 1]]).bool()
    assert torch.equal(bias[0, 1] == 0, allowed) and bool(torch.isneginf(bias[0, 2][~allowed]).all())


def test_gps_graph_attends_within_each_graph(tmp_path: Path) -> None:
    """Changing one graph's node features changes that graph's logits only (eval: BatchNorm couples nothing), and
    each graph's logits are those of the graph alone (its nodes and edges, renumbered, as a batch of one)."""
    comp, mod = _gps(tmp_path)
    model = mod.build_model().eval()
    assert sum(p.numel() for p in model.parameters()) == comp.graph.g.graph["estimates"]["params"]
    x, edges, ids = mod.example_inputs(model, seed=5)
    ids = torch.arange(4).repeat_interleave(10)  # four graphs of ten nodes
    keep = ids[edges[0]] == ids[edges[1]]  # edges within a graph
    edges = edges[:, keep]
    with torch.no_grad():
        out = model(x, edges, ids)
        moved = x.clone()
        moved[ids == 0] += torch.randn(10, x.shape[1])
        out2 = model(moved, edges, ids)
        assert not torch.allclose(out2[0], out[0])
        assert torch.allclose(out2[1:], out[1:], atol=1e-6)
        for gid in range(4):
            nodes = (ids == gid).nonzero().flatten()
            sub = edges[:, ids[edges[0]] == gid] - nodes[0]
            alone = model(x[nodes], sub, torch.zeros(10, dtype=torch.long))
            assert torch.allclose(alone[0], out[gid], atol=1e-5)
