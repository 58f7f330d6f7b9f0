#!/usr/bin/env node
// Tokenise MSL files with the real TextMate engine (vscode-textmate + vscode-oniguruma, as VS Code
// does) and print, as JSON, each file's lines as lists of [text, scopes] pairs; the `source.msl`
// root scope is left out. Usage: node test/tokenize.js FILE...  (tests/test_textmate.py runs it)
"use strict";

const fs = require("fs");
const path = require("path");
const vsctm = require("vscode-textmate");
const oniguruma = require("vscode-oniguruma");

const GRAMMAR = path.join(__dirname, "..", "syntaxes", "msl.tmLanguage.json");

async function loadGrammar() {
  const wasm = fs.readFileSync(require.resolve("vscode-oniguruma/release/onig.wasm"));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (s) => new oniguruma.OnigString(s),
    }),
    loadGrammar: async (scopeName) =>
      scopeName === "source.msl" ? vsctm.parseRawGrammar(fs.readFileSync(GRAMMAR, "utf8"), GRAMMAR) : null,
  });
  return registry.loadGrammar("source.msl");
}

function tokenize(grammar, text) {
  let state = vsctm.INITIAL;
  const out = [];
  for (const line of text.split(/\r?\n/)) {
    const r = grammar.tokenizeLine(line, state);
    out.push(
      r.tokens
        .map((t) => [line.slice(t.startIndex, t.endIndex), t.scopes.filter((s) => s !== "source.msl")])
        .filter(([text, scopes]) => text.length > 0),
    );
    state = r.ruleStack;
  }
  if (out.length && out[out.length - 1].length === 0) out.pop();
  return out;
}

async function main() {
  const files = process.argv.slice(2);
  if (!files.length) {
    console.error("usage: node test/tokenize.js FILE...");
    process.exit(2);
  }
  const grammar = await loadGrammar();
  const result = {};
  for (const f of files) result[f] = tokenize(grammar, fs.readFileSync(f, "utf8"));
  process.stdout.write(JSON.stringify(result) + "\n");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
