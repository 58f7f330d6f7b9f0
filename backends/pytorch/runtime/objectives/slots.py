"""The slots of the task code (objectives/*.py) that the emitter fills in from the spec's input names, as functions
that run: the inputs they give follow the names bound with `bind` (tests bind the model they build; model.py has
the names written out instead, losses.py's `_loss_fields` in codegen).

Each slot function stands, starred in an argument list, for one field of losses.py's templates:
`*batch_inputs(batch)` {args}, `*shifted_inputs(batch, tokens)` {shifted}, `*noised_inputs(batch, x_t, t)` {noisy},
`*step_inputs(x, t, cond)` {step}, `*guided_inputs(x, t, cond, uncond)` {guided}, `*sample_shape(c)` {shape}.
Strings spelled "x", "next_x" and "y" stand for {x}, next_{x} and {y}: the first input is named "x" here, the token
input a next-token loss predicts "y".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

__all__ = ["TaskModel", "batch_inputs", "bind", "guided_inputs", "noised_inputs", "sample_shape", "shifted_inputs",
           "step_inputs"]

FIRST, TOKENS = "x", "y"  # the spellings of the first input and of the predicted token input


@dataclass(frozen=True)
class Binding:
    """The model's inputs: forward's input names in order, the diffusion timestep input's name, and the first
    input's sizes after the batch dimension (config attribute names, or ints)."""

    inputs: tuple[str, ...] = (FIRST,)
    timestep: str = ""
    shape: tuple[str | int, ...] = ()


_bound = Binding()


@contextmanager
def bind(inputs: Sequence[str] = (FIRST,), timestep: str = "", shape: Sequence[str | int] = ()) -> Iterator[None]:
    """Within the block, the slot functions read these input names (forward's order; name the first "x" where the
    task code reads batch["x"], the token input "y" where it reads batch["y"])."""
    global _bound
    if not inputs:
        raise ValueError("a model has an input")
    before, _bound = _bound, Binding(tuple(inputs), timestep, tuple(shape))
    try:
        yield
    finally:
        _bound = before


def batch_inputs(batch: dict[str, Any]) -> tuple[Any, ...]:
    """forward's arguments from the batch, in its order ({args})."""
    return tuple(batch[n] for n in _bound.inputs)


def shifted_inputs(batch: dict[str, Any], tokens: Any) -> tuple[Any, ...]:
    """forward's arguments with the token input "y" cut before its last token, for teacher forcing ({shifted})."""
    return tuple(tokens[:, :-1] if n == TOKENS else batch[n] for n in _bound.inputs)


def noised_inputs(batch: dict[str, Any], x_t: Any, t: Any) -> tuple[Any, ...]:
    """forward's arguments with the first input replaced by `x_t` and the timestep by `t` ({noisy})."""
    return tuple(x_t if i == 0 else t if n == _bound.timestep else batch[n] for i, n in enumerate(_bound.inputs))


def _conditions() -> list[str]:
    return [n for n in _bound.inputs[1:] if n != _bound.timestep]


def step_inputs(x: Any, t: Any, cond: Sequence[Any]) -> tuple[Any, ...]:
    """forward's arguments in sample(): `x`, `t` and the conditioning inputs `cond` in their order ({step})."""
    names = _conditions()
    return tuple(x if i == 0 else t if n == _bound.timestep else cond[names.index(n)]
                 for i, n in enumerate(_bound.inputs))


def guided_inputs(x: Any, t: Any, cond: Sequence[Any], uncond: Sequence[Any]) -> tuple[Any, ...]:
    """step_inputs with the batch doubled, its first half conditioned on `uncond` ({guided})."""
    import torch

    names = _conditions()
    return tuple(torch.cat((x, x)) if i == 0 else torch.cat((t, t)) if n == _bound.timestep
                 else torch.cat((uncond[names.index(n)], cond[names.index(n)])) for i, n in enumerate(_bound.inputs))


def sample_shape(c: Any) -> tuple[int, ...]:
    """The first input's sizes after the batch dimension, from the config `c` ({shape})."""
    return tuple(getattr(c, d) if isinstance(d, str) else d for d in _bound.shape)


class TaskModel:
    """The generated model as the task code sees it, for the type checker: callable, with a config and whatever
    attributes (buffers, methods) the task reads. At run time an empty base class."""

    if TYPE_CHECKING:
        config: Any

        def __call__(self, *inputs: Any) -> Any: ...

        def __getattr__(self, name: str) -> Any: ...
