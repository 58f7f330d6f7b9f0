"""Shared test helpers: compiling specs, loading generated model.py files, text snapshots."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
from syrupy.extensions.single_file import SingleFileSnapshotExtension, WriteMode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.msl"))
SEED_YAML = sorted((ROOT / "tests" / "seeds_yaml").glob("*.yaml"))


def rel(p: Path) -> str:
    return p.resolve().relative_to(ROOT).as_posix()


def compile_path(path: Path, **kw):  # type: ignore[no-untyped-def]
    from metagen_compiler.driver import compile_source
    from metagen_compiler.program import read_source

    return compile_source(read_source(path, display=rel(path)), **kw)


def generated_module(path: Path, folder: Path, name: str) -> types.ModuleType:
    """The PyTorch backend's model.py for the spec at `path`, written to `folder` and imported as `name`."""
    from metagen_backends.pytorch import emit

    comp = compile_path(path)
    assert not comp.bag.has_errors, [str(d) for d in comp.bag.errors]
    (folder / "model.py").write_text(emit(comp)["model.py"])
    return load_module(folder / "model.py", name)


def load_module(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


class TextSnapshot(SingleFileSnapshotExtension):
    """One plain-text file per snapshot, so golden diffs read like code review."""

    _write_mode = WriteMode.TEXT
    file_extension = "txt"


@pytest.fixture
def text_snapshot(snapshot):  # type: ignore[no-untyped-def]
    return snapshot.use_extension(TextSnapshot)
