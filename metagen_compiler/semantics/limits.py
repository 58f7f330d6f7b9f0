"""The limits of the language: one home for every bound the compiler enforces on its input.

A spec past one of these gets a diagnostic at the place where the limit is exceeded, with the
limit in the message (never a hang, a MemoryError or a traceback). docs/language.md lists them.
The language server compiles untrusted text on every keystroke, so each bound keeps time and
memory proportional to the size of the file, whatever the file says.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotations only: this module imports nothing, so that every module may use it
    from metagen_compiler.diagnostics import DiagnosticBag
    from metagen_compiler.span import SourceFile

__all__ = [
    "LIMITS_HINT",
    "LIMIT_CODE",
    "MAX_DIAGNOSTICS_SHOWN",
    "MAX_GRAPH_NODES",
    "MAX_INT",
    "MAX_NESTING",
    "MAX_REPEAT",
    "MAX_SOURCE_BYTES",
    "MAX_YAML_NODES",
    "PAST_MAX_FLOAT",
    "PAST_MAX_INT",
    "short_int",
    "source_too_large",
]

# The largest integer literal or integer value a dim, count or budget may take: int64 holds it, so
# generated code (example_inputs, ONNX initialisers) never overflows.
MAX_INT = 2**53

# The deepest nesting of expressions, blocks or YAML collections the front ends accept.
MAX_NESTING = 100

# The diagnostic code of a spec past one of the limits below (a registry code: errorcodes.py), the hint
# every such diagnostic carries, and the words that name the largest integer and the largest number in
# a message (`{value} is PAST_MAX_INT`).
LIMIT_CODE = "E009"
LIMITS_HINT = "see docs/language.md, Limits"
PAST_MAX_INT = f"past the largest integer the language allows ({MAX_INT:,} = 2**{MAX_INT.bit_length() - 1})"
PAST_MAX_FLOAT = "past the largest number the language allows (about 1.8e308)"

# The most copies one `repeat(n)` makes (the most layers of a stack). GPT-3 has 96, the deepest
# benchmark 192; a 3,072-layer decoder checks in 2.1 s of CPU and 192 MB (benchmarks/results/growth.json),
# while `--set layers=100000` took 161 s and 5.45 GB before this limit.
MAX_REPEAT = 4096

# The most nodes of one model's graph (primitive applications after elaboration). GPT-3 175B has 1,062
# and the deepest benchmark (192 layers) about 2,100; nested repeats that pass 100,000 are stopped
# after about 3 s and 220 MB.
MAX_GRAPH_NODES = 100_000

# The largest source file (.msl or .yaml) the front ends read, in bytes. The largest stdlib module is
# 12 kB, a spec a few kB; parsing is linear (a 0.99 MB list: 2.7 s of CPU, 143 MB), so this bounds a
# compile of any file to seconds.
MAX_SOURCE_BYTES = 1024 * 1024

# The most YAML nodes (scalars, mappings, sequences) one YAML spec may expand to, aliases counted each
# time they are used: this stops "billion laughs" alias bombs. A seed spec has about a hundred.
MAX_YAML_NODES = 100_000

# Text output shows this many diagnostics in full and counts the rest (JSON output lists them all).
MAX_DIAGNOSTICS_SHOWN = 100


def short_int(v: int) -> str:
    """An integer for a message: whole when short, else its size (a 5,000-digit literal stays one line)."""
    if v.bit_length() > 80:
        digits = len(str(abs(v))) if v.bit_length() < 14_000 else None  # str() refuses past 4,300 digits
        return f"an integer of {digits:,} digits" if digits else f"an integer of {v.bit_length():,} bits"
    return f"{v:,}"


def source_too_large(source: SourceFile, bag: DiagnosticBag) -> bool:
    """Whether a source file passes MAX_SOURCE_BYTES; if so, one error in `bag` at its first character.
    The front ends call this before they parse."""
    text = source.text
    if len(text) * 4 <= MAX_SOURCE_BYTES:  # UTF-8 takes at most 4 bytes a character: no need to encode
        return False
    size = len(text.encode("utf-8", "surrogatepass"))
    if size <= MAX_SOURCE_BYTES:
        return False
    from metagen_compiler.span import Span  # here: this module imports nothing at load time

    bag.error(LIMIT_CODE, f"the file is {size:,} bytes, larger than the {MAX_SOURCE_BYTES:,} bytes "
              f"({MAX_SOURCE_BYTES // 2**20} MiB) the language allows", Span.of(source, 0, min(1, len(text))),
              hint=f"{LIMITS_HINT}; split it into modules")
    return True
