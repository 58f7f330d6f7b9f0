"""Every number the paper prints goes through one `Ledger`, which formats it and records where it
came from.

A number is printed as `\\mgnum[nK]{TEXT}` followed by its unit (metagen.sty prints TEXT). The
ledger keeps, per id, the text, the exact value, the scale the text is in (value ~ TEXT x scale)
and the source:

- `report`: a key path into report.json (`memory.weights_bytes.fp32`, `constraints.0.actual`);
- `graph`: a quantity of graph.json (`block.params:backbone.h`, `shape:encoder.wte:2`, ...);
- `device`: a field of a device profile (`consumer_gpu.bandwidth`) from the device definitions the
  compilation used (stdlib/devices.msl unless the spec defines its own).

The ledger is written to paper/provenance.json; the tests check every entry against report.json,
graph.json and the device profiles, and check that every number in a table is one of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Entry", "Ledger", "lookup"]

_SI = ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""))
_BIN = ((2.0**40, "TiB"), (2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB"), (1.0, "B"))


@dataclass(frozen=True)
class Entry:
    id: str
    text: str  # what the paper prints, without the unit; value ~ float(text) x scale
    value: int | float
    scale: float
    decimals: int  # digits after the point in `text`: the precision to check against
    unit: str
    source: str  # report | graph | device
    key: str
    basis: str  # exact | estimate | convention | assumption


def lookup(doc: Any, key: str) -> Any:
    """The value at a dotted key path (`constraints.0.actual`) of a JSON document."""
    cur = doc
    for part in key.split("."):
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    return cur


def _sig(x: float, sig: int) -> tuple[str, int]:
    if x == 0 or not math.isfinite(x):
        return ("0", 0)
    decimals = max(0, sig - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}", decimals


class Ledger:
    def __init__(self, report: dict[str, Any]) -> None:
        self.report = report
        self.entries: list[Entry] = []

    # ------------------------------------------------------------------ recording
    def _put(self, text: str, value: float, scale: float, decimals: int, unit: str, source: str, key: str,
             basis: str) -> str:
        eid = f"n{len(self.entries) + 1}"
        self.entries.append(Entry(eid, text, value, scale, decimals, unit, source, key, basis))
        body = text.replace(",", "\\,")
        return f"\\mgnum[{eid}]{{{body}}}" + (f"\\,{unit}" if unit else "")

    def _value(self, source: str, key: str, value: float | None) -> int | float:
        if source == "report":
            v = lookup(self.report, key)
            assert value is None or v == value, (key, v, value)
            assert isinstance(v, (int, float)) and not isinstance(v, bool), (key, v)
            return v
        assert value is not None, key
        return value

    # ------------------------------------------------------------------ formats
    def count(self, key: str, value: int | None = None, *, source: str = "report", basis: str = "exact",
              unit: str = "") -> str:
        """An exact integer, digits grouped by thin spaces (124,439,808)."""
        v = self._value(source, key, value)
        text = f"{int(v):,}" if abs(v) >= 10_000 else str(int(v))
        return self._put(text, v, 1.0, 0, unit, source, key, basis)

    def si(self, key: str, value: float | None = None, *, unit: str = "", source: str = "report",
           basis: str = "exact", sig: int = 4) -> str:
        """A count with an SI prefix, `sig` significant digits (291.6 G, 124.4 M)."""
        v = self._value(source, key, value)
        for scale, prefix in _SI:
            if abs(v) >= scale or scale == 1.0:
                text, dec = _sig(v / scale, sig)
                if float(text) >= 1000 and scale < 1e18:
                    continue
                return self._put(text, v, scale, dec, f"{prefix}{unit}", source, key, basis)
        raise AssertionError("unreachable")

    def nbytes(self, key: str, value: float | None = None, *, source: str = "report",
               basis: str = "exact") -> str:
        """Bytes with a binary prefix (474.7 MiB)."""
        v = self._value(source, key, value)
        for scale, unit in _BIN:
            if abs(v) >= scale or scale == 1.0:
                text, dec = _sig(v / scale, 4)
                return self._put(text, v, scale, dec, unit, source, key, basis)
        raise AssertionError("unreachable")

    def seconds(self, key: str, value: float | None = None, *, source: str = "report",
                basis: str = "estimate") -> str:
        """A duration in s, ms or us, 4 significant digits."""
        v = self._value(source, key, value)
        scale, unit = (1.0, "s") if abs(v) >= 1 else (1e-3, "ms") if abs(v) >= 1e-3 else (1e-6, "$\\mu$s")
        text, dec = _sig(v / scale, 4)
        return self._put(text, v, scale, dec, unit, source, key, basis)

    def percent(self, key: str, value: float | None = None, *, source: str = "report", basis: str = "exact") -> str:
        """A fraction as a percentage with two decimals (0.9858 -> 98.58 %)."""
        v = self._value(source, key, value)
        return self._put(f"{v * 100:.2f}", v, 0.01, 2, "\\%", source, key, basis)

    def plain(self, key: str, value: float | None = None, *, source: str = "report", basis: str = "exact",
              unit: str = "") -> str:
        """A number as the shortest text that reads back to it (0.6, 1e-05 as 0.00001)."""
        v = self._value(source, key, value)
        if isinstance(v, int):
            return self.count(key, v, source=source, basis=basis, unit=unit)
        text = repr(float(v))
        if "e" in text:
            text = f"{v:.12f}".rstrip("0").rstrip(".")
        dec = len(text.split(".")[1]) if "." in text else 0
        return self._put(text, v, 1.0, dec, unit, source, key, basis)

    # ------------------------------------------------------------------ output
    def as_json(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.entries]
