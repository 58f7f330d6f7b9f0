"""Each task's loss, metrics and training batch as PyTorch code, keyed by the loss name the compiler picked
(metagen_compiler/semantics/tasks.py). The code is real Python: one class per task in backends/pytorch/runtime/
objectives/ (its __init__ says how the class's methods map to model.py's), which tests import and run; this
module reads those classes' text (never importing them, so never torch) and turns each into the format templates
codegen fills in:

- `loss`: the body of `Model.loss(self, batch)`, returning a scalar;
- `metrics`: the body of `Model.metrics(self, batch)`, returning {metric name: float tensor} with
  exactly the task's metric names;
- `batch`: lines of `example_batch` after `batch` holds the inputs (`inputs` the tuple, `g` a seeded
  generator, `model` the module): the targets, random but of the right form;
- `init`: lines at the end of `Model.__init__` (the diffusion task's noise schedule buffers);
- `methods`: more methods of the model as template lines (diffusion's sample(), which takes the inputs' names);
- `source_methods`: more methods that are runtime code as it is, by `module.name` of backends/pytorch/runtime/
  (detect(), an agent's `act`, a DQN's `update_target`), after `metrics`;
- `imports`: modules those need beyond torch (one `import` line each in the generated file).
The runtime definitions all of these read are found by `loss_helpers` and pasted into model.py with those they
read in turn (lowering.runtime_source).

In the templates `{x}` is the model's first input, as named in the spec; `{args}` all its inputs from the batch,
in forward's order (`batch["image"], batch["text"]`); `{y}` the token input a next-token loss predicts (the
family-declared `target` input of an encoder-decoder, else the first) and `{shifted}` all inputs with `tokens`
(= batch["{y}"]) cut before its last token, for teacher forcing. The task code spells them as the slot functions
of runtime/objectives/slots.py: the strings "x", "next_x" and "y" become "{x}", "next_{x}" and "{y}", and a slot
function starred in an argument list (`self(*batch_inputs(batch))`) becomes its field (`self({args})`); every
other brace is doubled, and a trailing `# noqa` or `# type: ignore` comment is dropped (it is for the linters of
the task code, not model.py's).

The diffusion task (`diffusion_mse`) calls the model on the noised input: `{noisy}` is forward's arguments
with the first input replaced by `x_t` and the timestep by `t`; in `sample`, `{cond}` is the conditioning
inputs' names (all but those two), `{first}` the first of them, `{shape}` the first input's sizes after the batch
dimension, `{step}` the call at `x`, `t` and `{guided}` the call on the batch doubled by the unconditional
inputs `uncond`.

Reinforcement-learning batches hold transitions: `{x}` the observations, "action" (B,) the actions taken,
and what each loss needs besides ("reward", "next_{x}", "done", "return", "advantage", "old_log_prob").
"""

from __future__ import annotations

import functools
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

from .lowering import runtime_method, runtime_names_in

__all__ = ["LOSSES", "TARGET_INPUT", "TIMESTEP_INPUT", "LossCode", "loss_helpers", "task_templates"]

TARGET_INPUT = "target"  # an encoder-decoder's decoder tokens (`encoder target: text = ...` in its family)
TIMESTEP_INPUT = "timestep"  # a diffusion model's family-declared timestep input (`encoder timestep: timestep = ...`)

_OBJECTIVES = Path(__file__).resolve().parent / "runtime" / "objectives"

# the task code's slots (runtime/objectives/slots.py) -> template fields
_CALL_SLOTS = {"batch_inputs": "args", "shifted_inputs": "shifted", "noised_inputs": "noisy", "step_inputs": "step",
               "guided_inputs": "guided", "sample_shape": "shape"}
_STRING_SLOTS = {'"x"': '"{x}"', '"next_x"': '"next_{x}"', '"y"': '"{y}"'}
_PRAGMAS = ("# noqa", "# type: ignore")
# a task class's methods whose bodies are template fields ("targets" is `batch`); any other public one is a method
_BODIES = {"loss": "loss", "metrics": "metrics", "targets": "batch", "init": "init"}


