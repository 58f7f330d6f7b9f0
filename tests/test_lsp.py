"""`metagenc lsp` end to end: the server runs in a subprocess and pytest-lsp drives it as a real client."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_lsp
from conftest import ROOT
from lsprotocol import types as T
from pygls.uris import from_fs_path, to_fs_path
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

from metagen_compiler.syntax.fmt import format_text

pytestmark = pytest.mark.asyncio(loop_scope="module")

GPT2 = ROOT / "examples" / "gpt2.msl"
TINY = ROOT / "examples" / "tiny_story.msl"
PARALLEL = ROOT / "examples" / "parallel_decoder.msl"
BROKEN = """\
msl 1
import std.presets

model gpt2 {
  modality text -> text
  task genration
  objective autoregressive
  constraints { params <= 100M; latency < 50ms on consumer_gpu }
  architecture gpt2
}
"""


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "metagen_compiler.cli", "lsp"]))
async def client(lsp_client: LanguageClient) -> None:  # type: ignore[misc]
    await lsp_client.initialize_session(T.InitializeParams(
        capabilities=client_capabilities("visual-studio-code"), root_uri=from_fs_path(str(ROOT))))
    yield
    await lsp_client.shutdown_session()


async def open_doc(client: LanguageClient, path: Path, text: str | None = None) -> str:
    """Open a document and wait until the server has published its diagnostics."""
    uri = from_fs_path(str(path))
    assert uri is not None
    client.diagnostics.pop(uri, None)
    client.text_document_did_open(T.DidOpenTextDocumentParams(
        T.TextDocumentItem(uri, "msl", 1, path.read_text() if text is None else text)))
    while uri not in client.diagnostics:
        await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    return uri


def at(path: Path, needle: str, delta: int = 0, text: str | None = None) -> T.Position:
    """The position of `needle` (plus `delta` characters) in a file."""
    src = path.read_text() if text is None else text
    off = src.index(needle) + delta
    return T.Position(src.count("\n", 0, off), off - src.rfind("\n", 0, off) - 1)


def cli_diagnostics(path: Path) -> list[dict[str, object]]:
    r = subprocess.run([sys.executable, "-m", "metagen_compiler.cli", str(path), "--check",
                        "--diagnostics-format", "json"], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1
    return json.loads(r.stderr)  # type: ignore[no-any-return]


async def test_diagnostics_are_the_clis_and_follow_edits(client: LanguageClient, tmp_path: Path) -> None:
    path = tmp_path / "broken.msl"
    path.write_text(BROKEN)
    uri = await open_doc(client, path)
    got = client.diagnostics[uri]
    want = cli_diagnostics(path)
    assert [(d.code, d.message.split("\n")[0]) for d in got] == [(w["code"], w["message"]) for w in want]
    for d, w in zip(got, want):
        span = w["span"]
        assert isinstance(span, dict)
        assert (d.range.start.line + 1, d.range.start.character + 1) == (span["line"], span["col"])
        assert (d.range.end.line + 1, d.range.end.character + 1) == (span["end_line"], span["end_col"])
        assert d.severity == (T.DiagnosticSeverity.Error if w["severity"] == "error" else T.DiagnosticSeverity.Warning)
        if w["hint"]:
            assert d.message.endswith(f"\nhelp: {w['hint']}")
    assert any(d.code == "E203" and "did you mean `generation`" in d.message for d in got)

    # typing the fix: the diagnostics follow
    del client.diagnostics[uri]
    client.text_document_did_change(T.DidChangeTextDocumentParams(
        T.VersionedTextDocumentIdentifier(version=2, uri=uri),
        [T.TextDocumentContentChangePartial(
            range=T.Range(at(path, "genration"), at(path, "genration", len("genration"))), text="generation")]))
    while uri not in client.diagnostics:
        await client.wait_for_notification(T.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    assert [d.code for d in client.diagnostics[uri]] == ["E403"]  # only the budget is left: 124M > 100M


async def test_hover_on_a_block_shows_its_signature_and_docs(client: LanguageClient) -> None:
    uri = await open_doc(client, PARALLEL)
    h = await client.text_document_hover_async(T.HoverParams(
        T.TextDocumentIdentifier(uri), at(PARALLEL, "self_attention(d_model", 3)))
    assert h is not None and isinstance(h.contents, T.MarkupContent)
    text = h.contents.value
    assert "block self_attention(d_model: int, heads: int, kv_heads: int = heads, causal: bool = false" in text
    assert "Multi-head self-attention." in text and "`std.layers`" in text
    assert h.range == T.Range(at(PARALLEL, "self_attention(d_model"), at(PARALLEL, "(d_model, heads, causal"))


async def test_hover_on_a_model_shows_parameters_flops_and_constraints(client: LanguageClient) -> None:
    uri = await open_doc(client, GPT2)
    h = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), at(GPT2, "gpt2 {", 1)))
    assert h is not None and isinstance(h.contents, T.MarkupContent)
    text = h.contents.value
    assert "- parameters: **124,439,808** (124.4M, exact)" in text
    assert "- FLOPs per forward pass: **291.6G** (291,648,307,200; B=1, T=1024)" in text
    assert "- ✓ `params <= 125M` ok: 124,439,808" in text
    assert "- ✓ `latency < 50ms on consumer_gpu` ok (estimate)" in text


async def test_hover_on_a_solved_dimension(client: LanguageClient) -> None:
    uri = await open_doc(client, TINY)
    h = await client.text_document_hover_async(T.HoverParams(T.TextDocumentIdentifier(uri), at(TINY, "d_model = ?")))
    assert h is not None and isinstance(h.contents, T.MarkupContent)
    assert "d_model: int = ? multiple_of 64" in h.contents.value and "compiled value: `384`" in h.contents.value


async def completion(client: LanguageClient, uri: str, pos: T.Position) -> dict[str, T.CompletionItem]:
    result = await client.text_document_completion_async(T.CompletionParams(T.TextDocumentIdentifier(uri), pos))
    assert isinstance(result, T.CompletionList)
    return {i.label: i for i in result.items}


async def test_completion(client: LanguageClient, tmp_path: Path) -> None:
    uri = await open_doc(client, TINY)
    # keywords, at the start of a model statement
    items = await completion(client, uri, at(TINY, "  task generation", 2))
    assert {"modality", "task", "objective", "constraints", "architecture", "metadata"} <= set(items)
    assert items["task"].kind == T.CompletionItemKind.Keyword
    # enum values of the family parameter being set
    items = await completion(client, uri, at(TINY, "position = rope", len("position = ")))
    assert set(items) == {"learned", "rope"}
    # units after a number
    items = await completion(client, uri, at(TINY, "params <= 30M", len("params <= 30")))
    assert set(items) == {"k", "K", "M", "B", "T", "G"} and items["M"].detail == "count ×10^6"  # a count: params
    # blocks, with their parameters, after `>>`; the imported names come qualified and bare
    uri = await open_doc(client, PARALLEL)
    items = await completion(client, uri, at(PARALLEL, "h >> mlp: gelu_mlp", len("h >> ")))
    sa = items["self_attention"]
    assert sa.kind == T.CompletionItemKind.Function
    assert sa.detail is not None and sa.detail.startswith("block self_attention(d_model: int, heads: int")
    assert sa.insert_text_format == T.InsertTextFormat.Snippet
    assert isinstance(sa.text_edit, T.TextEdit) and sa.text_edit.new_text == "self_attention(${1:d_model}, ${2:heads})$0"
    assert {"layers.self_attention", "transformer.decoder_block", "linear", "layernorm"} <= set(items)
    # modalities, tasks, devices
    items = await completion(client, uri, at(PARALLEL, "modality text -> text", len("modality text -> ")))
    assert {"label", "embedding", "text"} <= set(items)
    # a document being typed, which does not parse: completion still knows the imports
    text = TINY.read_text().replace("latency < 20ms on consumer_gpu", "latency < 20ms on ")
    typing = tmp_path / "typing.msl"
    uri = await open_doc(client, typing, text)
    items = await completion(client, uri, at(typing, "20ms on ", len("20ms on "), text))
    assert {"consumer_gpu", "edge", "datacenter_gpu", "cpu"} <= set(items)


async def test_definition_goes_into_the_stdlib(client: LanguageClient) -> None:
    uri = await open_doc(client, GPT2)
    loc = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(uri), at(GPT2, "architecture gpt2", len("architecture g"))))
    assert isinstance(loc, T.Location)
    path = Path(to_fs_path(loc.uri) or "")
    assert path.name == "presets.msl" and path.is_file()
    line = path.read_text().split("\n")[loc.range.start.line]
    assert line[loc.range.start.character:loc.range.end.character] == "gpt2" and line.startswith("preset gpt2")
    # and from a block call in a user file into the stdlib's layers
    uri = await open_doc(client, PARALLEL)
    loc = await client.text_document_definition_async(T.DefinitionParams(
        T.TextDocumentIdentifier(uri), at(PARALLEL, "gelu_mlp(d_model)", 2)))
    assert isinstance(loc, T.Location) and loc.uri.endswith("stdlib/layers.msl")


async def test_document_symbols(client: LanguageClient) -> None:
    uri = await open_doc(client, PARALLEL)
    syms = await client.text_document_document_symbol_async(T.DocumentSymbolParams(T.TextDocumentIdentifier(uri)))
    assert syms is not None
    top = [(s.name, s.kind) for s in syms if isinstance(s, T.DocumentSymbol)]
    assert top == [("std.layers", T.SymbolKind.Namespace), ("std.transformer", T.SymbolKind.Namespace),
                   ("parallel_block", T.SymbolKind.Function), ("parallel_stack", T.SymbolKind.Function),
                   ("parallel_decoder", T.SymbolKind.Class), ("parallel_lm", T.SymbolKind.Module)]
    model = syms[-1]
    assert isinstance(model, T.DocumentSymbol) and model.children is not None
    assert [c.name for c in model.children] == ["params", "context", "architecture parallel_decoder"]


async def test_formatting(client: LanguageClient, tmp_path: Path) -> None:
    messy = "model m{task generation;objective autoregressive\n  architecture gpt2}\n"
    uri = await open_doc(client, tmp_path / "messy.msl", messy)
    opts = T.FormattingOptions(tab_size=2, insert_spaces=True)
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(T.TextDocumentIdentifier(uri), opts))
    assert edits is not None and len(edits) == 1
    assert edits[0].new_text == format_text(messy) == (
        "model m {\n  task generation; objective autoregressive\n  architecture gpt2\n}\n")
    assert edits[0].range == T.Range(T.Position(0, 0), T.Position(2, 0))
    # a file with syntax errors is left alone
    uri = await open_doc(client, tmp_path / "bad.msl", "model m { task = }\n")
    edits = await client.text_document_formatting_async(T.DocumentFormattingParams(T.TextDocumentIdentifier(uri), opts))
    assert not edits


async def test_a_library_module_is_checked_as_a_library(client: LanguageClient) -> None:
    uri = await open_doc(client, ROOT / "stdlib" / "layers.msl")
    assert list(client.diagnostics[uri]) == []  # the CLI's E107 "this file defines no model" is not shown
