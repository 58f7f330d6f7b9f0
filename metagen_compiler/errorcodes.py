"""The registry of diagnostic codes. Codes are stable: tests and users refer to them.

Each code has a short title; the message of an individual diagnostic says the specifics.
docs/diagnostics.md is generated from this table by metagen_compiler/tools/diagnostics_doc.py (tests check it
is current); the registry itself imports nothing of the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CODES", "ErrorCode", "code"]


@dataclass(frozen=True)
class ErrorCode:
    code: str
    title: str
    explanation: str


_TABLE = [
    # E0xx: syntax and files
    ("E001", "syntax", "The text does not follow the MSL grammar: a token is missing or out of place."),
    ("E002", "unterminated", "A string, block or list is not closed before the end of the file."),
    ("E003", "invalid-character", "A character that no MSL token starts with."),
    ("E004", "file-not-found", "An input or imported file does not exist or cannot be read."),
    ("E005", "yaml-syntax", "A YAML spec is not well-formed YAML."),
    ("E006", "yaml-structure", "A YAML spec has a value of the wrong shape (a list where a mapping belongs, ...)."),
    ("E007", "unknown-key", "A YAML key that the spec format does not define."),
    ("E008", "version", "The version header names a language version this compiler does not speak."),
    ("E009", "limit-exceeded", "The input passes a limit of the language (docs/language.md, Limits): a file too "
     "large, a repeat count, graph, integer or YAML expansion too large."),
    # E1xx: names and imports
    ("E101", "unresolved-import", "An import names a module found neither beside the file, on an -I path nor in the stdlib."),
    ("E102", "import-cycle", "Modules import each other in a cycle."),
    ("E103", "undefined-name", "A name is used that no parameter, local, import or definition provides."),
    ("E104", "duplicate-definition", "Two definitions (blocks, families, models, fields, parameters) share one name."),
    ("E105", "unknown-layer", "A layer call names neither a primitive nor a block."),
    ("E106", "unknown-family", "The architecture names no family or preset."),
    ("E107", "no-model", "The input file defines no model."),
    ("E108", "undefined-tensor", "A tensor is read before it is assigned or declared as an input."),
    ("E109", "recursive-block", "A block applies itself (directly or through other blocks) in a way that never ends."),
    # E2xx: types, units, values
    ("E201", "type-mismatch", "A value has the wrong type for where it is used."),
    ("E202", "unit-mismatch", "A quantity carries a unit that does not fit (ms where bytes are expected, ...)."),
    ("E203", "unknown-enum", "A value is not one of the allowed choices (modality, task, objective, device, ...)."),
    ("E204", "bad-argument", "A call passes an argument the callee does not take, twice, or misses a required one."),
    ("E205", "non-integer-dim", "A dimension evaluates to a value that is not a positive integer."),
    ("E206", "requirement-failed", "A block's `require` condition does not hold for the given dims."),
    ("E207", "unknown-field", "A field name that the model, task, constraint or architecture section does not define."),
    ("E208", "missing-field", "A required section or field is absent."),
    ("E209", "bad-constraint", "A constraint is malformed (wrong comparison, missing device, ...)."),
    ("E210", "division-by-zero", "A dimension expression divides by zero."),
    ("E211", "out-of-range", "A value lies outside the range its setting allows (a negative learning rate, an EMA "
     "decay of 1, more warmup steps than training steps, ...)."),
    ("E212", "conflicting-settings", "Two settings that exclude each other are both given (training `steps` and "
     "`epochs`, ...)."),
    ("E213", "empty-choice", "An enumerated choice `? in {...}` lists no value."),
    ("E214", "duplicate-choice", "An enumerated choice `? in {...}` lists a value twice."),
    ("E215", "open-family", "The architecture leaves the family open (`architecture ? in {...}`): `metagenc search` "
     "chooses it; a plain compile needs one family."),
    # E3xx: modality, task, architecture
    ("E301", "unsupported-modality", "The family has no encoder for an input modality, or no head for the task."),
    ("E303", "bad-tie", "A weight tie names a parameter that does not exist or has another shape."),
    ("E304", "shape-mismatch", "Tensor shapes do not fit where they meet."),
    # E4xx: solving and constraints
    ("E401", "infeasible", "No choice of the open dimensions satisfies the constraints."),
    ("E402", "unsolvable", "Open dimensions are left but nothing (such as a parameter budget) determines them."),
    ("E403", "constraint-violated", "The compiled model breaks a declared constraint."),
    # W: warnings
    ("W001", "unknown-modality-fallback", "A modality the compiler does not know; a documented fallback is used."),
    ("W002", "constraint-estimate", "A constraint is checked against an estimate, not a measurement."),
    ("W003", "ignored-field", "A field is accepted but has no effect on the compiled model."),
    # I: internal
    # E5xx: backends
    ("E511", "onnx-opset-range", "The requested ONNX opset is outside the range the ONNX backend writes."),
    ("E512", "onnx-op-missing", "The chosen ONNX opset lacks an operator that a primitive lowers to."),
    ("E513", "onnx-no-lowering", "A primitive has no ONNX lowering."),
    ("E514", "onnx-weights-too-large", "Random weights for the model are too large to materialise in memory."),
    ("I001", "internal", "The compiler failed on its own. This is a bug: please report it with the input."),
]

CODES: dict[str, ErrorCode] = {c: ErrorCode(c, t, e) for c, t, e in _TABLE}


def code(c: str) -> ErrorCode:
    return CODES[c]
