"""One walker for the MSL AST, in the manner of Python's `ast.walk` and `ast.NodeVisitor`.

A node's children come from its dataclass fields (`Node.children()`), never from a list kept per node type, so a
field added to an AST class is walked by everything here with no change:

- `walk(root)` yields every node under a node (or a sequence of nodes), in source order (pre-order), without
  recursion; `descend` prunes: the children of a node it rejects are skipped.
- `Visitor` dispatches `visit_<Class>(node)` where a subclass defines it, else `generic_visit`, which visits the
  children; a `visit_X` that does not call `generic_visit` prunes the walk at X. The method is looked up on the
  visitor's class, once per node class (a `visit_X` set on an instance is not seen).
- `statements(body)` is every statement of a block body, those inside `if` branches included, in source order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from metagen_compiler.syntax import ast as A

__all__ = ["Visitor", "statements", "walk"]


def walk(root: A.Node | Iterable[A.Node], descend: Callable[[A.Node], bool] | None = None) -> Iterator[A.Node]:
    """Every node under `root` (a node, itself included, or each node of a sequence), parents before children and
    children in source order. The children of a node for which `descend` returns False are not walked (the node
    itself is yielded). Iterative, so an expression nested as deep as the parser allows is fine."""
    stack: list[A.Node] = [root] if isinstance(root, A.Node) else list(root)[::-1]
    pop, push = stack.pop, stack.extend
    if descend is None:
        while stack:
            node = pop()
            yield node
            push(node.children()[::-1])
        return
    while stack:
        node = pop()
        yield node
        if descend(node):
            push(node.children()[::-1])


def statements(body: Iterable[A.Stmt]) -> list[A.Stmt]:
    """Every statement of a block body, those in both branches of an `if` included, in source order (an `if`
    before the statements of its branches). Expressions are not walked."""
    out: list[A.Stmt] = []
    stack: list[A.Node] = list(body)
    stack.reverse()
    while stack:  # walk(body, descend=<an If>), keeping the statements: as a tight loop, it runs per block
        node = stack.pop()
        if isinstance(node, A.Stmt):
            out.append(node)
        if isinstance(node, A.If):
            stack.extend(node.children()[::-1])
    return out


class Visitor:
    """Walks a tree by dispatching on the class of each node: `visit(node)` calls `self.visit_<Class>(node)`
    (`visit_Apply`, `visit_If`, ...) where the subclass defines one, else `generic_visit(node)`, which visits
    the node's children in source order. A `visit_X` method decides whether the walk goes below X (by calling
    `generic_visit`, or visiting only some fields). Recursive: one Python frame per level of nesting, which the
    parser bounds (MAX_NESTING)."""

    def visit(self, node: A.Node) -> None:
        key = (type(self), type(node))
        method = _DISPATCH.get(key)
        if method is None:  # looked up once per (visitor class, node class); the class's method, not an instance's
            method = _DISPATCH[key] = getattr(type(self), "visit_" + type(node).__name__, None) or _generic
        method(self, node)

    def visit_all(self, nodes: Iterable[A.Node]) -> None:
        for node in nodes:
            self.visit(node)

    def generic_visit(self, node: A.Node) -> None:
        visit = self.visit
        for child in node.children():
            visit(child)


def _generic(visitor: Visitor, node: A.Node) -> None:
    visitor.generic_visit(node)  # a subclass's own generic_visit where it has one


# (visitor class, node class) -> the function `visit` calls: the visitor's visit_<Class>, else _generic
_DISPATCH: dict[tuple[type[Visitor], type[A.Node]], Callable[[Visitor, A.Node], None]] = {}
