"""The block graph figure: TikZ generated from the module tree.

The main column shows the input, the children of each top-level slot (encoder, backbone, head)
framed by their slot, and the output; a repeat list is one node (`h: 12 x decoder_block`) whose
first instance is drawn on the right. Arrows follow the data flow between those units in the graph
(through weightless operations such as residual adds), so a parallel block shows its branches.
Every label is escaped; node names are generated (u1, u2, ...), never taken from the spec.
"""

from __future__ import annotations

from collections import deque

from .blocks import Tree, short_target
from .context import Paper
from .escape import tt

__all__ = ["block_graph"]

_MAX_COLUMN = 18  # units per column before the middle is elided


def _units_of(tree: Tree, paths: list[str]) -> dict[str, str]:
    """Graph node -> the unit (one of `paths`) that owns it."""
    out = {}
    for n in tree.order:
        own = tree.owner[n]
        for u in paths:
            if own == u or own.startswith(u + "."):
                out[n] = u
                break
    return out


def _edges(tree: Tree, paths: list[str], scope: str) -> list[tuple[str, str]]:
    """Unit -> unit data flow, following graph edges through nodes owned by no unit under `scope`."""
    unit = _units_of(tree, paths)
    g = tree.ir.g
    found: list[tuple[str, str]] = []
    for src in paths:
        starts = [n for n in tree.order if unit.get(n) == src]
        seen = set(starts)
        queue = deque(starts)
        while queue:
            n = queue.popleft()
            for m in g.successors(n):
                if m in seen:
                    continue
                seen.add(m)
                dst = unit.get(m)
                if dst is not None and dst != src:
                    if (src, dst) not in found:
                        found.append((src, dst))
                elif dst is None and (not scope or tree.owner.get(m, "") == scope
                                      or tree.owner.get(m, "").startswith(scope + ".")):
                    queue.append(m)
    return found


def _label(p: Paper, path: str, rel_to: str) -> str:
    tree = p.tree
    info = tree.ir.modules.get(path)
    name = path[len(rel_to) + 1:] if rel_to and path.startswith(rel_to + ".") else path
    if info is None:
        return tt(name)
    if info.kind == "list":
        r = tree.row(path, 1)
        n = p.ledger.count(f"block.count:{path}", r.count, source="graph")
        return f"{tt(name)}: {n}$\\times$ {tt(short_target(r.target))}"
    return f"{tt(name)}: {tt(short_target(info.target))}"


def _column(paths: list[str]) -> list[str | None]:
    if len(paths) <= _MAX_COLUMN:
        return list(paths)
    half = _MAX_COLUMN // 2
    return paths[:half] + [None] + paths[-(half - 1):]