_CLASS = re.compile(r"class (\w+)(?:\((\w+)\))?:")
_DEF = re.compile(r" {4}def (\w+)\(")


@dataclass(frozen=True)
class _Method:
    name: str
    lines: tuple[str, ...]  # from its first decorator, dedented to the class body's level
    head: int  # the index of its `def` line


@functools.cache
def _module(name: str) -> dict[str, tuple[str, tuple[_Method, ...]]]:
    """An objectives module's classes by name: each one's base and methods, found in its text (faster than
    parsing it; tests/test_objectives.py checks the result against the module's syntax tree)."""
    lines = (_OBJECTIVES / f"{name}.py").read_text(encoding="utf-8").split("\n")
    classes: dict[str, tuple[str, tuple[_Method, ...]]] = {}
    i = 0
    while i < len(lines):
        cls = _CLASS.match(lines[i])
        i += 1
        if not cls:
            continue
        methods: list[_Method] = []
        first = None  # the line of the next method's first decorator
        while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
            if first is None and lines[i].startswith("    @"):
                first = i
            if (d := _DEF.match(lines[i])) is not None:
                first = i if first is None else first
                end = i + 1  # the body: blank lines and lines indented deeper than the def
                while end < len(lines) and (not lines[end].strip() or lines[end].startswith(" " * 5)):
                    end += 1
                while not lines[end - 1].strip():
                    end -= 1
                methods.append(_Method(d.group(1), tuple(_dedent(lines[first:end], 4)), i - first))
                first, i = None, end
            else:
                i += 1
        classes[cls.group(1)] = (cls.group(2) or "", tuple(methods))
    return classes


def _dedent(lines: list[str], width: int) -> list[str]:
    assert all(not ln.strip() or ln.startswith(" " * width) for ln in lines), lines
    return [ln[width:] if ln.strip() else "" for ln in lines]


def _body(method: _Method) -> list[str]:
    """The lines of a method's body (its docstring left out), comments and layout as they are."""
    assert method.lines[method.head].endswith(":"), f"{method.name}: the task code's def is one line"
    body = _dedent(list(method.lines[method.head + 1 :]), 4)
    if body and body[0].startswith('"""'):  # a docstring: up to the line it ends on
        last = 0 if body[0].count('"""') > 1 else next(k for k, ln in enumerate(body) if k and '"""' in ln)
        body = body[last + 1 :]
    return body


def _template(lines: list[str]) -> tuple[str, ...]:
    """Task code as format template lines: the slots become fields, every other brace doubled, pragmas dropped."""
    if not lines:
        return ()
    text = "\n".join(lines) + "\n"
    starts = [0]
    for ln in lines:
        starts.append(starts[-1] + len(ln) + 1)

    def at(pos: tuple[int, int]) -> int:
        return starts[pos[0] - 1] + pos[1]

    toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)]
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in text, in order
    i = 0
    while i < len(toks):
        t = toks[i]
        nxt = toks[i + 1].string if i + 1 < len(toks) else ""
        starred = t.string == "*" and i > 0 and toks[i - 1].string in ("(", ",")
        if t.type == tokenize.STRING and t.string in _STRING_SLOTS:
            edits.append((at(t.start), at(t.end), _STRING_SLOTS[t.string]))
        elif starred and nxt in _CALL_SLOTS:
            assert toks[i + 2].string == "(", t.line
            depth, j = 0, i + 2
            while True:
                depth += {"(": 1, ")": -1}.get(toks[j].string, 0)
                if depth == 0:
                    break
                j += 1
            edits.append((at(t.start), at(toks[j].end), "{" + _CALL_SLOTS[nxt] + "}"))
            i = j
        elif starred and nxt == "cond":
            edits.append((at(t.start), at(toks[i + 1].end), "{cond}"))
            i += 1
        elif t.string == "cond" and [x.string for x in toks[i + 1 : i + 4]] == ["[", "0", "]"]:
            edits.append((at(t.start), at(toks[i + 3].end), "{first}"))
            i += 3
        elif t.type == tokenize.COMMENT and t.string.startswith(_PRAGMAS):
            edits.append((at(toks[i - 1].end), at(t.end), ""))
        i += 1
    out, done = [], 0
    for start, end, new in edits:
        out += [text[done:start].replace("{", "{{").replace("}", "}}"), new]
        done = end
    out.append(text[done:].replace("{", "{{").replace("}", "}}"))
    return tuple("".join(out).split("\n")[:-1])


