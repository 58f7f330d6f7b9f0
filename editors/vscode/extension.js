// The VS Code side of MSL support: the grammar and language configuration are declared in
// package.json; this file only starts the language server, `metagenc lsp`, for .msl files.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("msl");
  const command = config.get("server.command", "metagenc");
  if (!command) {
    return; // highlighting only
  }
  const args = config.get("server.args", ["lsp"]);
  const server = { command, args };
  client = new LanguageClient(
    "msl",
    "MSL language server",
    { run: server, debug: server },
    { documentSelector: [{ scheme: "file", language: "msl" }, { scheme: "untitled", language: "msl" }] },
  );
  context.subscriptions.push(client);
  client.start().catch((err) => {
    vscode.window.showWarningMessage(
      `MSL: could not start \`${command} ${args.join(" ")}\` (${err.message}). ` +
        "Install metagenc (pip install -e .[editor]) or set msl.server.command.",
    );
  });
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