def block_graph(p: Paper) -> str:
    tree = p.tree
    lines = [
        "% The block graph, generated from the module tree by metagenc (labels escaped).",
        "\\begin{figure}[htbp]",
        "\\centering",
        "\\begin{adjustbox}{max width=\\linewidth, max totalheight=0.78\\textheight}",
        "\\begin{tikzpicture}[",
        "  unit/.style={draw, rounded corners=2pt, minimum width=5.2cm, minimum height=0.62cm, font=\\footnotesize,"
        " fill=white},",
        "  io/.style={draw, ellipse, font=\\footnotesize},",
        "  flow/.style={-{Stealth[length=2mm]}, thick},",
        "  skip/.style={-{Stealth[length=2mm]}, thick, rounded corners=4pt},",
        "  slot/.style={draw, dashed, rounded corners=4pt, inner sep=5pt, gray},",
        "]",
    ]
    slots = tree.top()
    units: list[str] = []
    slot_units: dict[str, list[str]] = {}
    for s in slots:
        kids = tree.children(s)
        slot_units[s] = kids if kids else [s]
        units += slot_units[s]
    ids = {u: f"u{i + 1}" for i, u in enumerate(units)}
    y = 0.0
    ins = ", ".join(i.name for i in p.ir.inputs)
    lines.append(f"\\node[io] (in) at (0,{y:.2f}) {{input: {tt(ins)}}};")
    drawn: list[str] = []
    for s in slots:
        col = _column(slot_units[s])
        y -= 0.5
        first = last = None
        for u in col:
            y -= 1.0
            if u is None:
                lines.append(f"\\node at (0,{y:.2f}) {{$\\vdots$}};")
                continue
            lines.append(f"\\node[unit] ({ids[u]}) at (0,{y:.2f}) {{{_label(p, u, s)}}};")
            drawn.append(u)
            first = first or ids[u]
            last = ids[u]
        info = tree.ir.modules.get(s)
        title = tt(s) + (f": {tt(short_target(info.target))}" if info is not None else "")
        if first is not None:
            lines.append(f"\\node[slot, fit=({first}) ({last}), "
                         f"label={{[font=\\scriptsize, anchor=north east, align=right]north west:{title}}}] {{}};")
        y -= 0.3
    y -= 1.0
    outs = ", ".join(name for name, _ in p.ir.outputs)
    lines.append(f"\\node[io] (out) at (0,{y:.2f}) {{output: {tt(outs)}}};")
    # arrows: consecutive units straight down, others on the left
    order = ["in"] + [ids[u] for u in drawn] + ["out"]
    pos = {n: i for i, n in enumerate(order)}
    edges = [(ids[a], ids[b]) for a, b in _edges(tree, drawn, "") if a in ids and b in ids]
    firsts = ids[drawn[0]] if drawn else "out"
    edges = [("in", firsts)] + edges + ([(ids[drawn[-1]], "out")] if drawn else [])
    for a, b in edges:
        if pos.get(b, 0) == pos.get(a, 0) + 1 or a == "in" or b == "out":
            lines.append(f"\\draw[flow] ({a}) -- ({b});")
        else:
            lines.append(f"\\draw[skip] ({a}.west) -- ++(-0.5,0) |- ({b}.west);")
    expanded = _expanded(p, drawn)
    lines += _detail(p, ids, expanded) if expanded else []
    what = ""
    if expanded:
        unit, inst, is_list = expanded
        what = (f" One instance of the repeated block {tt(unit)} ({tt(inst)}) is drawn on the right." if is_list
                else f" The block {tt(unit)} is expanded on the right.")
    lines += [
        "\\end{tikzpicture}",
        "\\end{adjustbox}",
        "\\caption{Block graph of " + p.name + ", drawn from the module tree: each box is a module of the "
        "generated PyTorch code, arrows follow the data flow of the graph IR (through residual additions and other "
        "weightless operations)." + what + "}",
        "\\label{fig:block-graph}",
        "\\end{figure}",
    ]
    return "\n".join(lines) + "\n"


def _expanded(p: Paper, drawn: list[str]) -> tuple[str, str, bool] | None:
    """The unit drawn in detail: the first repeat list (its first instance), else the first block with at
    least two children. (unit path, path whose children are drawn, whether it is a repeat list)."""
    tree = p.tree
    for u in drawn:
        info = tree.ir.modules.get(u)
        if info is not None and info.kind == "list":
            first = tree.row(u, 1).first
            if first is not None and tree.children(first):
                return u, first, True
    for u in drawn:
        info = tree.ir.modules.get(u)
        if info is not None and info.kind == "block" and len(tree.children(u)) >= 2:
            return u, u, False
    return None


