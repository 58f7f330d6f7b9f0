"""Editor support for MSL: the vocabulary editors highlight and complete, and the Pygments lexer.

The language server is `metagen_compiler.editor.lsp` (`metagenc lsp`), the formatter `metagen_compiler.syntax.fmt`
(`metagenc fmt`); the VS Code extension, with its TextMate grammar, lives in `editors/vscode/`.
"""

from __future__ import annotations

from .vocabulary import KEYWORD_KINDS, KEYWORDS, TYPE_NAMES, UNITS

__all__ = ["KEYWORDS", "KEYWORD_KINDS", "TYPE_NAMES", "UNITS"]