@functools.cache
def task_templates(source: str) -> dict[str, tuple[str, ...]]:
    """A task class's template fields (loss, metrics, batch, init, methods) by `module.Class` of runtime/objectives:
    its own methods and those it inherits from a class of the same module."""
    module, name = source.split(".")
    classes = _module(module)
    chain = [name]
    while classes[chain[-1]][0] in classes:  # a base class of the same module (else TaskModel)
        chain.append(classes[chain[-1]][0])
    bodies: dict[str, list[str]] = {}
    methods: dict[str, list[str]] = {}
    for cls in reversed(chain):
        for method in classes[cls][1]:
            if method.name in _BODIES:
                bodies[_BODIES[method.name]] = _body(method)
            elif not method.name.startswith("_"):
                methods[method.name] = list(method.lines)
    whole = [ln for i, m in enumerate(methods.values()) for ln in ([""] if i else []) + m]
    return {field: _template(bodies.get(field, [])) for field in _BODIES.values()} | {"methods": _template(whole)}


@dataclass(frozen=True)
class LossCode:
    source: str  # the task's class in backends/pytorch/runtime/objectives: `module.Class`
    doc: str  # the docstring of Model.loss, a template as the code is
    # runtime definitions model.py gets though nothing calls them (loss_helpers finds the ones the code calls)
    helpers: tuple[str, ...] = ()
    # more methods: runtime model methods as `module.name` (detection's detect()), `module.name as method` where the
    # class names it otherwise (rl.policy_act as act); one blank line between two, "" for one more
    source_methods: tuple[str, ...] = ()
    imports: tuple[str, ...] = ()  # modules the methods need beyond torch (one `import` line each)

    @property
    def loss(self) -> tuple[str, ...]:
        return task_templates(self.source)["loss"]

    @property
    def metrics(self) -> tuple[str, ...]:
        return task_templates(self.source)["metrics"]

    @property
    def batch(self) -> tuple[str, ...]:
        return task_templates(self.source)["batch"]

    @property
    def init(self) -> tuple[str, ...]:
        """Lines at the end of Model.__init__ (the diffusion noise schedule's buffers)."""
        return task_templates(self.source)["init"]

    @property
    def methods(self) -> tuple[str, ...]:
        """More methods, as template lines formatted like `loss` (diffusion's sample())."""
        return task_templates(self.source)["methods"]


_MASK_DOC = (
    'batch = {{"{x}": images, "masks": (B, max_segments, H, W) binary float, "labels": (B, max_segments) class ids,\n'
    "-1 padding}}. MaskFormer's set loss: Hungarian matching on -p(class) + 20 focal + 1 dice, then cross-entropy\n"
    "(no object weighted 0.1) + 20 sigmoid focal + 1 dice of the matched masks (upsampled to the ground truth's size)."
)

