"""Syntax: the Lark parser and its error messages, the AST, the formatter, the YAML front end."""
