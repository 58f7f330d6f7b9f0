"""Task pipelines: raw inputs -> a compiled model -> task-shaped answers, batched.

    from pipelines import load_pipeline                    # beside model.py (or metagen_backends.pytorch.inference)
    pipe = load_pipeline("out/gpt2", weights="gpt2/")     # or checkpoint="out/gpt2/runs/<run>/last"
    pipe(["Once upon a time", "The answer is"], max_new_tokens=20)   # [{"generated_text": ...}, ...]

Copied verbatim next to a generated model.py (with predict.py, tasks.py, inputs.py); depends on torch and the output
folder's data modules (their readers), loop.py (checkpoints) and weights.py (reference checkpoints). The task comes
from model.py's docstring; tasks.py has its runner (TASKS). See docs/inference.md.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING or (__package__ or "").rsplit(".", 1)[-1] == "inference":  # the compiler's package
    from ..training import data, loop
    from . import inputs, tasks
else:  # beside model.py in the output folder
    import data  # type: ignore[no-redef]
    import inputs  # type: ignore[no-redef]
    import loop  # type: ignore[no-redef]
    import tasks  # type: ignore[no-redef]

__all__ = ["Pipeline", "PredictError", "load_pipeline"]

PredictError = inputs.PredictError
def _by_path(path: Path, role: str) -> Any:
    """A module of the output folder (model.py, weights.py) imported by its path, once per path."""
    key = f"metagen_{role}:{path.resolve()}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        assert spec is not None and spec.loader is not None  # a .py path always has the source file loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - whatever a hand-edited or truncated file raises is one message
            del sys.modules[key]
            raise PredictError(f"{path}: cannot import it ({_first_line(e)}); compile the spec again") from None
    return sys.modules[key]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{e.__class__.__name__}: {text.splitlines()[0]}" if text else e.__class__.__name__


def _doc_field(module: Any, pattern: str) -> str:
    m = re.search(pattern, module.__doc__ or "")
    return m.group(1) if m else ""


def load_pipeline(folder: str | Path, weights: str | Path | None = None, checkpoint: str | Path | None = None,
                  tokenizer: str | Path | None = None, labels: str | Path | Sequence[str] | None = None,
                  overrides: Sequence[str] = (), layout: str = "auto", device: str = "cpu",
                  random_init: bool = False) -> Pipeline:
    """The pipeline of an output folder (OUT/<model>): its model.py built and loaded with `weights` (a checkpoint
    in the reference layout of weights.py or the model's own keys; `overrides` are Config fields as NAME=VALUE,
    for weights of another size) or a training run's `checkpoint` (runs/<run>/last: its Config, tokenizer, classes
    and statistics come along). `random_init` runs the initial weights (smoke tests only)."""
    folder = Path(folder)
    if not (folder / "model.py").is_file():
        raise PredictError(f"{folder}: no model.py; expected an output folder of metagenc (OUT/<model>)")
    module = _by_path(folder / "model.py", "model")
    state: dict[str, Any] | None = None
    run_tokenizer = None
    if checkpoint is not None:
        ckpt = loop.find_checkpoint(Path(checkpoint))
        if ckpt is None:
            raise PredictError(f"{checkpoint}: no checkpoint (expected runs/<run>/last with trainer.json and "
                               "model.safetensors)")
        run = ckpt.parent
        try:
            resolved = json.loads((run / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise PredictError(f"{run}: not a run folder ({e.__class__.__name__} reading config.json)") from None
        if not isinstance(resolved, dict) or not isinstance(resolved.get("model", {}), dict):
            raise PredictError(f"{run / 'config.json'}: expected an object with the run's `model` Config fields")
        fields = {f.name: f for f in dataclasses.fields(module.Config)}
        values = {k: tuple(v) if isinstance(fields[k].default, tuple) else v
                  for k, v in resolved.get("model", {}).items() if k in fields}
        model = module.build_model(module.Config(**values))
        try:
            loop.load_checkpoint(ckpt, model)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type, torch a RuntimeError
            raise PredictError(f"{ckpt / 'model.safetensors'}: does not load into this model.py "
                               f"({_first_line(e)})") from None
        if (run / "data.json").is_file():
            try:
                state = json.loads((run / "data.json").read_text())
            except json.JSONDecodeError as e:
                raise PredictError(f"{run / 'data.json'}: not valid JSON ({e.msg})") from None
        if (run / "tokenizer.json").is_file():
            run_tokenizer = run / "tokenizer.json"
    elif weights is not None or random_init:
        try:
            config = module.Config(**loop.parse_overrides(module.Config, list(overrides)))
        except ValueError as e:
            raise PredictError(str(e)) from None
        model = module.build_model(config)
        if weights is not None:
            if not Path(weights).exists():
                raise PredictError(f"{weights}: no such checkpoint file or folder")
            if not (folder / "weights.py").is_file():
                raise PredictError(f"{folder}: no weights.py beside model.py; compile the spec again")
            _by_path(folder / "weights.py", "weights").load_checkpoint(model, weights, layout)
    else:
        raise PredictError("no weights: pass --weights FILE (a checkpoint in the reference layout or the model's own "
                           "keys) or --checkpoint runs/<run>/last (a training run)")
    tok_path = Path(tokenizer) if tokenizer is not None else run_tokenizer
    tok = inputs.load_tokenizer(tok_path) if tok_path is not None else None
    names: list[str] | None
    if labels is None:
        names = [str(c) for c in state["classes"]] if state and "classes" in state else None
    elif isinstance(labels, (str, Path)):
        names = _read_labels(Path(labels))
    else:
        names = [str(v) for v in labels]
    model = model.to(_device(device)).eval()
    return Pipeline(model, module, state, tok, names, trained=checkpoint is not None)


def _device(name: str) -> torch.device:
    """--device checked: a device torch knows, and a GPU only where there is one."""
    try:
        device = torch.device(loop.pick_device(name))
    except RuntimeError:
        raise PredictError(f"--device {name}: not a device; expected cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"--device {name}: this torch sees no CUDA GPU; use --device cpu (or auto)")
    return device


def _read_labels(path: Path) -> list[str]:
    """Class names: a JSON list (or {id: name} object, as transformers' id2label), else one name per line."""
    if not path.is_file():
        raise PredictError(f"{path}: no such labels file")
    text = data.read_utf8(path)
    if path.suffix == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise PredictError(f"{path}: not valid JSON ({e.msg}); expected a list of class names") from None
        doc = doc.get("id2label", doc) if isinstance(doc, dict) else doc
        if isinstance(doc, dict):
            bad = [k for k in doc if not k.strip().lstrip("-").isdigit()]
            if bad:
                raise PredictError(f"{path}: the key `{bad[0]}` of the id2label object is not an integer class id")
            return [str(doc[k]) for k in sorted(doc, key=int)]
        if not isinstance(doc, list):
            raise PredictError(f"{path}: expected a JSON list of class names or an id2label object "
                               f"({{\"0\": name, ...}}), not {type(doc).__name__}")
        return [str(v) for v in doc]
    return [line.strip() for line in text.splitlines() if line.strip()]


class Pipeline:
    """Callable: pipeline(inputs, **options) -> one result per input (a dict; a single input gives its dict).
    Inputs are prompts, paths of image/audio/CSV/graph/point files, or raw values, as the model's task takes them."""

    def __init__(self, model: torch.nn.Module, module: Any, state: dict[str, Any] | None, tokenizer: Any,
                 labels: list[str] | None, trained: bool):
        self.model: Any = model  # a compiled model: its task methods (generate, detect, sample, ...) vary
        self.module, self.state, self.tokenizer, self.labels = module, state, tokenizer, labels
        self.config = dict(vars(getattr(model, "config", None) or {}))
        self.task = getattr(module, "TASK", None) or _doc_field(module, r"task `(\w+)`")
        self.family = _doc_field(module, r"Family `([\w.]+)`")
        self.device = next(model.parameters()).device
        example = module.example_inputs(model, batch_size=1)
        params = list(inspect.signature(model.forward).parameters)
        self.inputs: dict[str, torch.Tensor] = {n: t[0] for n, t in zip(params, example)}
        self.image_mode = inputs.image_mode(self.family, trained)
        if self.task not in tasks.TASKS:
            raise PredictError(f"task `{self.task}` of {module.__name__}: no pipeline")
        self.runner, self.writes = tasks.TASKS[self.task]

    # ---------------------------------------------------------------------------------------- calling

    def __call__(self, items: Any, batch_size: int = 8, **options: Any) -> Any:
        single = isinstance(items, (str, Path))
        listed = [items] if single else list(items)
        if not listed:
            raise PredictError("no inputs: give a prompt, a file or a value")
        with torch.no_grad():
            results = self.runner(self, [str(x) for x in listed], max(1, int(batch_size)), options)
        return results[0] if single and len(results) == 1 else results

    @torch.no_grad()
    def forward(self, batch: dict[str, torch.Tensor]) -> Any:
        return self.model(*(batch[n].to(self.device) for n in self.inputs))

    # ---------------------------------------------------------------------------------------- inputs

    def label(self, i: int) -> str:
        return self.labels[i] if self.labels is not None and 0 <= i < len(self.labels) else str(i)

    def encode(self, text: str, limit: int | None = None) -> list[int]:
        """Token ids of a prompt with the run's or the given tokenizer; `limit` is the model's context."""
        if self.tokenizer is None:
            raise PredictError("text input needs a tokenizer: pass --tokenizer tokenizer.json (with --checkpoint the "
                               "run's own is used)")
        path = Path(text)
        if path.suffix == ".txt" and path.is_file():
            text = data.read_utf8(path)
        ids = self.known_ids(list(self.tokenizer.encode(text).ids), text)
        context = int(self.config.get("context", 0)) or None
        limit = limit if limit is not None else context
        if limit is not None and len(ids) > limit:
            raise PredictError(f"the prompt `{inputs.short(text)}` is {len(ids)} tokens, longer than the model's "
                               f"context of {limit}")
        return ids

    def known_ids(self, ids: list[int], text: str) -> list[int]:
        """Token ids the model has embeddings for (below its vocab); a larger one means another model's tokenizer."""
        vocab = int(self.config.get("vocab", 0))
        if vocab and ids and max(ids) >= vocab:
            raise PredictError(f"the tokenizer gives `{inputs.short(text)}` the token id {max(ids)}, beyond the "
                               f"model's vocab of {vocab}: pass this model's tokenizer.json (--tokenizer), or "
                               "--set vocab=N for weights of that size")
        return ids

    def token_id(self, names: Sequence[str]) -> int | None:
        for name in names:
            if self.tokenizer is not None and self.tokenizer.token_to_id(name) is not None:
                return int(self.tokenizer.token_to_id(name))
        return None

    def decode(self, ids: Iterable[int]) -> str:
        assert self.tokenizer is not None
        return str(self.tokenizer.decode(list(ids)))

    def image(self, arg: str, name: str = "image") -> inputs.Item:
        c = self.config
        size = int(c.get("image_size", self.inputs[name].shape[-1]))
        channels = int(self.inputs[name].shape[0])
        im = inputs.read_image(Path(arg), channels)
        mode = self.image_mode
        if self.state and "image_size" in self.state:  # the run's own transform, as data.py loaded its images
            size, channels = int(self.state["image_size"]), int(self.state.get("channels", channels))
            norm = self.state.get("normalize", {"mean": 0.5, "std": 0.5})
            mean, std = (tuple(v) if isinstance(v, list) else (float(v),) for v in (norm["mean"], norm["std"]))
            mode = inputs.ImageMode("square", mean, std)
            im = inputs.read_image(Path(arg), channels)
        x = inputs.image_tensor(im, size, channels, mode)
        return inputs.Item(arg, {name: x}, {"size": im.size, "input_size": size})

    def items(self, args: list[str]) -> list[inputs.Item]:
        """The user's inputs as items for a model whose forward takes one user input (or an image and a text)."""
        user = [n for n in self.inputs if n not in inputs.INTERNAL_INPUTS]
        if sorted(user) == ["image", "text"]:
            return self._image_text_items(args)
        if len(user) != 1:
            raise PredictError(f"a model with inputs {', '.join(user)}: no pipeline for the task `{self.task}` yet")
        name = user[0]
        kind = self.inputs[name]
        out: list[inputs.Item] = []
        for arg in args:
            if name == "image":
                out.append(self.image(arg))
            elif name == "video":
                c = self.config
                x = inputs.read_video(Path(arg), int(kind.shape[1]), int(c.get("image_size", kind.shape[-1])),
                                      int(kind.shape[0]), self.image_mode)
                out.append(inputs.Item(arg, {name: x}))
            elif name == "audio" and kind.is_floating_point():
                x = inputs.read_audio(Path(arg), int(self.config.get("sample_rate", 16000)), int(kind.shape[-1]))
                out.append(inputs.Item(arg, {name: x}))
            elif name == "time_series":
                x, targets = inputs.read_window(Path(arg), int(kind.shape[0]), self.state, int(kind.shape[-1]))
                out.append(inputs.Item(arg, {name: x}, {"targets": targets}))
            elif name == "point_cloud":
                x = inputs.read_points(Path(arg), int(kind.shape[0]), int(kind.shape[1]), unit_sphere=bool(self.state))
                out.append(inputs.Item(arg, {name: x}))
            elif name == "tabular":
                out.extend(self._rows(arg))
            elif name == "text" and not kind.is_floating_point():
                ids = self.encode(arg)
                out.append(inputs.Item(arg, {name: torch.tensor(ids, dtype=torch.long)}, {"ids": ids}))
            elif name in ("user", "item"):
                out.append(inputs.Item(arg, {name: torch.tensor(inputs.integer(arg, name), dtype=torch.long)}))
            else:
                raise PredictError(f"input `{name}` {tuple(kind.shape)}: no reader yet for the task `{self.task}`")
        return out

    def _rows(self, arg: str) -> list[inputs.Item]:
        features = int(self.inputs["tabular"].shape[-1])
        names = self.state.get("features") if self.state else None
        rows = inputs.read_rows(arg, features, names)
        x = torch.tensor([v for _, v in rows], dtype=torch.float32)
        if self.state and "standardize" in self.state and "mean" in self.state["standardize"]:
            x = (x - torch.tensor(self.state["standardize"]["mean"])) / torch.tensor(self.state["standardize"]["std"])
        return [inputs.Item(where, {"tabular": x[i]}) for i, (where, _) in enumerate(rows)]

    def _image_text_items(self, args: list[str]) -> list[inputs.Item]:
        """Images paired in order with the texts; one text goes with every image (a question, a prompt)."""
        images = [a for a in args if Path(a).suffix.lower() in inputs.IMAGE_SUFFIXES]
        texts = [a for a in args if a not in images]
        if not images:
            raise PredictError(f"the task `{self.task}` takes an image file ({', '.join(inputs.IMAGE_SUFFIXES)}) "
                               "and a text for each")
        texts = texts or [""]
        if len(texts) not in (1, len(images)):
            raise PredictError(f"{len(images)} images and {len(texts)} texts: give one text, or one per image")
        out = []
        for k, arg in enumerate(images):
            item = self.image(arg)
            text = texts[0] if len(texts) == 1 else texts[k]
            ids = self.encode(text) if text else []
            item.tensors["text"] = torch.tensor(ids, dtype=torch.long)
            item.meta.update(ids=ids, text=text)
            item.where = f"{arg} + {inputs.short(text)}" if text else arg
            out.append(item)
        return out
