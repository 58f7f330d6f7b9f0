"""LaTeX escaping for the paper, under the names the backend uses: `tt`, `tt_body`, `rm`, `spec_str`.

The one implementation lives in metagen_compiler/escape.py (`latex_tt`, `latex_tt_body`, `latex_rm`,
`latex_value`), beside the escapers of the other target languages; see its docstring for what they
guarantee. Every string that comes from a spec goes through `tt` or `rm` before it reaches a .tex file.
"""

from __future__ import annotations

from metagen_compiler.escape import latex_rm as rm
from metagen_compiler.escape import latex_tt as tt
from metagen_compiler.escape import latex_tt_body as tt_body
from metagen_compiler.escape import latex_value as spec_str

__all__ = ["rm", "spec_str", "tt", "tt_body"]
