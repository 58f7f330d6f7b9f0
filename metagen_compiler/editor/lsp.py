"""`metagenc lsp`: the MSL language server (pygls), on stdio.

It shares the compiler's front end: each open document is compiled as `metagenc --check FILE` compiles
it, and the same Diagnostic objects the CLI renders become LSP diagnostics (same codes and messages;
a hint follows the message as `help: ...`, notes become related information). Diagnostics are
refreshed as the user types (after a short pause). Hover, completion, go to definition, document
symbols and formatting are answered from editor/analysis.py, editor/completion.py and fmt.py.

A file that defines no model (a library module, such as the stdlib's) is checked as a library: the
CLI's E107 "this file defines no model" is not shown for it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import logging
import sys
from concurrent.futures import ThreadPoolExecutor

from lsprotocol import types as T
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path
from pygls.workspace import PositionCodec

from metagen_compiler.diagnostics import Diagnostic, Severity
from metagen_compiler.editor.analysis import (
    DocState,
    Symbol,
    analyze,
    definition,
    document_symbols,
    hover,
    source_file_of,
)
from metagen_compiler.editor.completion import Completion, complete
from metagen_compiler.span import Span
from metagen_compiler.syntax.fmt import FormatError, format_text
from metagen_compiler.version import __version__

__all__ = ["MSLServer", "main", "server"]

logger = logging.getLogger(__name__)
DEBOUNCE_S = 0.25  # the pause in typing after which a changed document is compiled again
_LIBRARY_ONLY = "E107"  # "this file defines no model": not an error for a module being edited

_COMPLETION_KIND = {
    "keyword": T.CompletionItemKind.Keyword, "block": T.CompletionItemKind.Function,
    "family": T.CompletionItemKind.Class, "preset": T.CompletionItemKind.Constant,
    "device": T.CompletionItemKind.Constant, "primitive": T.CompletionItemKind.Function,
    "module": T.CompletionItemKind.Module, "enum": T.CompletionItemKind.EnumMember,
    "unit": T.CompletionItemKind.Unit, "field": T.CompletionItemKind.Field, "value": T.CompletionItemKind.Value,
    "variable": T.CompletionItemKind.Variable,
}
_SEVERITY = {Severity.ERROR: T.DiagnosticSeverity.Error, Severity.WARNING: T.DiagnosticSeverity.Warning,
             Severity.NOTE: T.DiagnosticSeverity.Information}
_SYMBOL_KIND = {
    "import": T.SymbolKind.Namespace, "block": T.SymbolKind.Function, "family": T.SymbolKind.Class,
    "preset": T.SymbolKind.Constant, "device": T.SymbolKind.Object, "model": T.SymbolKind.Module,
    "param": T.SymbolKind.Variable, "field": T.SymbolKind.Field, "constraint": T.SymbolKind.Property,
    "slot": T.SymbolKind.Property,
}


class _Positions:
    """Offsets <-> LSP positions for one text, in the encoding the client and server agreed on."""

    def __init__(self, text: str, codec: PositionCodec) -> None:
        self.text = text
        self.codec = codec
        self.lines = text.split("\n")
        self.starts = [0]
        for ln in self.lines[:-1]:
            self.starts.append(self.starts[-1] + len(ln) + 1)

    def position(self, offset: int) -> T.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect.bisect_right(self.starts, offset) - 1
        col = offset - self.starts[line]
        return T.Position(line, self.codec.client_num_units(self.lines[line][:col]))

    def offset(self, pos: T.Position) -> int:
        if pos.line >= len(self.lines):
            return len(self.text)
        line = self.lines[pos.line]
        units = 0
        for i, ch in enumerate(line):
            if units >= pos.character:
                return self.starts[pos.line] + i
            units += self.codec.client_num_units(ch)
        return self.starts[pos.line] + len(line)

    def range(self, start: int, end: int) -> T.Range:
        return T.Range(self.position(start), self.position(end))


class MSLServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("metagenc", __version__)
        self.docs: dict[str, DocState] = {}
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.published: dict[str, set[str]] = {}  # document URI -> other URIs it published diagnostics to
        self.compiler = ThreadPoolExecutor(max_workers=1, thread_name_prefix="metagenc")

    # ------------------------------------------------------------ documents
    def doc(self, uri: str) -> DocState:
        text = self.workspace.get_text_document(uri).source
        state = self.docs.get(uri)
        if state is None:
            state = self.docs[uri] = DocState(to_fs_path(uri) or uri, text)
        state.text = text
        return state

    def positions(self, text: str) -> _Positions:
        return _Positions(text, self.workspace.position_codec)

    async def refresh(self, uri: str, delay: float) -> None:
        """Compile the document (after `delay` seconds of quiet) and publish its diagnostics."""
        if delay:
            await asyncio.sleep(delay)
        state = self.doc(uri)
        text = state.text
        loop = asyncio.get_running_loop()
        try:
            a = await loop.run_in_executor(self.compiler, analyze, text, state.path)
        except Exception as e:  # a compiler bug: say so where the user looks, as the CLI would
            logger.exception("compiling %s", uri)
            crash = Diagnostic(Severity.ERROR, "I001", f"internal compiler error: {type(e).__name__}: {e}", None,
                               hint="this is a bug in metagenc; please report it with the input file")
            self.publish(uri, state, [crash])
            return
        state.update(a)
        if self.doc(uri).text != text:
            return  # typed on meanwhile: the next refresh publishes
        self.publish(uri, state, a.diagnostics)

    def schedule(self, uri: str, delay: float) -> None:
        old = self.pending.pop(uri, None)
        if old is not None:
            old.cancel()
        self.pending[uri] = asyncio.ensure_future(self.refresh(uri, delay))

    def publish(self, uri: str, state: DocState, diags: list[Diagnostic]) -> None:
        library = state.module is not None and not state.module.models
        by_uri: dict[str, list[T.Diagnostic]] = {uri: []}
        for d in diags:
            if library and d.code == _LIBRARY_ONLY:
                continue
            where = self._uri_of(d.span, state) or uri
            by_uri.setdefault(where, []).append(self.lsp_diagnostic(d, state))
        stale = self.published.get(uri, set()) - set(by_uri)
        for other in stale:
            by_uri[other] = []
        self.published[uri] = {u for u in by_uri if u != uri}
        for target, items in by_uri.items():
            self.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=target, diagnostics=items))

    def _uri_of(self, span: Span | None, state: DocState) -> str | None:
        if span is None or span.file is None:
            return None
        path = source_file_of(span, state.path)
        return from_fs_path(str(path)) if path is not None else None

    def _range(self, span: Span | None) -> T.Range:
        if span is None or span.file is None:
            return T.Range(T.Position(0, 0), T.Position(0, 0))
        return self.positions(span.file.text).range(span.start, span.end)

    def lsp_diagnostic(self, d: Diagnostic, state: DocState) -> T.Diagnostic:
        """The CLI's diagnostic, as LSP data: same code and message; the hint and unplaced notes follow it."""
        message = d.message
        related = []
        for n in d.notes:
            uri = self._uri_of(n.span, state)
            if uri is not None:
                related.append(T.DiagnosticRelatedInformation(T.Location(uri, self._range(n.span)), n.message))
            else:
                message += f"\nnote: {n.message}"
        if d.hint:
            message += f"\nhelp: {d.hint}"
        return T.Diagnostic(range=self._range(d.span), message=message, severity=_SEVERITY[d.severity], code=d.code,
                            source="metagenc", related_information=related or None)


