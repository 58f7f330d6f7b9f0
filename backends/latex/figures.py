"""The paper's figures, drawn with matplotlib (no pyplot, no global state) as PDF bytes.

Byte-identical across runs: no creation date, a fixed producer string, fixed sizes and margins, a
fixed hash salt and mathtext parsing off (names from a spec are text, never math).
matplotlib is imported here only, when the backend runs.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from metagen_compiler.primitives import subst_dim

from .blocks import BlockRow, Tree, short_target
from .context import Paper

__all__ = ["bar_rows", "bar_label", "draw_figures", "op_intensity"]

_RC: dict[str, Any] = {
    "pdf.fonttype": 3,  # vector glyph procedures; Type 42 subsetting costs ~0.3 s per figure
    "pdf.compression": 6,
    "svg.hashsalt": "metagenc",
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "text.parse_math": False,
    "text.usetex": False,
    "axes.unicode_minus": False,
    "path.simplify": True,
    "figure.dpi": 100,
}
_META = {"Creator": "metagenc", "Producer": "metagenc paper backend", "CreationDate": None, "ModDate": None}
_BLUE, _ORANGE, _GREY = "#3b6ea8", "#d9822b", "#888888"


@contextmanager
def _style() -> Iterator[Any]:
    import matplotlib

    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        yield matplotlib


def _pdf(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", metadata=_META)
    return buf.getvalue()


def bar_rows(tree: Tree) -> list[BlockRow]:
    """The rows of the per-block figures: the children of each top-level slot (a slot with none
    stands for itself), the same rows as the block table."""
    out: list[BlockRow] = []
    for slot in tree.top():
        kids = tree.inside(slot)
        out.extend(kids if kids else [tree.row(slot, 0)])
    return out


def _plain(s: str) -> str:
    """Text for a figure: characters the default font lacks (CJK, emoji) become `?`, so matplotlib never
    warns about a missing glyph; the tables print the full string."""
    return "".join(c if c.isprintable() and ord(c) < 0x250 else "?" for c in s)


def bar_label(r: BlockRow) -> str:
    kind = short_target(r.target) if r.target else r.kind
    return _plain(f"{r.path} ({r.count} x {kind})" if r.kind == "list" else f"{r.path} ({kind})")


def _bars(rows: list[BlockRow], series: list[tuple[str, list[float], str]], xlabel: str, title: str) -> bytes:
    with _style():
        from matplotlib.figure import Figure

        height = 1.0 + 0.22 * len(rows)
        width = 6.0
        fig = Figure(figsize=(width, height))
        ax = fig.add_subplot()
        ys = list(range(len(rows)))[::-1]
        left = [0.0] * len(rows)
        for name, vals, color in series:
            ax.barh(ys, vals, left=left, color=color, label=name, height=0.6)
            left = [a + b for a, b in zip(left, vals, strict=True)]
        ax.set_yticks(ys, [bar_label(r) for r in rows])
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(_si_tick))  # 80M, not 8 with a detached "1e7"
        ax.set_xlabel(xlabel)
        if len(series) == 1:  # with two series the legend takes the title's place (the caption names the figure)
            ax.set_title(title, loc="left")
        ax.spines[["top", "right"]].set_visible(False)
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)
        if len(series) > 1:
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncols=len(series), frameon=False)
        # fixed margins from the longest label (tight_layout would cost a full extra draw)
        label_in = 0.15 + 0.056 * max((len(bar_label(r)) for r in rows), default=8)
        fig.subplots_adjust(left=min(0.6, label_in / width), right=0.97, bottom=0.55 / height,
                            top=1 - 0.35 / height)
        return _pdf(fig)


def _si_tick(v: float, _pos: int) -> str:
    """A tick label with an SI prefix: 0, 500k, 2.5M, 80M, 1.2G."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{prefix}"
    return f"{v:.3g}"


def _bytes_of(ir: Any, syms: dict[str, int]) -> dict[str, int]:
    out = {}
    for n in ir.topo():
        d = ir.g.nodes[n]
        size = 8 if d.get("dtype") == "int64" else 4
        out[n] = sum(math.prod(subst_dim(x, syms) for x in s) * size for s in d.get("shapes", []))
    return out


def op_intensity(p: Paper) -> list[tuple[str, float, float]]:
    """(op, FLOPs, bytes moved at fp32) summed per primitive kind, by the estimator's convention
    (inputs + outputs + weights per node; docs/estimates.md). For the roofline figure only."""
    ir = p.ir
    syms = dict(p.report["nominal_input"]["symbols"])
    sizes = _bytes_of(ir, syms)
    acc: dict[str, list[float]] = {}
    for n in p.tree.order:
        d = ir.g.nodes[n]
        fl = float(d.get("flops", 0)) + float(d.get("flops_other", 0))
        moved = float(sum(sizes[str(t.node)] for t in ir.in_tensors(n)) + sizes[n])
        if d.get("module"):  # the node's own weight shapes, so an op the registry lacks cannot break the figure
            moved += 4.0 * sum(math.prod(s) for s in d.get("weights", {}).values())
        a = acc.setdefault(d["op"], [0.0, 0.0])
        a[0] += fl
        a[1] += moved
    return [(op, f, b) for op, (f, b) in sorted(acc.items()) if f > 0 and b > 0]


