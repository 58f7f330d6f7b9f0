"""The task code (backends/pytorch/runtime/objectives/): each task's loss, metrics, example targets and methods,
imported and run on tiny models with known answers; and the templates losses.py derives from it for model.py."""

from __future__ import annotations

import ast
import importlib.util
import math
import re
import string
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from metagen_backends.pytorch import losses
from metagen_backends.pytorch.losses import LOSSES, TARGET_INPUT, TIMESTEP_INPUT, task_templates
from metagen_backends.pytorch.runtime import detection, masks, matching
from metagen_backends.pytorch.runtime.objectives import (
    classification,
    diffusion,
    language,
    regression,
    rl,
    similarity,
    slots,
)
from metagen_backends.pytorch.runtime.objectives import detection as detection_tasks

from metagen_compiler.semantics.tasks import TASK_SPECS

ROOT = Path(__file__).resolve().parent.parent

OBJECTIVES = {"language": language, "classification": classification, "regression": regression,
              "similarity": similarity, "detection": detection_tasks, "rl": rl, "diffusion": diffusion}


def _t(rows: Any) -> Any:
    return torch.tensor(rows, dtype=torch.float32)


def _task(loss: str) -> Any:
    """The task's class."""
    module, name = LOSSES[loss].source.split(".")
    return getattr(OBJECTIVES[module], name)


def tiny(loss: str, forward: Callable[..., Any], methods: tuple[Callable[..., Any], ...] = (), **config: Any) -> Any:
    """A module with the task's methods (as model.py's Model has them), `forward`, a learned scale and `config`."""
    cls = type("Tiny", (nn.Module, _task(loss)), {"forward": forward, **{m.__name__: m for m in methods}})
    model = cls()
    model.scale = nn.Parameter(torch.ones(()))
    model.config = SimpleNamespace(**config)
    return model


def _metric_names() -> dict[str, set[str]]:
    """Each loss's metric names, from the tasks that use it (metagen_compiler/semantics/tasks.py)."""
    out: dict[str, set[str]] = {}
    for task in TASK_SPECS.values():
        for loss in {task.loss, *(v for v, _ in task.variants), *(h for _, h in task.head_losses)}:
            out.setdefault(loss, set()).update(task.metrics)
    return out


def _loss(model: Any, batch: dict[str, Any]) -> float:
    return float(model.loss(batch).detach())


def _check(model: Any, loss: str, batch: dict[str, Any]) -> dict[str, float]:
    """The task's loss is a finite scalar the learned scale gets a gradient from; its metrics are finite floats
    named as the task's; returns them."""
    value = model.loss(batch)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert model.scale.grad is not None
    metrics = model.metrics(batch)
    assert set(metrics) == _metric_names()[loss]
    return {k: float(v) for k, v in metrics.items()}


# ------------------------------------------------------------------ templates for model.py
def test_template_fills_slots_doubles_braces_and_drops_pragmas() -> None:
    code = ['logits = self(*batch_inputs(batch))  # (B, C)',
            'tokens = batch["y"]',
            'out = self(*shifted_inputs(batch, tokens)), batch["x"], batch["next_x"], "x + 1"',
            "unused, b = self(*noised_inputs(batch, x_t, t))  # noqa: RUF059 (a linter's note)",
            "def sample(self, *cond, steps=1):",
            "    first = cond[0]",
            "    x = torch.randn((n, *sample_shape(c)))",
            "    u = tuple(torch.zeros_like(i) for i in (*cond,))",
            "    a, b = self(*guided_inputs(x, t, cond, uncond)), self(*step_inputs(x, t, cond))",
            '    raise ValueError(f"got {method!r}")  # type: ignore[misc]',
            'return {"a": a,',
            '        "b": 2 * b}']
    assert losses._template(code) == (
        "logits = self({args})  # (B, C)",
        'tokens = batch["{y}"]',
        'out = self({shifted}), batch["{x}"], batch["next_{x}"], "x + 1"',
        "unused, b = self({noisy})",
        "def sample(self, {cond}, steps=1):",
        "    first = {first}",
        "    x = torch.randn((n, {shape}))",
        "    u = tuple(torch.zeros_like(i) for i in ({cond},))",
        "    a, b = self({guided}), self({step})",
        '    raise ValueError(f"got {{method!r}}")',
        'return {{"a": a,',
        '        "b": 2 * b}}')
    assert losses._template([]) == ()