server = MSLServer()


# ---------------------------------------------------------------- synchronisation
@server.feature(T.TEXT_DOCUMENT_DID_OPEN)
async def did_open(ls: MSLServer, params: T.DidOpenTextDocumentParams) -> None:
    await ls.refresh(params.text_document.uri, 0)


@server.feature(T.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: MSLServer, params: T.DidChangeTextDocumentParams) -> None:
    ls.doc(params.text_document.uri)
    ls.schedule(params.text_document.uri, DEBOUNCE_S)


@server.feature(T.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: MSLServer, params: T.DidSaveTextDocumentParams) -> None:
    ls.schedule(params.text_document.uri, 0)


@server.feature(T.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: MSLServer, params: T.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    task = ls.pending.pop(uri, None)
    if task is not None:
        task.cancel()
    ls.docs.pop(uri, None)
    for target in {uri, *ls.published.pop(uri, set())}:
        ls.text_document_publish_diagnostics(T.PublishDiagnosticsParams(uri=target, diagnostics=[]))


# ---------------------------------------------------------------- features
@server.feature(T.TEXT_DOCUMENT_HOVER)
def on_hover(ls: MSLServer, params: T.HoverParams) -> T.Hover | None:
    state = ls.doc(params.text_document.uri)
    pos = ls.positions(state.text)
    found = hover(state, pos.offset(params.position))
    if found is None:
        return None
    start, end, text = found
    return T.Hover(T.MarkupContent(T.MarkupKind.Markdown, text), pos.range(start, end))


@server.feature(T.TEXT_DOCUMENT_COMPLETION, T.CompletionOptions(trigger_characters=[" ", ".", ">", "=", "("]))
def on_completion(ls: MSLServer, params: T.CompletionParams) -> T.CompletionList:
    state = ls.doc(params.text_document.uri)
    pos = ls.positions(state.text)
    items = complete(state, pos.offset(params.position))
    return T.CompletionList(is_incomplete=False, items=[_completion_item(c, i, pos) for i, c in enumerate(items)])


def _completion_item(c: Completion, rank: int, pos: _Positions) -> T.CompletionItem:
    text = c.insert if c.insert is not None else c.label
    edit = T.TextEdit(pos.range(*c.replace), text) if c.replace is not None else None
    return T.CompletionItem(
        label=c.label, kind=_COMPLETION_KIND.get(c.kind), detail=c.detail or None,
        documentation=T.MarkupContent(T.MarkupKind.Markdown, c.documentation) if c.documentation else None,
        insert_text=None if edit is not None else text, text_edit=edit, sort_text=f"{rank:04d}",
        insert_text_format=T.InsertTextFormat.Snippet if c.snippet else T.InsertTextFormat.PlainText,
    )


@server.feature(T.TEXT_DOCUMENT_DEFINITION)
def on_definition(ls: MSLServer, params: T.DefinitionParams) -> T.Location | None:
    state = ls.doc(params.text_document.uri)
    span = definition(state, ls.positions(state.text).offset(params.position))
    if span is None:
        return None
    uri = ls._uri_of(span, state)
    return T.Location(uri, ls._range(span)) if uri is not None else None


@server.feature(T.TEXT_DOCUMENT_DOCUMENT_SYMBOL)
def on_document_symbol(ls: MSLServer, params: T.DocumentSymbolParams) -> list[T.DocumentSymbol]:
    state = ls.doc(params.text_document.uri)
    module = state.current_module()
    if module is None:
        return []
    pos = ls.positions(state.text)
    return [_symbol(s, pos) for s in document_symbols(module)]


def _symbol(s: Symbol, pos: _Positions) -> T.DocumentSymbol:
    return T.DocumentSymbol(
        name=s.name, kind=_SYMBOL_KIND[s.kind], detail=s.detail or None, range=pos.range(s.span.start, s.span.end),
        selection_range=pos.range(s.name_span.start, s.name_span.end),
        children=[_symbol(c, pos) for c in s.children] or None,
    )


@server.feature(T.TEXT_DOCUMENT_FORMATTING)
def on_formatting(ls: MSLServer, params: T.DocumentFormattingParams) -> list[T.TextEdit] | None:
    state = ls.doc(params.text_document.uri)
    try:
        formatted = format_text(state.text, state.path)
    except FormatError:
        return None  # a file with syntax errors is never formatted; its diagnostics say why
    if formatted == state.text:
        return []
    pos = ls.positions(state.text)
    return [T.TextEdit(pos.range(0, len(state.text)), formatted)]


# ---------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="metagenc lsp", description="Run the MSL language server on stdio.")
    ap.add_argument("--log-file", help="write the server's log here (the protocol owns stdout)")
    ap.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = ap.parse_args(argv)
    if args.log_file:
        logging.basicConfig(filename=args.log_file, level=logging.DEBUG if args.verbose else logging.INFO)
    server.start_io()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
