"""The pipeline: an explicit list of named stages, run in this order by the driver."""

from __future__ import annotations

from ..compilation import Pass
from .check import CheckPass
from .constraints import ConstraintsPass
from .estimate import EstimatePass
from .heads import HeadsPass
from .lower import LowerPass
from .modality import ModalityPass
from .overrides import OverridesPass
from .parse import ParsePass
from .resolve import ResolvePass
from .shapes import ShapesPass
from .solve import SolvePass
from .structure import StructurePass

__all__ = ["PASSES", "PIPELINE"]

PIPELINE: tuple[Pass, ...] = (
    ParsePass(),
    ResolvePass(),
    CheckPass(),
    OverridesPass(),
    ModalityPass(),
    HeadsPass(),
    SolvePass(),
    LowerPass(),
    ShapesPass(),
    StructurePass(),
    EstimatePass(),
    ConstraintsPass(),
)

PASSES: dict[str, Pass] = {p.name: p for p in PIPELINE}
