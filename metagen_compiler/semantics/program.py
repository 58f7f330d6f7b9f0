"""Loading: the user's file, its imports (stdlib, beside the file, -I paths), and the symbol tables.

This is the `resolve` stage's engine: it turns a set of parsed modules into a Program in which
every definition has a qualified name and every module has a scope of visible names.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from metagen_compiler.diagnostics import DiagnosticBag, Note, did_you_mean
from metagen_compiler.semantics.values import EvalError, evaluate
from metagen_compiler.span import SourceFile, Span
from metagen_compiler.syntax import ast as A
from metagen_compiler.syntax.parser import parse_msl

__all__ = ["Definition", "Program", "load_program", "read_source", "stdlib_modules"]

STDLIB_PREFIX = "std"
PRELUDE = ("std.devices",)


@dataclass(frozen=True)
class Definition:
    kind: str  # block | family | preset | device
    qualname: str
    node: A.Block | A.Family | A.Preset | A.Device
    module: str


@dataclass
class Program:
    root: A.Module
    root_name: str
    modules: dict[str, A.Module] = field(default_factory=dict)
    defs: dict[str, Definition] = field(default_factory=dict)
    scopes: dict[str, dict[str, str]] = field(default_factory=dict)

    def module_of(self, node_module_path: str) -> str:
        for name, m in self.modules.items():
            if m.path == node_module_path:
                return name
        return self.root_name

    def lookup(self, module: str, name: A.Name | str) -> Definition | None:
        dotted = name.dotted if isinstance(name, A.Name) else name
        qual = self.scopes.get(module, {}).get(dotted)
        return self.defs.get(qual) if qual else None

    def visible(self, module: str, kind: str | None = None) -> list[str]:
        return sorted(n for n, q in self.scopes.get(module, {}).items() if kind is None or self.defs[q].kind == kind)

    def defs_of(self, kind: str) -> list[Definition]:
        return [d for d in self.defs.values() if d.kind == kind]


def stdlib_modules() -> list[str]:
    root = resources.files("metagen_stdlib")
    return sorted(f"{STDLIB_PREFIX}.{p.name[:-4]}" for p in root.iterdir() if p.name.endswith(".msl"))


def read_source(path: str | Path, display: str | None = None) -> SourceFile:
    p = Path(path)
    return SourceFile(display or str(path), p.read_text(encoding="utf-8"))


def _display_path(path: Path) -> str:
    """How diagnostics name a user module: relative to the working directory when it lies below it,
    so that output does not depend on where the checkout is."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(path)


def _stdlib_source(modname: str) -> SourceFile | None:
    if "." not in modname:  # `import std` alone names the package, not a module
        return None
    rel = modname.split(".", 1)[1].replace(".", "/") + ".msl"
    res = resources.files("metagen_stdlib").joinpath(rel)
    if not res.is_file():
        return None
    return SourceFile(f"<stdlib>/{rel}", res.read_text(encoding="utf-8"))


def _find_user_module(modname: str, search: list[Path]) -> Path | None:
    rel = Path(*modname.split(".")).with_suffix(".msl")
    for d in search:
        cand = d / rel
        if cand.is_file():
            return cand
    return None