@pytest.mark.parametrize("module", sorted(OBJECTIVES))
def test_class_scanner_agrees_with_the_syntax_tree(module: str) -> None:
    """losses.py finds the task classes, their bases and methods in the text: the same as Python's parser."""
    path = Path(OBJECTIVES[module].__file__ or "")
    lines = path.read_text().split("\n")
    tree = ast.parse(path.read_text())
    want = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        base = cls.bases[0].id if isinstance(cls.bases[0], ast.Name) else ""
        methods = []
        for fn in (n for n in cls.body if isinstance(n, ast.FunctionDef)):
            start = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
            text = tuple(ln[4:] for ln in lines[start - 1 : fn.end_lineno])
            methods.append((fn.name, text, fn.lineno - start))
        want[cls.name] = (base, methods)
    got = {name: (base, [(m.name, m.lines, m.head) for m in methods])
           for name, (base, methods) in losses._module(module).items()}
    assert got == want
    assert all(source.split(".")[1] in got for source in (c.source for c in LOSSES.values())
               if source.startswith(module + "."))


def test_no_task_code_left_in_strings() -> None:
    """benchmarks/code_in_strings.py finds no code in losses.py's strings nor in the task code's (a batch key such as
    "return" is no `return` statement; "utf-8" and "-inf", which parse as a subtraction and a negation, are its
    known false positives)."""
    spec = importlib.util.spec_from_file_location("code_in_strings", ROOT / "benchmarks" / "code_in_strings.py")
    assert spec is not None and spec.loader is not None
    measure = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(measure)
    assert not measure.is_code("return") and measure.is_code("return batch")
    assert measure.lines_in_strings(Path(losses.__file__)) == 1  # read_text(encoding="utf-8")
    found = {m: measure.lines_in_strings(Path(mod.__file__ or "")) for m, mod in OBJECTIVES.items()}
    assert found == {m: 0 for m in OBJECTIVES} | {"classification": 1, "similarity": 2}  # float("-inf")


FIELDS = {"x": "image", "args": 'batch["image"], batch["text"]', "y": "text",
          "shifted": 'batch["image"], tokens[:, :-1]', "t": "timestep", "noisy": 'x_t, t, batch["text"]',
          "cond": "text", "first": "text", "step": "x, t, text", "guided": "torch.cat((x, x)), torch.cat((t, t)), "
          "torch.cat((uncond[0], text))", "shape": "c.channels, c.image_size, c.image_size"}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_templates_are_python_with_the_slots_filled(loss: str) -> None:
    """Every task has a class with loss and metrics; its templates name only codegen's fields, and filled in they
    parse as the methods' bodies, with no slot function or spelled-out input name left."""
    code = LOSSES[loss]
    assert code.loss and code.metrics and code.loss[-1].lstrip().startswith(("return", "+"))
    for field in ("loss", "metrics", "batch", "init", "methods"):
        lines = getattr(code, field)
        names = {f for ln in lines for _, f, _, _ in string.Formatter().parse(ln) if f is not None}
        assert names <= FIELDS.keys(), (field, names)
        text = "\n".join(ln.format(**FIELDS) for ln in lines)
        if lines:
            ast.parse(text if field == "methods" else "def f():\n" + "\n".join("    " + ln for ln in text.split("\n")))
        tokens = {"batch_inputs", "shifted_inputs", "noised_inputs", "step_inputs", "guided_inputs", "sample_shape",
                  '"x"', '"y"', '"next_x"', "*cond", "cond[0]", "# noqa", "# type: ignore"}
        assert not [t for t in tokens if re.search(r"(?<!\w)" + re.escape(t), text)], (field, text)


def test_subclasses_inherit_templates() -> None:
    assert LOSSES["graph_cross_entropy"].metrics == LOSSES["cross_entropy"].metrics
    assert LOSSES["graph_cross_entropy"].loss != LOSSES["cross_entropy"].loss
    assert LOSSES["mask_set_panoptic"].loss == LOSSES["mask_set_instance"].loss
    assert LOSSES["mask_set_panoptic"].batch == LOSSES["mask_set_instance"].batch
    assert LOSSES["mask_set_panoptic"].metrics != LOSSES["mask_set_instance"].metrics
    assert task_templates("diffusion.DiffusionMse")["methods"][:2] == (
        "@torch.no_grad()", "def sample(self, {cond}, steps: int = 50, method: str = \"ddim\", eta: float = 0.0, "
        "guidance_scale: float = 1.0,")


def test_input_name_constants_match_the_slots() -> None:
    """codegen's `y` is TARGET_INPUT or "text" or the first input; `t` TIMESTEP_INPUT: the task code spells both."""
    assert (TARGET_INPUT, TIMESTEP_INPUT) == ("target", "timestep")
    assert (slots.FIRST, slots.TOKENS) == ("x", "y")


# ------------------------------------------------------------------ language
def _next_token_lm(self: Any, y: Any) -> Any:
    """A language model that predicts token + 1 (mod 7) with confidence: (B, T, 7)."""
    return 20.0 * F.one_hot((y + 1) % 7, 7).float() * self.scale