def _clusters(points: list[tuple[str, float, float]]) -> list[tuple[list[str], float]]:
    """Operations whose intensities lie within 40% of each other share one label (no overlaps)."""
    out: list[tuple[list[str], float]] = []
    for op, fl, by in sorted(points, key=lambda t: (t[1] / t[2], t[0])):
        x = fl / by
        if out and x < out[-1][1] * 1.4:
            out[-1][0].append(op)
        else:
            out.append(([op], x))
    return out


def _roofline(p: Paper, device: str, prof: dict[str, Any], points: list[tuple[str, float, float]]) -> bytes:
    with _style():
        from matplotlib.figure import Figure

        fig = Figure(figsize=(3.2, 2.6))
        ax = fig.add_subplot()
        bw = float(prof.get("bandwidth", 1e11))
        eff = float(prof.get("efficiency", 0.5))
        peaks = []
        for dtype, style in (("fp32", "-"), ("bf16", "--")):
            peak = float(prof.get(dtype, prof.get("fp32", 1e12))) * eff
            peaks.append(peak)
            xs = [0.01, peak / bw, 1e5]  # the roof is two straight lines on log axes: 0.01 .. 1e5 FLOP/byte
            ax.plot(xs, [min(peak, bw * x) for x in xs], style, color=_BLUE if dtype == "fp32" else _ORANGE,
                    linewidth=1.2, label=f"{dtype} roof (peak x efficiency)")
        peak32 = float(prof.get("fp32", 1e12)) * eff
        xs_ops = [f / b for _, f, b in points]
        ax.plot(xs_ops, [min(peak32, bw * x) for x in xs_ops], "o", color=_GREY, markersize=3, linestyle="none")
        tot_f = sum(f for _, f, _ in points)
        tot_b = sum(b for _, _, b in points)
        if tot_b > 0:
            x = tot_f / tot_b
            ax.plot([x], [min(peak32, bw * x)], "*", color="black", markersize=7, label="whole model (fp32)")
        from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(0.01 / 1.5, 1e5 * 1.5)
        ax.set_ylim(bw * 0.01 / 2, max(peaks) * 12)  # room for the legend above the roof
        ax.xaxis.set_major_locator(LogLocator(numticks=8))
        ax.yaxis.set_major_locator(LogLocator(numticks=6))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(_pow10))
        ax.yaxis.set_major_formatter(FuncFormatter(_pow10))
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("attainable FLOP/s")
        title = textwrap.wrap(_plain(f"{device}: {prof.get('name', device)}"), 46) or [_plain(device)]
        if len(title) > 2:
            title = [title[0], title[1][:43] + "..."]
        ax.set_title("\n".join(title), fontsize=8)
        ax.grid(color="#eeeeee", linewidth=0.5)
        ax.legend(loc="upper left", frameon=False, fontsize=5.5)
        fig.subplots_adjust(left=0.19, bottom=0.16, right=0.97, top=0.9 if len(title) == 1 else 0.85)
        # after the layout is fixed: labels are placed in points
        _label_points(ax, fig, [(", ".join(names), x, min(peak32, bw * x)) for names, x in _clusters(points)])
        return _pdf(fig)


def _label_points(ax: Any, fig: Any, labels: list[tuple[str, float, float]]) -> None:
    """Labels below and right of their points (under the roof, which rises to the right), each moved down
    until it clears the labels before it: no two labels overlap, however close their points are."""
    to_pt = 72.0 / fig.dpi
    placed: list[tuple[float, float, float]] = []  # x0, x1, top of each placed label, in points
    size, line = 6.0, 7.5
    for text, x, y in sorted(labels, key=lambda t: t[1]):
        px, py = (v * to_pt for v in ax.transData.transform((x, y)))
        x0, x1 = px + 3, px + 3 + 0.55 * size * len(text)
        top = py - 3
        moved = True
        while moved:  # terminates: `top` only decreases, and there are finitely many labels to clear
            moved = False
            for a0, a1, atop in placed:
                if a0 < x1 and x0 < a1 and atop - line < top < atop + line:
                    top, moved = atop - line, True
        placed.append((x0, x1, top))
        ax.annotate(text, (x, y), xycoords="data", xytext=(x0 - px, top - py), textcoords="offset points",
                    fontsize=size, va="top", ha="left",
                    arrowprops={"arrowstyle": "-", "color": _GREY, "linewidth": 0.4} if py - top > 10 else None)


def _pow10(v: float, _pos: int) -> str:
    """Log-axis tick labels as plain text (1e12): mathtext is off, so no $10^{12}$."""
    return f"1e{round(math.log10(v))}" if v > 0 else "0"


def draw_figures(p: Paper) -> dict[str, bytes]:
    """figures/*.pdf, relative to paper/."""
    rows = bar_rows(p.tree)
    out = {
        "figures/params_per_block.pdf": _bars(
            rows, [("parameters", [float(r.params) for r in rows], _BLUE)], "parameters (exact count)",
            "Parameters per block"),
        "figures/flops_per_block.pdf": _bars(
            rows, [(f"{p.mm_words()} (exact count)", [float(r.flops) for r in rows], _BLUE),
                   ("other ops (estimate)", [float(r.flops_other) for r in rows], _ORANGE)],
            "forward FLOPs at the nominal input", "Forward FLOPs per block"),
    }
    points = op_intensity(p)
    for i, dev in enumerate(roofline_devices(p), start=1):
        out[f"figures/roofline_{i}.pdf"] = _roofline(p, dev, p.devices.get(dev, {}), points)
    return out


def roofline_devices(p: Paper) -> list[str]:
    """The device classes with a latency estimate, in report order; figure i is the i-th."""
    return list(p.report["latency"]["seconds"])