class _Loader:
    def __init__(self, bag: DiagnosticBag, search: list[Path]) -> None:
        self.bag = bag
        self.search = search
        self.modules: dict[str, A.Module] = {}
        self.failed: set[str] = set()

    def load_import(self, imp: A.Import, stack: list[tuple[str, Span]]) -> str | None:
        modname = imp.path.dotted
        chain = [n for n, _ in stack]
        if modname in chain:
            i = chain.index(modname)
            cycle = " -> ".join(chain[i:] + [modname])
            notes = [Note(f"`{n}` is imported here", s) for n, s in stack[i + 1:]]
            self.bag.error("E102", f"import cycle: {cycle}", imp.span, notes=notes,
                           hint="move the shared definitions into a module that both import")
            return None
        if modname in self.modules:
            return modname
        if modname in self.failed:
            return None
        src: SourceFile | None = None
        if imp.path.parts[0] == STDLIB_PREFIX:
            src = _stdlib_source(modname)
        else:
            path = _find_user_module(modname, self.search)
            if path is not None:
                try:
                    src = read_source(path, display=_display_path(path))
                except (OSError, UnicodeDecodeError) as e:  # unreadable, or not UTF-8 text
                    self.failed.add(modname)
                    why = f"it is not UTF-8 text ({e.reason} at byte {e.start})" if isinstance(
                        e, UnicodeDecodeError) else (e.strerror or str(e))
                    self.bag.error("E004", f"cannot read module `{modname}` ({_display_path(path)}): {why}",
                                   imp.path.span, hint="MSL files are UTF-8 text" if isinstance(
                                       e, UnicodeDecodeError) else None)
                    return None
        if src is None:
            self.failed.add(modname)
            hint = did_you_mean(modname, stdlib_modules())
            if modname == STDLIB_PREFIX:
                hint = f"`{STDLIB_PREFIX}` is the standard library, not a module: import one of {', '.join(stdlib_modules())}"
            elif hint is None and imp.path.parts[0] != STDLIB_PREFIX:
                hint = (f"looked for {'/'.join(imp.path.parts)}.msl beside the file and on the -I paths; "
                        f"stdlib modules are: {', '.join(stdlib_modules())}")
            self.bag.error("E101", f"cannot find module `{modname}`", imp.path.span, hint=hint)
            return None
        module = parse_stdlib_cached(src, self.bag) if src.path.startswith("<stdlib>/") else parse_msl(src, self.bag)
        if module is None:
            self.failed.add(modname)
            return None
        self.modules[modname] = module
        self._load_imports_of(module, stack + [(modname, imp.span)])
        return modname

    def _load_imports_of(self, module: A.Module, stack: list[tuple[str, Span]]) -> None:
        for imp in module.imports:
            self.load_import(imp, stack)


def _namespace(modname: str, imp: A.Import | None) -> str:
    if imp is not None and imp.alias is not None:
        return imp.alias.name
    return modname.rsplit(".", 1)[-1]


def _own_defs(module: A.Module) -> list[tuple[str, str, A.Block | A.Family | A.Preset | A.Device]]:
    out: list[tuple[str, str, A.Block | A.Family | A.Preset | A.Device]] = []
    out += [("block", b.name.name, b) for b in module.blocks]
    out += [("family", f.name.name, f) for f in module.families]
    out += [("preset", p.name.name, p) for p in module.presets]
    out += [("device", d.name.name, d) for d in module.devices]
    return out


PROFILE_PREFIX = "profile"


def load_program(root: A.Module, bag: DiagnosticBag, search: list[Path], root_name: str = "__main__",
                 device_profiles: tuple[Path, ...] = ()) -> Program:
    """Load every module `root` reaches and build the symbol tables.

    `device_profiles` are extra MSL files (`--device-profile`, written by `metagenc calibrate`) whose
    `device` blocks join the prelude: module `profile.<file stem>`, visible in every module."""
    loader = _Loader(bag, search)
    prelude_span = Span.of(SourceFile("<prelude>", ""), 0, 0)
    prelude = list(PRELUDE)
    for path in device_profiles:
        modname = f"{PROFILE_PREFIX}.{''.join(ch if ch.isalnum() else '_' for ch in path.stem)}"
        try:
            src = read_source(path, display=_display_path(path))
        except (OSError, UnicodeDecodeError) as e:
            bag.error("E004", f"cannot read device profile `{path}`: {getattr(e, 'strerror', None) or e}", None)
            continue
        module = parse_msl(src, bag)
        if module is not None:
            loader.modules[modname] = module
            prelude.append(modname)
    for mod in PRELUDE:
        loader.load_import(A.Import(prelude_span, A.Name(prelude_span, tuple(mod.split("."))), None), [])
    loader._load_imports_of(root, [(root_name, root.span)])
    prog = Program(root=root, root_name=root_name)
    prog.modules = {root_name: root, **dict(sorted(loader.modules.items()))}

    # definitions, with duplicate checks per module
    for modname, module in prog.modules.items():
        seen: dict[str, A.Node] = {}
        for kind, name, node in _own_defs(module):
            if name in seen:
                bag.error("E104", f"`{name}` is defined twice", node.name.span,
                          notes=[Note("first defined here", seen[name].name.span)])  # type: ignore[attr-defined]
                continue
            seen[name] = node
            qual = name if modname == root_name else f"{modname}.{name}"
            prog.defs[qual] = Definition(kind, qual, node, modname)

    # scopes: own names, then imported namespaces (qualified and, where unambiguous, bare)
    for modname, module in prog.modules.items():
        scope: dict[str, str] = {}
        bare: dict[str, set[str]] = {}
        # the prelude (std.layers, device profiles) is visible in every module, the stdlib's own included
        imports = [A.Import(prelude_span, A.Name(prelude_span, tuple(p.split("."))), None) for p in prelude]
        imports += module.imports
        for imp in imports:
            target = imp.path.dotted
            if target not in prog.modules:
                continue
            ns = _namespace(target, imp)
            for kind, name, _node in _own_defs(prog.modules[target]):
                q = f"{target}.{name}"
                if q not in prog.defs:
                    continue
                scope[f"{ns}.{name}"] = q
                bare.setdefault(name, set()).add(q)
        for name, quals in bare.items():
            if len(quals) == 1:
                scope[name] = next(iter(quals))
        for kind, name, _node in _own_defs(module):
            q = name if modname == root_name else f"{modname}.{name}"
            if q in prog.defs:
                scope[name] = q
        prog.scopes[modname] = scope
    return prog