def test_next_token_loss_and_metrics_on_a_tiny_lm() -> None:
    model = tiny("next_token_cross_entropy", _next_token_lm)
    tokens = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 0]])
    with slots.bind(inputs=("y",)):
        m = _check(model, "next_token_cross_entropy", {"y": tokens})
        assert _loss(model, {"y": tokens}) < 1e-6  # it reads tokens[:, :-1] and predicts tokens[:, 1:]
    assert m["token_accuracy"] == 1.0 and m["perplexity"] == pytest.approx(1.0)
    with slots.bind(inputs=("y",)):
        m = model.metrics({"y": torch.tensor([[0, 1, 3, 4]])})  # predicts 1, 2, 4 for 1, 3, 4: two of three
        assert float(m["token_accuracy"]) == pytest.approx(2 / 3)
        uniform = tiny("next_token_cross_entropy", lambda self, y: torch.zeros(*y.shape, 7) * self.scale)
        assert float(uniform.metrics({"y": tokens})["perplexity"]) == pytest.approx(7.0)


def test_shifted_inputs_cut_only_the_token_input() -> None:
    seen: list[Any] = []

    def forward(self: Any, x: Any, y: Any) -> Any:
        seen.append((x.shape, y.shape))
        return torch.zeros(*y.shape, 7) * self.scale

    model = tiny("next_token_cross_entropy", forward)
    with slots.bind(inputs=("x", "y")):
        model.loss({"x": torch.zeros(2, 3, 5), "y": torch.zeros(2, 6, dtype=torch.long)})
    assert seen == [(torch.Size([2, 3, 5]), torch.Size([2, 5]))]


def test_transcription_token_error_rate_is_the_edit_distance() -> None:
    def forward(self: Any, x: Any, y: Any) -> Any:  # predicts input + 1, but 6 at the second position
        pred = (y + 1) % 7
        pred[:, 1] = 6 if x.sum() else pred[:, 1]
        return 20.0 * F.one_hot(pred, 7).float() * self.scale

    model = tiny("transcription_cross_entropy", forward)
    tokens = torch.tensor([[0, 1, 2, 3, 4]])  # the reference tokens[:, 1:]: 1 2 3 4
    with slots.bind(inputs=("x", "y")):
        m = _check(model, "transcription_cross_entropy", {"x": torch.zeros(1, 3), "y": tokens})
        assert m == {"token_accuracy": 1.0, "token_error_rate": 0.0}
        m = {k: float(v) for k, v in model.metrics({"x": torch.ones(1, 3), "y": tokens}).items()}
    assert m == {"token_accuracy": 0.75, "token_error_rate": 0.25}  # 1 6 3 4: one substitution in four tokens


def test_codebook_loss_of_a_uniform_model_is_log_codebook_size() -> None:
    model = tiny("codebook_cross_entropy", lambda self, seq: torch.zeros(*seq.shape, 8) * self.scale, codebook_size=8)
    codes = torch.randint(0, 8, (2, 3, 5), generator=torch.Generator().manual_seed(0))
    m = _check(model, "codebook_cross_entropy", {"x": codes})
    assert _loss(model, {"x": codes}) == pytest.approx(math.log(8))
    assert m["perplexity"] == pytest.approx(8.0)


def test_retrieval_augmented_loss_adds_the_weighted_retrieval_term() -> None:
    def forward(self: Any, x: Any, passages: Any, y: Any) -> Any:
        scores = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]) * self.scale
        return _next_token_lm(self, y), scores

    model = tiny("retrieval_augmented_cross_entropy", forward, retrieval_weight=0.5, num_passages=3)
    batch = {"x": torch.zeros(2, 2, dtype=torch.long), "passages": torch.zeros(2, 3, 4),
             "y": torch.tensor([[1, 2, 3]] * 2)}
    _task("retrieval_augmented_cross_entropy").targets(model, (), batch, 2, torch.Generator().manual_seed(0), 0, None)
    assert batch["positive"].shape == (2,) and batch["positive"].max() < 3
    batch["positive"] = torch.tensor([0, 1])
    with slots.bind(inputs=("x", "passages", "y")):
        m = _check(model, "retrieval_augmented_cross_entropy", batch)
        retrieval = F.cross_entropy(torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]), batch["positive"])
        assert _loss(model, batch) == pytest.approx(0.5 * float(retrieval), rel=1e-5)
    assert m["retrieval_recall_at_1"] == 0.5


