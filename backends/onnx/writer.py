"""The writer: a small recorder of ONNX nodes built with onnx-ir.

It knows the opset it writes for (so helpers pick the right form of Split, ReduceMean, Shape), names
every node and value after the graph node being lowered (`scope`), deduplicates constants, caches shape
lookups, and remembers which graph node each ONNX node came from (for diagnostics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

__all__ = ["GraphWriter"]

AttrValue = int | float | str | Sequence[int] | Sequence[float] | ir.TensorProtocol | ir.Graph


class GraphWriter:
    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[ir.Node] = []
        self.origin: dict[str, str] = {}  # ONNX node name -> graph node id it lowers
        self.scope = ""
        self._names: set[str] = set()
        self._consts: dict[tuple[str, tuple[int, ...], bytes], ir.Value] = {}
        self._shapes: dict[tuple[int, int, bool], ir.Value] = {}
        self._shape_of: dict[int, ir.Value] = {}

    # ------------------------------------------------------------ names
    def reserve(self, name: str) -> None:
        self._names.add(name)

    def fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self._names:
            name = f"{base}_{k}"
            k += 1
        self._names.add(name)
        return name

    def rename(self, v: ir.Value, name: str) -> None:
        """Give a value the name of the graph tensor it carries (its node keeps its own name)."""
        assert v.name is not None
        self._names.discard(v.name)
        v.name = self.fresh(name)

    # ------------------------------------------------------------ nodes
    def op(self, op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, AttrValue] | None = None,
           *, outputs: int = 1, tag: str | None = None) -> ir.Value:
        return self.op_multi(op_type, inputs, attrs, outputs=outputs, tag=tag)[0]

    def op_multi(self, op_type: str, inputs: Sequence[ir.Value | None], attrs: dict[str, AttrValue] | None = None,
                 *, outputs: int, tag: str | None = None) -> Sequence[ir.Value]:
        name = self.fresh(f"{self.scope}/{tag or op_type}" if self.scope else (tag or op_type))
        attributes = [_attr(k, v) for k, v in (attrs or {}).items()]
        node = ir.Node("", op_type, list(inputs), attributes=attributes, num_outputs=outputs, name=name)
        for i, out in enumerate(node.outputs):
            out.name = name if i == 0 else self.fresh(f"{name}:{i}")
        self.nodes.append(node)
        self.origin[name] = self.scope
        return node.outputs

    # ------------------------------------------------------------ constants
    def const(self, value: Any, dtype: Any = None) -> ir.Value:
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        key = (str(arr.dtype), arr.shape, arr.tobytes())
        if key not in self._consts:
            saved, self.scope = self.scope, ""
            tensor = ir.tensor(arr)
            self._consts[key] = self.op("Constant", [], {"value": tensor}, tag=_const_label(arr))
            self.scope = saved
        return self._consts[key]

    def i64(self, *values: int) -> ir.Value:
        """A 1-D int64 constant (shapes, axes, starts and ends)."""
        return self.const(np.array(values, dtype=np.int64))

    def scalar(self, value: float, dtype: Any = np.float32) -> ir.Value:
        return self.const(np.array(value, dtype=dtype))

    # ------------------------------------------------------------ shapes
    def shape(self, x: ir.Value) -> ir.Value:
        if id(x) not in self._shape_of:
            self._shape_of[id(x)] = self.op("Shape", [x])
        return self._shape_of[id(x)]

    def dim(self, x: ir.Value, axis: int, *, scalar: bool = False) -> ir.Value:
        """Size of dim `axis` of x at run time: int64 of shape (1,), or () with scalar=True."""
        key = (id(x), axis, scalar)
        if key not in self._shapes:
            if scalar:
                shape = self.shape(x)
                self._shapes[key] = self.op("Gather", [shape, self.const(np.array(axis, np.int64))], {"axis": 0})
            elif self.opset >= 15:
                end = {"end": axis + 1} if axis != -1 else {}
                self._shapes[key] = self.op("Shape", [x], {"start": axis, **end})
            else:
                self._shapes[key] = self.op("Gather", [self.shape(x), self.i64(axis)], {"axis": 0})
        return self._shapes[key]

    def reshape(self, x: ir.Value, dims: Sequence[int]) -> ir.Value:
        """Reshape with ONNX semantics: 0 copies the input's dim at that index, -1 is inferred."""
        return self.op("Reshape", [x, self.i64(*dims)])

    # ------------------------------------------------------------ ops whose form depends on the opset
    def split(self, x: ir.Value, parts: int, axis: int, sizes: Sequence[int] | None) -> Sequence[ir.Value]:
        if self.opset >= 18:
            return self.op_multi("Split", [x], {"axis": axis, "num_outputs": parts}, outputs=parts)
        assert sizes is not None, "Split below opset 18 needs static sizes"
        return self.op_multi("Split", [x, self.i64(*sizes)], {"axis": axis}, outputs=parts)

    def reduce_mean(self, x: ir.Value, axes: Sequence[int], keepdims: bool) -> ir.Value:
        return self.reduce("ReduceMean", x, axes, keepdims)

    def reduce(self, op_type: str, x: ir.Value, axes: Sequence[int], keepdims: bool) -> ir.Value:
        """A Reduce* op: axes are an input from opset 18 (ReduceSum: 13), an attribute before."""
        if self.opset >= (13 if op_type == "ReduceSum" else 18):
            return self.op(op_type, [x, self.i64(*axes)], {"keepdims": int(keepdims)})
        return self.op(op_type, [x], {"axes": list(axes), "keepdims": int(keepdims)})

    def unsqueeze(self, x: ir.Value, axes: Sequence[int]) -> ir.Value:
        return self.op("Unsqueeze", [x, self.i64(*axes)])


def _attr(name: str, v: AttrValue) -> ir.Attr:
    if isinstance(v, ir.Graph):
        return ir.AttrGraph(name, v)
    if isinstance(v, ir.TensorProtocol):
        return ir.AttrTensor(name, v)
    if isinstance(v, bool):
        return ir.AttrInt64(name, int(v))
    if isinstance(v, int):
        return ir.AttrInt64(name, v)
    if isinstance(v, float):
        return ir.AttrFloat32(name, v)
    if isinstance(v, str):
        return ir.AttrString(name, v)
    items = list(v)
    if all(isinstance(i, int) for i in items):
        return ir.AttrInt64s(name, [int(i) for i in items])
    return ir.AttrFloat32s(name, [float(i) for i in items])


def _const_label(arr: np.ndarray) -> str:
    """A short readable name for a constant: i64[0,0,-1] (1-D), f32(0.5) (scalar), f32<64x32> (large)."""
    kind = {"int64": "i64", "float32": "f32", "bool": "bool"}.get(str(arr.dtype), str(arr.dtype))
    if arr.ndim == 0:
        return f"{kind}({_num(arr.item())})"
    if arr.ndim == 1 and arr.size <= 8:
        return f"{kind}[{','.join(_num(v) for v in arr.tolist())}]"
    return f"{kind}<{'x'.join(str(d) for d in arr.shape)}>"


def _num(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)
