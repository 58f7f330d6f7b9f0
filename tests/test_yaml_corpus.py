"""The earlier YAML tool's specs compile as they are (issue 16): tests/yaml_corpus holds specs in that tool's style,
one file per family and task group, with display names, units and lists, covering every key of the front end's schema
(yaml_schema.schema_keys(), from the tables the lowering reads) and every value form. Each compiles with the PyTorch
backend, has a parameter count within its budget and, in the numeric test, runs forward, loss and backward at its
family's small size. Their diagnostics (warnings only) are goldens in
tests/__snapshots__/test_yaml_corpus.ambr (`pytest tests/test_yaml_corpus.py --snapshot-update`)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, compile_path, load_module, rel

from metagen_compiler.compilation import Compilation
from metagen_compiler.diagnostics import render_text
from metagen_compiler.driver import compile_source
from metagen_compiler.semantics.values import UNIT_SCALE
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax.yaml_schema import schema_keys

CORPUS = sorted((ROOT / "tests" / "yaml_corpus").glob("*.yaml"))


@functools.cache
def _compile(path: Path) -> Compilation:
    return compile_path(path)  # diagnostics name the path from the repository root: goldens do not depend on it


def _keys(x: Any, prefix: str = "") -> set[str]:
    """Every key path of a YAML document (`constraints.parameter_budget.max`); list items add no level."""
    out: set[str] = set()
    if isinstance(x, dict):
        for k, v in x.items():
            out.add(prefix + str(k))
            out |= _keys(v, prefix + str(k) + ".")
    elif isinstance(x, list):
        for i in x:
            out |= _keys(i, prefix)
    return out


def _docs() -> list[dict[str, Any]]:
    return [yaml.safe_load(p.read_text(encoding="utf-8")) for p in CORPUS]


# every key the front end knows (the earlier tool's schema, issue 16, and the MSL constraints and task fields it takes)
SCHEMA_KEYS = set(schema_keys())
INPUTS = {"text", "image", "audio", "video", "3d", "multimodal", "time_series", "graph", "tabular", "point_cloud"}
OUTPUTS = {"label", "classification", "bounding_boxes", "segmentation_mask", "embedding", "action", "regression", "3d",
           "audio", "image", "video", "text"}
TASKS = {"generation", "classification", "regression", "retrieval", "object_detection", "instance_segmentation",
         "semantic_segmentation", "panoptic_segmentation", "time_series_forecast", "anomaly_detection",
         "policy_gradient", "value_based", "actor_critic", "model_based", "node_classification", "link_prediction",
         "graph_classification", "recommendation"}
FAMILIES = {"transformer", "cnn", "diffusion", "gnn", "hybrid", "mlp", "rnn", "lstm", "gru", "ssm", "moe"}
LATENCIES = {"real-time", "near-real-time", "batch", "offline"}
THROUGHPUTS = {"120 tok/s", "2 img/s", "1 sample/s", "1 mesh/s", "30fps", "30s clip/min"}


def test_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert HEAVY <= {p.stem for p in CORPUS}  # no stale entry
    for p in CORPUS:
        assert p.read_text(encoding="utf-8").startswith("# corpus: "), f"{rel(p)}: say what it covers on line 1"


def test_corpus_covers_the_schema() -> None:
    docs = _docs()
    assert sorted(SCHEMA_KEYS - set().union(*(_keys(d) for d in docs))) == []
    assert INPUTS <= {i for d in docs for i in d["modality"]["inputs"]}
    assert OUTPUTS <= {o for d in docs for o in d["modality"]["outputs"]}
    assert TASKS <= {d["task"]["type"] for d in docs if "type" in d.get("task", {})}
    assert any("task" in d and "type" not in d["task"] for d in docs) or any("task" not in d for d in docs)
    assert FAMILIES <= {d["architecture"]["family"] for d in docs}
    constraints = [d.get("constraints", {}) for d in docs]
    latencies = {str(c["latency"]) for c in constraints if "latency" in c}
    assert LATENCIES <= latencies and any(re.fullmatch(r"[0-9.]+m?s", t) for t in latencies)
    assert THROUGHPUTS <= {str(c["throughput"]) for c in constraints if "throughput" in c}
    assert {"∞", "inf"} <= {str(c["context_window"]) for c in constraints if "context_window" in c}
    sizes = [c["image_size"] for c in constraints if "image_size" in c]
    assert any(isinstance(s, int) for s in sizes) and any(isinstance(s, list) for s in sizes)
    names = [d["name"] for d in docs]
    assert any(not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n) for n in names)  # display names
    assert any(n[0].isdigit() for n in names)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_spec_compiles_within_budget(path: Path, snapshot) -> None:  # type: ignore[no-untyped-def]
    comp = _compile(path)
    diags = comp.bag.sorted()
    assert not comp.bag.has_errors, render_text(diags)
    assert comp.spec is not None and comp.graph is not None
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", comp.spec.name)
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    if doc["name"] != comp.spec.name:
        assert comp.spec.metadata["display_name"] == doc["name"]
    params = comp.graph.g.graph["estimates"]["params"]
    budget = doc.get("constraints", {}).get("parameter_budget", {})

    def amount(t: object) -> float:
        m = re.fullmatch(r"([0-9.]+)\s*([A-Za-z]*)", str(t))
        assert m is not None
        return float(m.group(1)) * (UNIT_SCALE[m.group(2)][0] if m.group(2) else 1)

    if "max" in budget:
        assert params <= amount(budget["max"])
    if "min" in budget:
        assert params >= amount(budget["min"])
    assert render_text(diags) == snapshot


def test_hostile_display_names_never_reach_a_path_or_code(tmp_path: Path) -> None:
    """The paper tests' hostile names, given as `name:`: the identifier (folder, class) is plain, the display text is
    kept literally in the metadata for the paper and the card, and model.py is valid Python."""
    from metagen_compiler.outputs import write_outputs

    base = (ROOT / "tests" / "yaml_corpus" / "tabular_regression_mlp.yaml").read_text(encoding="utf-8")
    hostile = ["\\input{/etc/passwd}", "\\write18{rm -rf /}", "Model \"quoted\" 'twice'", "back\\slash\\\\",
               "100% pure_model", "../../etc/x", "_", "a\u202eb"]
    for n, display in enumerate(hostile):
        line = "name: " + json.dumps(display)
        text = re.sub(r"^name: .*$", lambda _, line=line: line, base, count=1, flags=re.MULTILINE)
        comp = compile_source(SourceFile(f"hostile_{n}.yaml", text))
        assert not comp.bag.has_errors, render_text(comp.bag.sorted())
        assert comp.spec is not None
        ident = comp.spec.name
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", ident), ident
        assert comp.spec.metadata.get("display_name", ident) == display
        folder, files = write_outputs(comp, tmp_path, ["pytorch"])
        assert folder == tmp_path / ident and folder.resolve().parent == tmp_path.resolve()
        compile(str(files["model.py"]), "model.py", "exec")


# ---------------------------------------------------------------- numeric
def _build(path: Path, out: Path):  # type: ignore[no-untyped-def]
    from metagen_compiler.outputs import commit, write_outputs

    comp = _compile(path)
    folder, files = write_outputs(comp, out, ["pytorch"])
    commit(out, {folder.name: files})  # as `metagenc` writes them
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    return load_module(folder / "model.py", f"yaml_corpus_{path.stem}"), report


# the specs whose small build takes over 4 s on a shared 2-core CPU (measured): `-m slow` runs them
HEAVY = {"image_latent_diffusion", "image_detection_yolo", "image_instance_segmentation", "image_cnn_resnet",
         "image_panoptic_segmentation", "audio_hybrid_asr", "multimodal_vlm_hybrid", "text_rag", "text_seq2seq",
         "text_llm_chat", "video_transformer", "multimodal_hybrid_fusion", "multimodal_hybrid_three_inputs",
         "audio_hybrid_classifier"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in HEAVY else p for p in CORPUS],
                         ids=lambda p: p.stem)
def test_corpus_model_runs_small(path: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from test_numeric import check_small

    mod, report = _build(path, tmp_path)
    check_small(mod, report)


@pytest.mark.slow
@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_corpus_model_has_the_reported_params(path: Path, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    mod, report = _build(path, tmp_path)
    with torch.device("meta"):
        model = mod.build_model()
    assert sum(p.numel() for p in model.parameters()) == report["params"]


def test_docs_list_every_key() -> None:
    """docs/yaml.md has a row for every key of the schema, with its MSL equivalent, and gives the corpus's size."""
    text = (ROOT / "docs" / "yaml.md").read_text(encoding="utf-8")
    assert f"`tests/yaml_corpus/` ({len(CORPUS)} files" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    sections = {k.rsplit(".", 1)[0] for k in SCHEMA_KEYS if "." in k} - {"reproducibility"}
    for key in sorted(SCHEMA_KEYS - sections):
        top, _, rest = key.partition(".")
        leaf = key.rsplit(".", 1)[-1]
        hit = [r for r in rows if f"`{key}`" in r or (rest and f"`{top}." in r.split("|")[1] and leaf in r.split("|")[1])]
        assert hit, f"docs/yaml.md has no row for `{key}`"
        assert all(len(r.split("|")) >= 5 and r.split("|")[3].strip() for r in hit), key  # an MSL equivalent
