"""Every stdlib preset and every seed YAML spec gets the examples' checks (tests/test_numeric.py): it compiles, the
instantiated module (meta device) has report.json's parameter count, and at the family's reduced size forward,
loss and backward run and the outputs have the task's shapes. Presets that an example uses are covered there;
the others slot into the spec of an example of their family."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from conftest import EXAMPLES, ROOT, load_module
from test_numeric import check_small
from test_yaml_frontend import BUILT

from metagen_compiler.cli import main
from metagen_compiler.diagnostics import DiagnosticBag
from metagen_compiler.semantics.program import Program, load_program, stdlib_modules
from metagen_compiler.span import SourceFile
from metagen_compiler.syntax.parser import parse_msl

# presets no example uses -> the example of the same family whose spec (modality, task, sizes) they slot into
TEMPLATES = {
    "yolo_s": "yolo_detector", "yolo_n": "yolo_detector", "tft_electricity": "tft_forecast",
    "mixtral_8x7b": "moe_lm", "llama_small": "gpt2", "resnet18": "resnet50", "r3d_18": "r2plus1d_kinetics",
}
# budgets of the template that the preset is not meant to meet
_BUDGETS = re.compile(r"^\s*(params|memory|training_memory|latency|throughput|flops)\b.*\n", re.MULTILINE)


def stdlib_program() -> Program:
    """The program of a module that imports every stdlib module: all their definitions, qualified."""
    bag = DiagnosticBag()
    text = "msl 1\n" + "".join(f"import {m}\n" for m in stdlib_modules())
    root = parse_msl(SourceFile("<every stdlib module>", text), bag)
    assert root is not None and not bag.has_errors, [str(d) for d in bag.items]
    return load_program(root, bag, [])


def stdlib_presets() -> dict[str, str]:
    """Every preset in the stdlib: name -> its module's short name (`detection`, `presets`)."""
    return {d.qualname.rsplit(".", 1)[1]: d.module.split(".", 1)[1] for d in stdlib_program().defs_of("preset")}


def _architecture_names(text: str) -> set[str]:
    return {m.split(".")[-1] for m in re.findall(r"^\s*architecture\s+([\w.]+)", text, re.MULTILINE)}


def with_preset(example: str, preset: str, module: str) -> str:
    """The example's source with its `architecture` clause (one line, or a `{ ... }` block) naming `preset`
    and its budgets dropped."""
    lines = (ROOT / "examples" / f"{example}.msl").read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("architecture "))
    end = start
    if lines[start].rstrip().endswith("{"):
        end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "}")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    text = "".join(lines[:start]) + f"{indent}architecture {module}.{preset}\n" + "".join(lines[end + 1:])
    return _BUDGETS.sub("", text)


def _compile(spec: Path, out: Path):  # type: ignore[no-untyped-def]
    assert main([str(spec), "-o", str(out)]) == 0
    (d,) = [p for p in out.iterdir() if p.is_dir()]
    report = json.loads((d / "report.json").read_text())
    return load_module(d / "model.py", f"preset_{d.name}"), report


def _meta_params(mod) -> int:  # type: ignore[no-untyped-def]
    with torch.device("meta"):
        model = mod.build_model()
    return sum(p.numel() for p in model.parameters())


def test_every_preset_is_built_somewhere() -> None:
    used = set().union(*(_architecture_names(p.read_text(encoding="utf-8")) for p in EXAMPLES))
    presets = stdlib_presets()
    assert sorted(set(presets) - used - set(TEMPLATES)) == []
    assert sorted(set(TEMPLATES) - set(presets)) == []  # no stale entry
    assert sorted(set(TEMPLATES) & used) == []  # an example covers it: the entry is not needed


@pytest.mark.parametrize("preset", sorted(TEMPLATES))
def test_preset_builds_and_trains_small(preset: str, tmp_path: Path) -> None:
    spec = tmp_path / f"{preset}.msl"
    spec.write_text(with_preset(TEMPLATES[preset], preset, stdlib_presets()[preset]), encoding="utf-8")
    mod, report = _compile(spec, tmp_path / "out")
    assert report["preset"].split(".")[-1] == preset
    assert _meta_params(mod) == report["params"]
    check_small(mod, report)


@pytest.mark.parametrize("name", BUILT)
def test_seed_yaml_builds_and_trains_small(name: str, tmp_path: Path) -> None:
    mod, report = _compile(ROOT / "tests" / "seeds_yaml" / f"{name}.yaml", tmp_path / "out")
    assert _meta_params(mod) == report["params"]
    check_small(mod, report)