def import_hint(name: str, kinds: tuple[str, ...]) -> str | None:
    """"`x` is defined in std.m: add `import std.m`", for a name some stdlib module defines.

    Only used on the error path: it parses the stdlib modules the program did not load."""
    found = []
    for modname in stdlib_modules():
        src = _stdlib_source(modname)
        if src is None:
            continue
        module = parse_msl(src, DiagnosticBag())
        if module is not None and any(k in kinds and n == name for k, n, _ in _own_defs(module)):
            found.append(modname)
    if not found:
        return None
    return f"`{name}` is defined in {' and '.join(found)}: add `import {found[0]}`"


_AST_CACHE: dict[str, A.Module] = {}


def _cache_dir() -> Path | None:
    if os.environ.get("METAGENC_NO_CACHE"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "metagenc"


@functools.lru_cache(maxsize=1)
def _parser_fingerprint() -> str:
    """What a parsed module depends on besides its text: the compiler version, the grammar and the
    code that builds and defines the AST (an edited checkout keeps its version number)."""
    import hashlib

    from metagen_compiler import span as span_module
    from metagen_compiler.syntax import ast as ast_module
    from metagen_compiler.syntax import parser as parser_module
    from metagen_compiler.syntax.parser import grammar_text
    from metagen_compiler.version import __version__

    h = hashlib.sha256(__version__.encode())
    h.update(grammar_text().encode())
    for mod in (ast_module, parser_module, span_module):
        h.update(Path(mod.__file__ or "").read_bytes())
    return h.hexdigest()


def parse_stdlib_cached(src: SourceFile, bag: DiagnosticBag) -> A.Module | None:
    """Parse a stdlib module once: in memory per process, and on disk keyed by the hash of the
    parser's fingerprint (version, grammar, AST code) and the text, so that a changed file, grammar
    or AST is parsed anew."""
    import hashlib
    import pickle

    key = hashlib.sha256(f"{_parser_fingerprint()}\x00{src.path}\x00{src.text}".encode()).hexdigest()[:32]
    if key in _AST_CACHE:
        return _AST_CACHE[key]
    d = _cache_dir()
    path = d / f"stdlib-{key}.pickle" if d is not None else None
    if path is not None and path.is_file():
        try:
            module = pickle.loads(path.read_bytes())
            if isinstance(module, A.Module) and module.path == src.path:
                _AST_CACHE[key] = module
                return module
        except Exception:  # noqa: BLE001, S110 - a stale or damaged cache entry is parsed anew
            pass
    module = parse_msl(src, bag)
    if module is None:
        return None
    _AST_CACHE[key] = module
    if path is not None:
        _write_atomic(path, pickle.dumps(module, protocol=pickle.HIGHEST_PROTOCOL))
    return module


def _write_atomic(path: Path, data: bytes) -> None:
    """Write beside `path` under a unique name, then rename: readers never see half a file. Failure
    (a read-only home, a full disk) is fine: the cache is only an optimisation."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def device_profiles(prog: Program) -> dict[str, dict[str, Any]]:
    """Each `device` block of the program (the stdlib's devices.msl, then --device-profile files) by name: its
    fields' values, those that do not evaluate to a constant left out."""
    out = {}
    # stdlib profiles first, so a profile given with --device-profile replaces one of the same name
    for d in sorted(prog.defs_of("device"), key=lambda d: (not d.qualname.startswith("std."), d.qualname)):
        node = d.node
        assert isinstance(node, A.Device)
        fields: dict[str, Any] = {}
        for f in node.fields:
            try:
                fields[f.name.name] = evaluate(f.value, {})
            except EvalError:
                continue
        out[node.name.name] = fields
    return out