# ------------------------------------------------------------------ classification
def test_classification_metrics_on_known_logits() -> None:
    logits = _t([[9, 8, 7, 6, 5, 4, 3], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1, 0]])
    model = tiny("cross_entropy", lambda self, x: logits * self.scale, num_classes=7)
    label = torch.tensor([0, 4, 6])  # ranked first, third and seventh
    m = _check(model, "cross_entropy", {"x": torch.zeros(3), "label": label})
    assert m["accuracy"] == pytest.approx(1 / 3) and m["top5_accuracy"] == pytest.approx(2 / 3)
    assert _loss(model, {"x": torch.zeros(3), "label": label}) == pytest.approx(float(F.cross_entropy(logits, label)))
    batch: dict[str, Any] = {"x": torch.zeros(3)}
    _task("cross_entropy").targets(model, (), batch, 3, torch.Generator().manual_seed(0), 0, None)
    assert batch["label"].shape == (3,) and 0 <= int(batch["label"].min()) and int(batch["label"].max()) < 7


def test_graph_classification_targets_one_label_per_graph() -> None:
    model = tiny("graph_cross_entropy", lambda self, x, graph: _t([[1, 0], [0, 1]]) * self.scale, num_classes=2,
                 graphs=2)
    batch: dict[str, Any] = {"x": torch.zeros(5, 3), "graph": torch.tensor([0, 0, 1, 1, 1])}
    _task("graph_cross_entropy").targets(model, (), batch, 1, torch.Generator().manual_seed(0), 0, None)
    assert batch["label"].shape == (2,)
    batch["label"] = torch.tensor([0, 0])
    with slots.bind(inputs=("x", "graph")):
        assert _check(model, "graph_cross_entropy", batch)["accuracy"] == 0.5


def test_token_macro_f1_by_hand() -> None:
    # predictions [0, 0, 1, 2] against labels [0, 1, 1, 1]: class 0 tp 1 fp 1 -> F1 2/3; class 1 tp 1 fn 2 -> F1 1/2;
    # class 2 fp 1 -> F1 0; all three present: macro F1 (2/3 + 1/2 + 0) / 3
    logits = 10 * F.one_hot(torch.tensor([[0, 0, 1, 2]]), 4).float()
    model = tiny("token_cross_entropy", lambda self, x: logits * self.scale, num_classes=4)
    batch = {"x": torch.zeros(1, 4), "labels": torch.tensor([[0, 1, 1, 1]])}
    m = _check(model, "token_cross_entropy", batch)
    assert m["token_accuracy"] == 0.5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)


def test_span_exact_match_and_f1_by_hand() -> None:
    start = _t([[0, 9, 0, 0, 0], [0, 0, 9, 0, 0]])
    end = _t([[0, 0, 0, 9, 0], [0, 0, 0, 0, 9]])
    model = tiny("span_cross_entropy", lambda self, x: torch.stack((start, end), -1) * self.scale)
    # predicted spans [1, 3] and [2, 4]; gold [1, 3] (exact) and [3, 4]: overlap 2, precision 2/3, recall 1
    batch = {"x": torch.zeros(2, 5), "start": torch.tensor([1, 3]), "end": torch.tensor([3, 4])}
    m = _check(model, "span_cross_entropy", batch)
    assert m["exact_match"] == 0.5
    assert m["span_f1"] == pytest.approx((1 + 2 * (2 / 3) * 1 / (2 / 3 + 1)) / 2)
    targets: dict[str, Any] = {"x": torch.zeros(4, 5)}
    _task("span_cross_entropy").targets(model, (torch.zeros(4, 5),), targets, 4, torch.Generator().manual_seed(1), 0,
                                        None)
    assert bool((targets["start"] <= targets["end"]).all()) and int(targets["end"].max()) <= 4