LOSSES: dict[str, LossCode] = {
    "next_token_cross_entropy": LossCode(
        "language.NextTokenCrossEntropy",
        'Next-token cross-entropy: batch = {{"{y}": (B, T) token ids}}.',
    ),
    "transcription_cross_entropy": LossCode(
        "language.TranscriptionCrossEntropy",
        'Next-token cross-entropy of the transcript (teacher forcing): batch = {{"{y}": (B, T) token ids, ...}}.',
    ),
    "cross_entropy": LossCode(
        "classification.CrossEntropy",
        'Cross-entropy: batch = {{"{x}": inputs, "label": (B,) class ids}}.',
    ),
    "mse": LossCode(
        "regression.Mse",
        'Mean squared error: batch = {{"{x}": inputs, "target": (B, outputs)}}.',
    ),
    "token_cross_entropy": LossCode(
        "classification.TokenCrossEntropy",
        'Per-token cross-entropy: batch = {{"{x}": (B, T) token ids, "labels": (B, T) label ids}}.',
    ),
    "span_cross_entropy": LossCode(
        "classification.SpanCrossEntropy",
        'Extractive question answering (SQuAD): batch = {{"{x}": (B, T) token ids of question and context,\n'
        '"start": (B,) and "end": (B,) positions of the answer span}}; the mean of the start and end cross-entropies.',
    ),
    "chamfer": LossCode(
        "regression.Chamfer",
        'Symmetric Chamfer distance (squared, as in Fan et al. 2017 and Point-E): batch = {{"{x}": prompts,\n'
        '"points": (B, M, 3) the target point clouds}}; the mean over predicted points of the squared distance to the\n'
        "nearest target point plus the mean over target points of the squared distance to the nearest prediction.",
    ),
    "in_batch_contrastive": LossCode(
        "similarity.InBatchContrastive",
        'In-batch InfoNCE (temperature 0.05): batch = {{"{x}": inputs, "positive": a second view of each input}};\n'
        "the i-th input's positive is the i-th row of `positive`, the other rows are its negatives.",
    ),
    "pixel_cross_entropy": LossCode(
        "classification.PixelCrossEntropy",
        'Per-pixel cross-entropy: batch = {{"{x}": images, "mask": (B, H, W) class ids}}.',
    ),
    "symmetric_contrastive": LossCode(
        "similarity.SymmetricContrastive",
        "Symmetric InfoNCE over the batch (CLIP): the i-th first input matches the i-th second input;\n"
        "batch = {{the model's inputs}}, nothing else: the pairing is the label.",
    ),
    "forecast_mse": LossCode(
        "regression.ForecastMse",
        'Mean squared error of the forecast: batch = {{"{x}": (B, lookback, features), "target": (B, '
        'horizon, features)}}.',
    ),
    "reconstruction_mse": LossCode(
        "regression.ReconstructionMse",
        'Reconstruction error, trained on normal data: batch = {{"{x}": inputs, "is_anomaly": (B,) 0/1 labels\n'
        'for the metrics}}; the anomaly score of a sample is its mean squared reconstruction error.',
    ),
    "node_cross_entropy": LossCode(
        "classification.NodeCrossEntropy",
        'Cross-entropy over the nodes of one graph: batch = {{the graph inputs, "label": (N,) class ids,\n'
        '"train_mask": (N,) bool, optional: the nodes with a known label (all nodes without it)}}.',
    ),
    "link_bce": LossCode(
        "similarity.LinkBce",
        'Link prediction, binary cross-entropy of edge scores z_i . z_j: batch = {{the graph inputs (its edges pass\n'
        'the messages), "pos_edges": (2, P) edges to predict, "neg_edges": (2, Q) sampled non-edges}}.',
    ),
    "graph_cross_entropy": LossCode(
        "classification.GraphCrossEntropy",
        'Cross-entropy per graph: batch = {{the graph inputs with each node\'s graph id, "label": '
        '(graphs,) class ids}}.',
    ),
    "vqa_soft_bce": LossCode(
        "classification.VqaSoftBce",
        'VQA soft-score loss (Teney et al. 2018; as ViLT): batch = {{"{x}": inputs, "answer_scores": (B, num_classes)\n'
        "each answer's soft score, min(annotators who gave it / 3, 1)}}. Binary cross-entropy per answer, summed over\n"
        "the answers and averaged over the batch. vqa_score: the soft score of the predicted answer (VQA accuracy);\n"
        "exact_match: the prediction is the answer with the highest score.",
    ),
    "reinforce": LossCode(
        "rl.Reinforce",
        'REINFORCE (Williams 1992): batch = {{"{x}": observations, "action": (B,) actions taken, "return": (B,)\n'
        "discounted returns from each step}}. The baseline is the batch's mean return (returns normalised to zero\n"
        "mean and unit variance), and an entropy bonus of weight config.entropy_coef keeps the policy exploring.",
        source_methods=("rl.policy_act as act",),
    ),
    "dqn_td": LossCode(
        "rl.DqnTd",
        'DQN temporal-difference loss (Huber): batch = {{"{x}": observations, "action": (B,) actions taken,\n'
        '"reward": (B,), "next_{x}": the next observations, "done": (B,) 1.0 where the episode ended}}. The target\n'
        "r + gamma (1 - done) Q'(s', argmax_a Q(s', a)) is Double DQN (van Hasselt et al. 2016) with the target\n"
        "network of update_target(); before the first update_target() Q' is the online network, detached.",
        source_methods=("rl.q_act as act", "rl.update_target"),
        imports=("copy",),
    ),
    "ppo_clip": LossCode(
        "rl.PpoClip",
        'PPO clipped surrogate (Schulman et al. 2017) with a shared trunk: batch = {{"{x}": observations,\n'
        '"action": (B,) actions taken, "old_log_prob": (B,) their log-probability under the rollout policy,\n'
        '"advantage": (B,) advantage estimates, "return": (B,) value targets}}; clip range config.clip_range,\n'
        "value loss weight config.value_coef, entropy bonus weight config.entropy_coef.",
        source_methods=("rl.actor_critic_act as act",),
    ),
    "world_model": LossCode(
        "rl.WorldModel",
        'World model: batch = {{"{x}": observations, "action": (B,) actions taken (the model\'s second input),\n'
        '"next_{x}": the observations that followed, "reward": (B,), "done": (B,) 1.0 where the episode ended}};\n'
        "squared error of the next observation and of the reward, binary cross-entropy of the episode end.",
        source_methods=("rl.planning_act as act",),
    ),
    "in_batch_softmax": LossCode(
        "similarity.InBatchSoftmax",
        'In-batch sampled softmax: batch = {{"user": (B,) user ids, "item": (B,) the item each user '
        'interacted with}};\n'
        "the other items of the batch are the negatives (a recurring item is masked out), the scores u . v of unit\n"
        "vectors divided by config.temperature (Yi et al. 2019, without their sampling-bias correction).",
        source_methods=("recsys.recommend",),
    ),
    "pairwise_logistic": LossCode(
        "similarity.PairwiseLogistic",
        'Pairwise logistic loss (RankNet): batch = {{"user": (B,) query ids, "item": (B,) candidate ids,\n'
        '"relevance": (B,) graded relevance (0 = not relevant)}}; each row is a (query, candidate) pair, the rows of\n'
        "one query id a list; log(1 + exp(s_j - s_i)) over the pairs of a list where i is the more relevant.",
    ),
    "reinforce_gaussian": LossCode(
        "rl.ReinforceGaussian",
        'REINFORCE with a Gaussian policy (continuous actions): batch = {{"{x}": observations, '
        '"action": (B, action_dim)\n'
        'actions taken, "return": (B,) discounted returns}}; baseline, normalisation and entropy bonus as with\n'
        "discrete actions, the log-probability that of N(mean, exp(log_std)^2) with independent action dims.",
        source_methods=("rl.gaussian_act as act",),
    ),
    "ppo_clip_gaussian": LossCode(
        "rl.PpoClipGaussian",
        'PPO clipped surrogate with a Gaussian policy (continuous actions): batch = {{"{x}": observations,\n'
        '"action": (B, action_dim) actions taken, "old_log_prob": (B,) their log-density under the rollout policy,\n'
        '"advantage": (B,), "return": (B,)}}; clip range config.clip_range, weights config.value_coef and\n'
        "config.entropy_coef; the policy N(mean, exp(log_std)^2) with independent action dims.",
        source_methods=("rl.gaussian_actor_critic_act as act",),
    ),
    "diffusion_mse": LossCode(
        "diffusion.DiffusionMse",
        "Epsilon-prediction loss (DDPM's L_simple): for clean inputs x0 = batch[\"{x}\"], t uniform "
        "in [0, timesteps) and\n"
        "noise ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise; the mean squared error of "
        "the predicted noise.\n"
        "batch[\"{t}\"] is not read (the loss draws its own t); the other inputs condition the model.",
    ),
    "dense_detection": LossCode(
        "detection.DenseDetection",
        'Anchor-free detection loss: batch = {{"{x}": images, "boxes": (B, max_objects, 4) x1 y1 x2 y2 in pixels,\n'
        '"labels": (B, max_objects) class ids, -1 padding}}. FCOS centre-sampling assignment, focal loss over every\n'
        "cell and class and 2 (1 - GIoU) over the positives, each divided by the number of positives.",
        helpers=("box_cxcywh_to_xyxy", "box_xyxy_to_cxcywh"),
        source_methods=("detection.detect",),
    ),
    "set_detection": LossCode(
        "detection.SetDetection",
        'DETR\'s set prediction loss: batch = {{"{x}": images, "boxes": (B, max_objects, 4) x1 y1 x2 y2 in pixels,\n'
        '"labels": (B, max_objects) class ids, -1 padding}}. Hungarian matching, then cross-entropy '
        '(no-object weighted\n'
        "0.1) + 5 L1 + 2 (1 - GIoU) of the matched boxes (normalised cx cy w h).",
        source_methods=("matching.detect",),
    ),
    "codebook_cross_entropy": LossCode(
        "language.CodebookCrossEntropy",
        'Codec language model loss (MusicGen): batch = {{"{x}": (B, K, T) aligned codec tokens}}. The tokens are laid\n'
        "out in the delay pattern (delay_pattern: codebook k k steps late, a start column, gaps of the special id\n"
        "config.codebook_size); the model reads all but the last column and predicts the next column of every\n"
        "codebook; the cross-entropy of each codebook over its real tokens, averaged over the K codebooks.",
        source_methods=("codec.generate",),
    ),
    "retrieval_augmented_cross_entropy": LossCode(
        "language.RetrievalAugmentedCrossEntropy",
        'Retrieval-augmented generation (Fusion-in-Decoder reader, DPR retriever): batch = {{"{x}": (B, Tq) question\n'
        'tokens, "passages": (B, num_passages, Tp) candidate passages, "{y}": (B, T) answer tokens, "positive": (B,)\n'
        "the index of the gold passage among the candidates}}. The answer's next-token cross-entropy "
        "(teacher forcing,\n"
        "the reader reading the top_k candidates by retrieval score) plus config.retrieval_weight times the\n"
        "cross-entropy of the retrieval scores over the candidates with the gold passage the target.",
    ),
    "mask_set_instance": LossCode(
        "detection.MaskSetInstance",
        "Instance segmentation by mask classification: " + _MASK_DOC,
        helpers=("panoptic_quality", "segments_from_masks"),
        source_methods=("masks.instance_inference", "", "masks.panoptic_inference"),
    ),
    "mask_set_panoptic": LossCode(
        "detection.MaskSetPanoptic",
        "Panoptic segmentation by mask classification: " + _MASK_DOC,
        helpers=("mask_map_50", "mean_matched_iou"),
        source_methods=("masks.instance_inference", "", "masks.panoptic_inference"),
    ),
}


@functools.cache
def loss_helpers(loss: str) -> frozenset[str]:
    """The runtime definitions a task's code reads: its loss, metrics, batch, init and methods (strings and comments
    left out), its runtime methods', and its `helpers`; model.py gets them with what they read (runtime_source)."""
    code = LOSSES[loss]
    names = runtime_names_in("\n".join((*code.loss, *code.metrics, *code.batch, *code.init, *code.methods)))
    methods = [runtime_method(key).uses for key in code.source_methods if key]
    return frozenset(names.union(code.helpers, *methods))