def _detail(p: Paper, ids: dict[str, str], expanded: tuple[str, str, bool]) -> list[str]:
    """The children of one unit, to the right of it, framed and titled, with the block's input and its
    residual additions (drawn as $+$ nodes) so that shortcuts show as arrows around the children."""
    tree = p.tree
    unit, inst, is_list = expanded
    adds = [n for n in tree.own_nodes(inst) if tree.ir.nodes[n].op == "add"]
    items = sorted([*tree.children(inst), *adds], key=lambda u: (_first(tree, u), u))
    kids = _column(items)
    out = [f"\\begin{{scope}}[shift={{($({ids[unit]})+(6.6,0)$)}}]"]
    names: list[str] = []
    did: dict[str, str] = {}
    yy = 0.0
    if adds:
        out.append(f"\\node[font=\\scriptsize] (din) at (0,{yy + 0.9:.2f}) {{block input}};")
    for k in kids:
        if k is None:
            out.append(f"\\node at (0,{yy:.2f}) {{$\\vdots$}};")
            yy -= 1.0
            continue
        nid = f"d{len(names) + 1}"
        did[k] = nid
        if k in adds:
            out.append(f"\\node[draw, circle, inner sep=0pt, minimum size=4mm] ({nid}) at (0,{yy + 0.2:.2f}) {{$+$}};")
            yy -= 0.6
        else:
            out.append(f"\\node[unit, minimum width=4.2cm] ({nid}) at (0,{yy:.2f}) {{{_label(p, k, inst)}}};")
            yy -= 1.0
        names.append(k)
    # the lane of the shortcut arrows: right of the widest box (footnotesize typewriter, about 0.19 cm a character)
    widest = max((len(_plain_label(p, k, inst)) for k in names if k not in adds), default=0)
    lane = max(2.1, 0.095 * widest + 0.2) + 0.5
    out.append(f"\\coordinate (lane) at ({lane:.2f},0);")
    out.append("\\end{scope}")
    if names:
        target = tree.ir.modules[inst].target
        title = (f"one {tt(short_target(target))} ({tt(inst)})" if is_list
                 else f"{tt(inst)}: {tt(short_target(target))}")
        top = "(din) (lane) " if adds else ""
        out.append(f"\\node[slot, fit={top}(d1) (d{len(names)}), label={{[font=\\scriptsize]north:{title}}}] "
                   "(detail) {};")
        order = {k: i for i, k in enumerate(names)}
        edges = _edges_with_nodes(tree, names, set(adds), inst)
        if adds:
            edges = [("in", k) for k in _entered(tree, names, set(adds), inst)] + edges
        for a, b in edges:
            src = "din" if a == "in" else did[a]
            if (a == "in" and order[b] == 0) or (a != "in" and order[b] == order[a] + 1):
                out.append(f"\\draw[flow] ({src}) -- ({did[b]});")
            else:
                out.append(f"\\draw[skip] ({src}.east) -- ({src}.east -| lane) |- ({did[b]}.east);")
        out.append(f"\\draw[dotted, thick, gray] ({ids[unit]}.east) -- (detail.west);")
    return out


def _plain_label(p: Paper, path: str, rel_to: str) -> str:
    """The characters of a box's label, to estimate its width."""
    info = p.tree.ir.modules.get(path)
    name = path[len(rel_to) + 1:] if rel_to and path.startswith(rel_to + ".") else path
    if info is None:
        return name
    if info.kind == "list":
        r = p.tree.row(path, 1)
        return f"{name}: {r.count}x {short_target(r.target)}"
    return f"{name}: {short_target(info.target)}"


def _first(tree: Tree, u: str) -> int:
    """Position of a unit in the graph order: a node's own, or a module's first node."""
    if u in tree.pos:
        return tree.pos[u]
    nodes = tree.nodes_under(u)
    return tree.pos[nodes[0]] if nodes else len(tree.order)


def _unit_map(tree: Tree, units: list[str], nodes: set[str]) -> dict[str, str]:
    """Graph node -> unit, where a unit is a module path or (in `nodes`) a graph node of its own."""
    out = {n: n for n in nodes}
    paths = [u for u in units if u not in nodes]
    out.update({n: u for n, u in _units_of(tree, paths).items() if n not in nodes})
    return out


def _edges_with_nodes(tree: Tree, units: list[str], nodes: set[str], scope: str) -> list[tuple[str, str]]:
    """Like _edges, with some units being single graph nodes (residual additions)."""
    unit = _unit_map(tree, units, nodes)
    found: list[tuple[str, str]] = []
    for src in units:
        starts = [n for n in tree.order if unit.get(n) == src]
        found += [(src, d) for d in _reach(tree, starts, unit, scope) if d != src and (src, d) not in found]
    return found


def _entered(tree: Tree, units: list[str], nodes: set[str], scope: str) -> list[str]:
    """The units that read the block's input (directly or through weightless operations of the block)."""
    unit = _unit_map(tree, units, nodes)
    inside = set(tree.nodes_under(scope))
    starts = sorted({m for n in inside for m in tree.ir.g.predecessors(n) if m not in inside},
                    key=lambda m: tree.pos.get(m, -1))
    return _reach(tree, starts, unit, scope)


def _reach(tree: Tree, starts: list[str], unit: dict[str, str], scope: str) -> list[str]:
    """The units first reached from `starts` along graph edges, through nodes of `scope` in no unit."""
    seen = set(starts)
    queue = deque(starts)
    out: list[str] = []
    while queue:
        n = queue.popleft()
        for m in tree.ir.g.successors(n):
            if m in seen:
                continue
            seen.add(m)
            dst = unit.get(m)
            if dst is not None:
                if dst not in out:
                    out.append(dst)
            elif tree.owner.get(m, "") == scope or tree.owner.get(m, "").startswith(scope + "."):
                queue.append(m)
    return out