def test_pixel_mean_iou_by_hand() -> None:
    pred = torch.tensor([[[0, 0], [1, 1]]])
    mask = torch.tensor([[[0, 1], [1, 1]]])  # class 0: inter 1, union 2; class 1: inter 2, union 3
    logits = 10 * F.one_hot(pred, 3).permute(0, 3, 1, 2).float()
    model = tiny("pixel_cross_entropy", lambda self, x: logits * self.scale, num_classes=3)
    m = _check(model, "pixel_cross_entropy", {"x": torch.zeros(1, 3, 2, 2), "mask": mask})
    assert m["pixel_accuracy"] == 0.75 and m["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    batch: dict[str, Any] = {}
    _task("pixel_cross_entropy").targets(model, (torch.zeros(1, 3, 2, 2),), batch, 1, torch.Generator(), 0, None)
    assert batch["mask"].shape == (1, 2, 2)


def test_node_loss_reads_only_the_labelled_nodes() -> None:
    logits = _t([[5, 0], [5, 0], [0, 5], [0, 5]])
    model = tiny("node_cross_entropy", lambda self, x, edges: logits * self.scale, num_classes=2)
    batch = {"x": torch.zeros(4, 3), "edges": torch.zeros(2, 0, dtype=torch.long), "label": torch.tensor([0, 1, 1, 0]),
             "train_mask": torch.tensor([True, False, True, False])}
    with slots.bind(inputs=("x", "edges")):
        m = _check(model, "node_cross_entropy", batch)
        assert m == {"accuracy": 1.0, "macro_f1": 1.0}  # the wrong nodes 1 and 3 are not in the mask
        del batch["train_mask"]
        assert float(model.metrics(batch)["accuracy"]) == 0.5
    targets: dict[str, Any] = {}
    _task("node_cross_entropy").targets(model, (torch.zeros(4, 3),), targets, 1, torch.Generator(), 0, None)
    assert targets["train_mask"].tolist() == [True, False, True, False]


def test_vqa_score_is_the_soft_score_of_the_prediction() -> None:
    model = tiny("vqa_soft_bce", lambda self, x: _t([[0, 9, 0], [9, 0, 0]]) * self.scale, num_classes=3)
    scores = _t([[0.0, 1 / 3, 1.0], [1.0, 0.0, 0.0]])
    m = _check(model, "vqa_soft_bce", {"x": torch.zeros(2), "answer_scores": scores})
    assert m["vqa_score"] == pytest.approx((1 / 3 + 1) / 2) and m["exact_match"] == 0.5
    batch: dict[str, Any] = {}
    _task("vqa_soft_bce").targets(model, (), batch, 4, torch.Generator().manual_seed(0), 0, None)
    votes = batch["answer_scores"]
    assert votes.shape == (4, 3) and float(votes.max()) <= 1.0 and bool(((votes * 3).round() == votes * 3).all())


# ------------------------------------------------------------------ regression
def test_regression_metrics_by_hand() -> None:
    model = tiny("mse", lambda self, x: _t([[1, 2], [3, 4]]) * self.scale)
    m = _check(model, "mse", {"x": torch.zeros(2), "target": _t([[1, 0], [3, 8]])})  # errors 0, 2, 0, -4
    assert m["mae"] == pytest.approx(1.5) and m["rmse"] == pytest.approx(math.sqrt(5))
    forecast = tiny("forecast_mse", lambda self, x: _t([[[2.0], [4.0]]]) * self.scale)
    m = _check(forecast, "forecast_mse", {"x": torch.zeros(1, 3, 1), "target": _t([[[1.0], [5.0]]])})
    assert m["mape"] == pytest.approx((1 + 1 / 5) / 2)
    batch: dict[str, Any] = {}
    _task("forecast_mse").targets(forecast, (torch.zeros(1, 3, 1),), batch, 1, torch.Generator(), 0, None)
    assert batch["target"].shape == (1, 2, 1)


def test_anomaly_auc_and_average_precision_by_hand() -> None:
    # reconstruction 0: the score of each sample is its mean square; scores 4, 1, 9, 0 with labels 1, 0, 1, 0
    model = tiny("reconstruction_mse", lambda self, x: 0 * x * self.scale)
    batch = {"x": _t([[2, 2], [1, 1], [3, 3], [0, 0]]), "is_anomaly": torch.tensor([1, 0, 1, 0])}
    m = _check(model, "reconstruction_mse", batch)
    assert m == {"roc_auc": 1.0, "average_precision": 1.0}
    batch["is_anomaly"] = torch.tensor([0, 1, 1, 0])  # ranked 9 (hit), 4 (miss), 1 (hit), 0: AP (1 + 2/3) / 2
    m = {k: float(v) for k, v in model.metrics(batch).items()}
    assert m["average_precision"] == pytest.approx((1 + 2 / 3) / 2) and m["roc_auc"] == pytest.approx(0.75)


def test_chamfer_is_zero_on_the_target_and_known_off_it() -> None:
    cloud = _t([[[0, 0, 0], [1, 0, 0]]])
    model = tiny("chamfer", lambda self, x: cloud * self.scale)
    m = _check(model, "chamfer", {"x": torch.zeros(1), "points": cloud})
    assert m == {"chamfer_distance": 0.0, "f_score": 1.0}
    far = {"x": torch.zeros(1), "points": _t([[[0, 0, 0], [1, 0, 0.5]]])}  # one point 0.5 away both ways
    assert float(model.metrics(far)["chamfer_distance"]) == pytest.approx(0.25 / 2 + 0.25 / 2)
    assert float(model.metrics(far)["f_score"]) == pytest.approx(0.5)
    batch: dict[str, Any] = {}
    _task("chamfer").targets(model, (torch.zeros(1),), batch, 3, torch.Generator(), 0, None)
    assert batch["points"].shape == (3, 2, 3) and torch.allclose(batch["points"].norm(dim=-1), torch.ones(3, 2))


# ------------------------------------------------------------------ similarity
def test_contrastive_recall_and_rank_by_hand() -> None:
    model = tiny("in_batch_contrastive", lambda self, x: x * self.scale)
    # a's second row is nearer b's first row than its own positive: ranks 0, 1, 0
    batch = {"x": _t([[1, 0], [1, 0.1], [0, 1]]), "positive": _t([[1, 0], [0.5, 1], [0, 1]])}
    m = _check(model, "in_batch_contrastive", batch)
    assert m["recall_at_1"] == pytest.approx(2 / 3) and m["mean_reciprocal_rank"] == pytest.approx((1 + 0.5 + 1) / 3)
    targets: dict[str, Any] = {}
    _task("in_batch_contrastive").targets(model, (), targets, 2, None, 0, lambda m, b, s: (torch.full((b, 2), s),))
    assert targets["positive"].tolist() == [[2.0, 2.0], [2.0, 2.0]]  # a second view: the inputs of seed + 2


def test_symmetric_contrastive_recalls_both_ways() -> None:
    logits = _t([[5, 0, 0], [0, 0, 5], [0, 5, 4]])  # argmax of the rows 0, 2, 1 and of the columns 0, 2, 1
    model = tiny("symmetric_contrastive", lambda self, a, b: logits * self.scale)
    with slots.bind(inputs=("a", "b")):
        m = _check(model, "symmetric_contrastive", {"a": torch.zeros(3), "b": torch.zeros(3)})
    assert m == {"recall_at_1_a_to_b": pytest.approx(1 / 3), "recall_at_1_b_to_a": pytest.approx(1 / 3)}


def test_link_prediction_auc_and_accuracy_by_hand() -> None:
    z = _t([[1, 0], [1, 0], [-1, 0]])  # z0.z1 = 1, z0.z2 = -1, z1.z2 = -1
    model = tiny("link_bce", lambda self, x, edges: z * self.scale)
    batch = {"x": torch.zeros(3), "edges": torch.zeros(2, 1, dtype=torch.long),
             "pos_edges": torch.tensor([[0, 0], [1, 2]]), "neg_edges": torch.tensor([[1], [2]])}
    with slots.bind(inputs=("x", "edges")):
        m = _check(model, "link_bce", batch)
    # positives score 1, -1; the negative -1: pairs 1 > -1 and a tie: AUC (1 + 0.5) / 2; right: 1 > 0 and -1 <= 0
    assert m == {"roc_auc": 0.75, "accuracy": pytest.approx(2 / 3)}


def test_in_batch_softmax_masks_a_recurring_item() -> None:
    def forward(self: Any, x: Any, item: Any) -> Any:
        u = F.normalize(_t([[1, 0], [0, 1], [1, 1]]), dim=-1) * self.scale
        return u, u

    model = tiny("in_batch_softmax", forward, temperature=0.1)
    batch = {"x": torch.arange(3), "item": torch.tensor([7, 8, 7])}  # item 7 twice: rows 0 and 2 no negatives
    with slots.bind(inputs=("x", "item")):
        m = _check(model, "in_batch_softmax", batch)
    assert m == {"recall_at_10": 1.0, "ndcg_at_10": 1.0}


def test_pairwise_ranking_metrics_by_hand() -> None:
    model = tiny("pairwise_logistic", lambda self, user, item: _t([3, 2, 1, 0]) * self.scale)
    batch = {"user": torch.tensor([0, 0, 0, 0]), "item": torch.arange(4), "relevance": torch.tensor([3, 2, 1, 0])}
    with slots.bind(inputs=("user", "item")):
        m = _check(model, "pairwise_logistic", batch)
        assert m == {"ndcg_at_10": pytest.approx(1.0), "pairwise_accuracy": 1.0}
        batch["relevance"] = torch.tensor([0, 0, 0, 1])  # the relevant item last of four: NDCG 1 / log2(5)
        m = {k: float(v) for k, v in model.metrics(batch).items()}
    assert m == {"ndcg_at_10": pytest.approx(1 / math.log2(5)), "pairwise_accuracy": 0.0}
    targets: dict[str, Any] = {"user": torch.arange(8)}
    _task("pairwise_logistic").targets(model, (), targets, 8, torch.Generator().manual_seed(0), 0, None)
    assert targets["user"].tolist() == [0, 0, 0, 0, 4, 4, 4, 4]


# ------------------------------------------------------------------ reinforcement learning
def test_reinforce_loss_by_hand() -> None:
    logits = _t([[0, math.log(3)], [0, 0]])  # pi = (1/4, 3/4) and (1/2, 1/2)
    model = tiny("reinforce", lambda self, x: logits * self.scale, entropy_coef=0.0, num_actions=2)
    batch = {"x": torch.zeros(2), "action": torch.tensor([1, 0]), "return": _t([1.0, -1.0])}
    m = _check(model, "reinforce", batch)
    # normalised returns +1, -1: -(log 3/4 * 1 + log 1/2 * -1) / 2
    assert _loss(model, batch) == pytest.approx(-(math.log(0.75) - math.log(0.5)) / 2, rel=1e-5)
    assert m["mean_return"] == 0.0 and m["entropy"] == pytest.approx(
        (-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(2)) / 2, rel=1e-5)


def test_dqn_target_is_double_dqn_with_done() -> None:
    q = {0: _t([[1, 2]]), 1: _t([[10, 0]])}  # observation value -> Q(s, .)
    model = tiny("dqn_td", lambda self, x: q[int(x[0])] * self.scale, gamma=0.5, num_actions=2)
    batch = {"x": torch.zeros(1), "action": torch.tensor([1]), "reward": _t([1.0]), "next_x": torch.ones(1),
             "done": _t([0.0])}
    m = _check(model, "dqn_td", batch)
    assert m == {"mean_q": 2.0, "td_error": pytest.approx(4.0)}  # target 1 + 0.5 * Q(s', argmax) = 1 + 5 = 6
    batch["done"] = _t([1.0])
    assert float(model.metrics(batch)["td_error"]) == pytest.approx(1.0)


def test_ppo_at_the_rollout_policy_has_ratio_one() -> None:
    logits = _t([[0, 1], [2, 0]])

    def forward(self: Any, x: Any) -> Any:
        return logits * self.scale, _t([[0.5], [1.5]]) * self.scale

    model = tiny("ppo_clip", forward, clip_range=0.2, value_coef=0.5, entropy_coef=0.0, num_actions=2)
    action = torch.tensor([1, 0])
    batch = {"x": torch.zeros(2), "action": action, "advantage": _t([1.0, -1.0]), "return": _t([0.5, 1.5]),
             "old_log_prob": F.log_softmax(logits, -1).gather(-1, action[:, None]).squeeze(-1)}
    m = _check(model, "ppo_clip", batch)
    assert m["approx_kl"] == pytest.approx(0.0, abs=1e-6) and m["clip_fraction"] == 0.0
    assert m["explained_variance"] == pytest.approx(1.0)
    assert _loss(model, batch) == pytest.approx(0.0, abs=1e-6)  # -(1 - 1) / 2 + 0.5 * 0
    targets: dict[str, Any] = {}
    _task("ppo_clip").targets(model, (torch.zeros(2),), targets, 2, torch.Generator().manual_seed(0), 0, None)
    assert set(targets) == {"action", "old_log_prob", "advantage", "return"}


def _gaussian(self: Any, x: Any) -> Any:
    return _t([[0.0, 1.0]]) * self.scale, torch.zeros(1, 2) * self.scale


def test_gaussian_policies_log_density_by_hand() -> None:
    model = tiny("reinforce_gaussian", _gaussian, entropy_coef=0.0)
    batch = {"x": torch.zeros(1), "action": _t([[1.0, 1.0]]), "return": _t([2.0])}
    m = _check(model, "reinforce_gaussian", batch)
    assert m["entropy"] == pytest.approx(math.log(2 * math.pi * math.e))  # two unit Gaussians
    ppo = tiny("ppo_clip_gaussian", lambda self, x: (*_gaussian(self, x), _t([[0.0]]) * self.scale), clip_range=0.2,
               value_coef=1.0, entropy_coef=0.0)
    logp = -0.5 * 1.0 - math.log(2 * math.pi)  # N(1; 0, 1) N(1; 1, 1)
    batch = {"x": torch.zeros(1), "action": _t([[1.0, 1.0]]), "old_log_prob": _t([logp]), "advantage": _t([1.0]),
             "return": _t([0.0])}
    m = _check(ppo, "ppo_clip_gaussian", batch)
    assert m["approx_kl"] == pytest.approx(0.0, abs=1e-6)
    targets: dict[str, Any] = {}
    _task("ppo_clip_gaussian").targets(ppo, (torch.zeros(1),), targets, 1, torch.Generator().manual_seed(0), 0, None)
    assert targets["action"].shape == (1, 2) and targets["old_log_prob"].shape == (1,)


def test_world_model_terms() -> None:
    def forward(self: Any, x: Any, action: Any) -> Any:
        return x * self.scale, _t([[1.0]]) * self.scale, _t([[3.0]]) * self.scale

    model = tiny("world_model", forward)
    batch = {"x": _t([[1.0, 2.0]]), "action": torch.tensor([0]), "next_x": _t([[1.0, 4.0]]), "reward": _t([0.0]),
             "done": _t([1.0])}
    with slots.bind(inputs=("x", "action")):
        m = _check(model, "world_model", batch)
    assert m == {"next_observation_mse": 2.0, "reward_mse": 1.0, "done_accuracy": 1.0}


# ------------------------------------------------------------------ detection and masks
def test_dense_detection_loss_and_metrics_run() -> None:
    cells = sum((64 // s) ** 2 for s in detection.DETECTION_STRIDES)
    model = tiny("dense_detection", lambda self, x: (torch.zeros(x.shape[0], cells, 3) * self.scale,
                                                     torch.zeros(x.shape[0], cells, 4) * self.scale),
                 (detection.detect,), image_size=64, num_classes=3)
    batch: dict[str, Any] = {"x": torch.zeros(2, 3, 64, 64)}
    _task("dense_detection").targets(model, (), batch, 2, torch.Generator().manual_seed(0), 0, None)
    assert (batch["labels"] >= 0).sum(-1).tolist() == [1, 2]  # objects per image: 1, 2
    m = _check(model, "dense_detection", batch)
    assert 0.0 <= m["map_50"] <= 1.0 and 0.0 <= m["recall_50"] <= 1.0


def test_set_detection_finds_the_boxes_it_predicts() -> None:
    gt = _t([[[8, 8, 40, 40], [0, 0, 0, 0]]])
    cxcywh = _t([[[24 / 64, 24 / 64, 32 / 64, 32 / 64], [0.5, 0.5, 0.1, 0.1]]])
    logits = _t([[[9, 0, 0], [0, 0, 9]]])  # query 0: class 0; query 1: no object
    model = tiny("set_detection", lambda self, x: (logits * self.scale, cxcywh * self.scale), (matching.detect,),
                 image_size=64, num_classes=2)
    m = _check(model, "set_detection", {"x": torch.zeros(1, 3, 64, 64), "boxes": gt, "labels": torch.tensor([[0, -1]])})
    assert m == {"map_50": 1.0, "recall_50": 1.0}


def test_mask_set_tasks_on_their_own_targets() -> None:
    size = 16

    def forward(self: Any, x: Any) -> Any:
        return torch.zeros(x.shape[0], 3, 3) * self.scale, torch.zeros(x.shape[0], 3, size // 4, size // 4) * self.scale

    for loss in ("mask_set_instance", "mask_set_panoptic"):
        model = tiny(loss, forward, (masks.instance_inference, masks.panoptic_inference), image_size=size,
                     num_classes=2)
        batch: dict[str, Any] = {"x": torch.zeros(2, 3, size, size)}
        _task(loss).targets(model, (), batch, 2, torch.Generator().manual_seed(0), 0, None)
        assert float(batch["masks"].sum(1).max()) <= 1.0  # disjoint segments
        assert bool(((batch["labels"] >= 0) == (batch["masks"].sum((2, 3)) > 0)).all())
        _check(model, loss, batch)


# ------------------------------------------------------------------ diffusion
def test_diffusion_buffers_loss_and_sampler() -> None:
    def forward(self: Any, x: Any, timestep: Any, text: Any) -> Any:
        assert timestep.shape == (x.shape[0],) and text.shape[0] == x.shape[0]
        return 0.1 * x * self.scale

    model = tiny("diffusion_mse", forward)
    config = SimpleNamespace(beta_schedule="linear", timesteps=10, beta_start=1e-4, beta_end=0.02, channels=2,
                             image_size=3)
    model.config = config
    _task("diffusion_mse").init(model, config)
    assert model.alphas_cumprod.shape == (10,) and "alphas_cumprod" not in model.state_dict()
    text = torch.tensor([[1, 2], [3, 4]])
    with slots.bind(inputs=("x", "timestep", "text"), timestep="timestep", shape=("channels", "image_size", 3)):
        _check(model, "diffusion_mse", {"x": torch.randn(2, 2, 3, 3), "timestep": torch.zeros(2), "text": text})
        ddim = model.sample(text, steps=4, generator=torch.Generator().manual_seed(0))
        again = model.sample(text, steps=4, generator=torch.Generator().manual_seed(0))
        guided = model.sample(text, steps=4, guidance_scale=3.0, generator=torch.Generator().manual_seed(0))
        ddpm = model.sample(text, steps=4, method="ddpm", generator=torch.Generator().manual_seed(0))
    assert ddim.shape == guided.shape == ddpm.shape == (2, 2, 3, 3) and torch.equal(ddim, again)
    with pytest.raises(ValueError, match="method must be"):
        model.sample(text, method="euler")
