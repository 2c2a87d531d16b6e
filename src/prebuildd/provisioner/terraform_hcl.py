"""A small reader of Terraform's configuration language, just enough for a root module's ``variable`` blocks.

Why our own: Terraform has no command that lists a configuration's variables with their types (the library
that does, ``terraform-config-inspect``, is Go; ``terraform show -json`` of a plan needs a value for every
variable and leaves types out), and an HCL parser from PyPI would be a dependency for a dozen lines of
grammar. Terraform stays the authority on syntax: an import runs ``terraform validate`` before this reader,
so the reader only ever sees valid files. It still tokenizes the whole language (quoted templates with
nested ``${...}``, heredocs, comments) so nothing inside an expression is mistaken for structure; it finds the
top-level ``variable`` blocks, keeps each attribute's tokens, and evaluates only literal values, which is what
Terraform allows as a variable's default. JSON files (``*.tf.json``) are read with :mod:`json`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# --- tokens ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    kind: str
    """``ident``, ``string``, ``heredoc``, ``number``, ``punct`` or ``newline``."""
    text: str
    """The source text (for strings: the whole quoted string)."""
    line: int
    value: Any = None
    """Strings and heredocs: the decoded text, or None when it holds a template sequence; numbers: the value."""


class HclError(ValueError):
    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file, self.line, self.reason = file, line, reason


_IDENT = re.compile(r"[^\W\d][\w-]*")
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_HEREDOC = re.compile(r"<<(-?)([^\W\d][\w-]*)[ \t]*\r?\n")
_OPERATORS = ("...", "==", "!=", "<=", ">=", "&&", "||", "=>", "::")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


class _Lexer:
    def __init__(self, text: str, file: str) -> None:
        self.text, self.file = text, file
        self.pos, self.line = 0, 1
        self.tokens: list[Token] = []

    def error(self, reason: str) -> HclError:
        return HclError(self.file, self.line, reason)

    def run(self) -> list[Token]:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c == "\n":
                self.tokens.append(Token("newline", "\n", self.line))
                self.line += 1
                self.pos += 1
            elif c in " \t\r\ufeff":
                self.pos += 1
            elif c == "#" or text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated /* comment")
                self.line += text.count("\n", self.pos, end)
                self.pos = end + 2
            elif c == '"':
                line, start = self.line, self.pos
                value = self.string()
                self.tokens.append(Token("string", text[start : self.pos], line, value))
            elif text.startswith("<<", self.pos) and (m := _HEREDOC.match(text, self.pos)):
                line = self.line
                value = self.heredoc(m)
                self.tokens.append(Token("heredoc", text[m.start() : self.pos], line, value))
            elif m := _NUMBER.match(text, self.pos):
                number = float(m.group()) if any(ch in m.group() for ch in ".eE") else int(m.group())
                self.tokens.append(Token("number", m.group(), self.line, number))
                self.pos = m.end()
            elif m := _IDENT.match(text, self.pos):
                self.tokens.append(Token("ident", m.group(), self.line))
                self.pos = m.end()
            else:
                op = next((op for op in _OPERATORS if text.startswith(op, self.pos)), c)
                self.tokens.append(Token("punct", op, self.line))
                self.pos += len(op)
        return self.tokens

    def string(self) -> str | None:
        """A quoted template starting at ``pos``: its decoded text, or None when it has template sequences."""
        text = self.text
        self.pos += 1
        out: list[str] = []
        literal = True
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.error("unterminated string")
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out) if literal else None
            if c == "\\":
                out.append(self.escape())
            elif text.startswith(("$${", "%%{"), self.pos):
                out.append(text[self.pos + 1 : self.pos + 3])
                self.pos += 3
            elif text.startswith(("${", "%{"), self.pos):
                literal = False
                self.skip_template_sequence()
            else:
                out.append(c)
                self.pos += 1

    def escape(self) -> str:
        text = self.text
        kind = text[self.pos + 1 : self.pos + 2]
        if kind in _ESCAPES:
            self.pos += 2
            return _ESCAPES[kind]
        size = {"u": 4, "U": 8}.get(kind)
        digits = text[self.pos + 2 : self.pos + 2 + size] if size else ""
        if size is None or len(digits) != size or not all(ch in "0123456789abcdefABCDEF" for ch in digits):
            raise self.error(f"invalid escape sequence \\{kind}")
        self.pos += 2 + size
        return chr(int(digits, 16))

    def skip_template_sequence(self) -> None:
        """Skip ``${ ... }`` or ``%{ ... }``, nested strings and braces included."""
        text = self.text
        self.pos += 2
        depth = 1
        while depth:
            if self.pos >= len(text):
                raise self.error("unterminated template sequence")
            c = text[self.pos]
            if c == '"':
                self.string()
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif c == "\n":
                self.line += 1
            self.pos += 1

    def heredoc(self, m: re.Match[str]) -> str | None:
        text = self.text
        flush, marker = m.group(1) == "-", m.group(2)
        opened = self.line
        self.pos = m.end()
        self.line += 1
        lines: list[str] = []
        while True:
            if self.pos >= len(text):
                raise HclError(self.file, opened, f"heredoc {marker} is never closed")
            end = text.find("\n", self.pos)
            end = len(text) if end < 0 else end
            line = text[self.pos : end]
            self.pos = end
            if line.strip() == marker:
                break
            lines.append(line.removesuffix("\r") + "\n")
            self.pos = min(end + 1, len(text))
            self.line += 1
        body = "".join(lines)
        if re.search(r"(?<![$%])[$%]\{", body.replace("$${", "").replace("%%{", "")):
            return None
        if flush:
            indents = [len(x) - len(x.lstrip(" \t")) for x in lines if x.strip()]
            cut = min(indents, default=0)
            body = "".join(x[cut:] if x.strip() else x.lstrip(" \t") for x in lines)
        return body.replace("$${", "${").replace("%%{", "%{")


def tokenize(text: str, file: str = "<text>") -> list[Token]:
    return _Lexer(text, file).run()


# --- structure ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribute:
    name: str
    tokens: tuple[Token, ...]
    line: int


@dataclass(frozen=True)
class Block:
    type: str
    labels: tuple[str, ...]
    body: tuple[Attribute | Block, ...]
    line: int

    def attribute(self, name: str) -> Attribute | None:
        return next((a for a in self.body if isinstance(a, Attribute) and a.name == name), None)

    def blocks(self, type_: str) -> list[Block]:
        return [b for b in self.body if isinstance(b, Block) and b.type == type_]


_OPEN = {"(": ")", "[": "]", "{": "}"}


class _Parser:
    def __init__(self, tokens: Sequence[Token], file: str) -> None:
        self.tokens, self.file, self.pos = tokens, file, 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def error(self, reason: str) -> HclError:
        token = self.peek()
        line = token.line if token else (self.tokens[-1].line if self.tokens else 1)
        return HclError(self.file, line, reason)

    def body(self, nested: bool) -> tuple[Attribute | Block, ...]:
        items: list[Attribute | Block] = []
        while True:
            token = self.peek()
            if token is None:
                if nested:
                    raise self.error("block is never closed")
                return tuple(items)
            if token.kind == "newline":
                self.pos += 1
            elif token.kind == "punct" and token.text == "}" and nested:
                self.pos += 1
                return tuple(items)
            elif token.kind == "ident":
                items.append(self.item(token))
            else:
                raise self.error(f"unexpected {token.text!r}")

    def item(self, name: Token) -> Attribute | Block:
        self.pos += 1
        token = self.peek()
        if token is not None and token.kind == "punct" and token.text == "=":
            self.pos += 1
            return Attribute(name.text, self.expression(), name.line)
        labels: list[str] = []
        while (token := self.peek()) is not None and token.kind in ("string", "ident"):
            labels.append(token.value if token.kind == "string" and token.value is not None else token.text)
            self.pos += 1
        if token is None or token.text != "{":
            raise self.error(f"expected '=' or a block after {name.text!r}")
        self.pos += 1
        return Block(name.text, tuple(labels), self.body(nested=True), name.line)

    def expression(self) -> tuple[Token, ...]:
        """Tokens up to the end of the line, or to the ``}`` closing a one-line block."""
        start = self.pos
        closers: list[str] = []
        while (token := self.peek()) is not None:
            if not closers and (token.kind == "newline" or token.text == "}"):
                break
            if token.kind == "punct" and token.text in _OPEN:
                closers.append(_OPEN[token.text])
            elif closers and token.kind == "punct" and token.text == closers[-1]:
                closers.pop()
            self.pos += 1
        return tuple(self.tokens[start : self.pos])


def parse_body(text: str, file: str = "<text>") -> tuple[Attribute | Block, ...]:
    tokens = tokenize(text, file)
    return _Parser(tokens, file).body(nested=False)


# --- literal values ----------------------------------------------------------------------------------


class NotLiteral(ValueError):
    """The expression computes its value (references, functions, templates): only Terraform can evaluate it."""


def significant(tokens: Iterable[Token]) -> list[Token]:
    return [t for t in tokens if t.kind != "newline"]


def literal_value(tokens: Sequence[Token]) -> Any:
    """The value of a literal expression (strings, numbers, bools, null, tuples, objects); NotLiteral else."""
    items = significant(tokens)
    value, end = _literal(items, 0)
    if end != len(items):
        raise NotLiteral("not a literal")
    return value


def _literal(items: Sequence[Token], pos: int) -> tuple[Any, int]:
    if pos >= len(items):
        raise NotLiteral("missing value")
    token = items[pos]
    if token.kind in ("string", "heredoc"):
        if token.value is None:
            raise NotLiteral("template")
        return token.value, pos + 1
    if token.kind == "number":
        return token.value, pos + 1
    if (
        token.kind == "punct"
        and token.text == "-"
        and pos + 1 < len(items)
        and items[pos + 1].kind == "number"
    ):
        return -items[pos + 1].value, pos + 2
    if token.kind == "ident" and token.text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[token.text], pos + 1
    if token.text == "[":
        return _sequence(items, pos + 1)
    if token.text == "{":
        return _mapping(items, pos + 1)
    raise NotLiteral(f"not a literal: {token.text}")


def _sequence(items: Sequence[Token], pos: int) -> tuple[list[Any], int]:
    values: list[Any] = []
    while True:
        if pos < len(items) and items[pos].text == "]":
            return values, pos + 1
        value, pos = _literal(items, pos)
        values.append(value)
        if pos < len(items) and items[pos].text == ",":
            pos += 1
        elif pos >= len(items) or items[pos].text != "]":
            raise NotLiteral("not a literal tuple")


def _mapping(items: Sequence[Token], pos: int) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    while True:
        if pos < len(items) and items[pos].text == "}":
            return values, pos + 1
        if pos >= len(items):
            raise NotLiteral("not a literal object")
        key = items[pos]
        if key.kind == "ident":
            name = key.text
        elif key.kind == "string" and key.value is not None:
            name = key.value
        else:
            raise NotLiteral("computed object key")
        if pos + 1 >= len(items) or items[pos + 1].text not in ("=", ":"):
            raise NotLiteral("not a literal object")
        values[name], pos = _literal(items, pos + 2)
        if pos < len(items) and items[pos].text == ",":
            pos += 1


def expression_text(tokens: Sequence[Token]) -> str:
    """The tokens' text with layout removed (for comparing type expressions: ``list( string )`` → ``list(string)``)."""
    return "".join(t.text for t in significant(tokens))


# --- variables ---------------------------------------------------------------------------------------


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


class _Unreadable:
    def __repr__(self) -> str:
        return "UNREADABLE"


NO_DEFAULT: Any = _Unset()
"""The variable has no default: a value is required."""
UNREADABLE: Any = _Unreadable()
"""The variable has a default this reader cannot evaluate; Terraform uses it when no value is passed."""


@dataclass(frozen=True)
class Validation:
    condition: tuple[Token, ...]
    error_message: str | None = None


@dataclass(frozen=True)
class TerraformVariable:
    name: str
    file: str
    line: int
    type: str | None = None
    """The type expression without layout (``list(string)``); None when the block has no ``type``."""
    default: Any = NO_DEFAULT
    description: str = ""
    sensitive: bool = False
    validations: tuple[Validation, ...] = field(default_factory=tuple)


def _string_or_none(tokens: Sequence[Token]) -> str | None:
    try:
        value = literal_value(tokens)
    except NotLiteral:
        return None
    return value if isinstance(value, str) else None


def _fields_of_block(block: Block) -> dict[str, Any]:
    """The attributes a ``variable`` block sets (only those, so override files can merge)."""
    fields: dict[str, Any] = {}
    if (a := block.attribute("type")) is not None:
        fields["type"] = expression_text(a.tokens)
    if (a := block.attribute("default")) is not None:
        try:
            fields["default"] = literal_value(a.tokens)
        except NotLiteral:
            fields["default"] = UNREADABLE
    if (a := block.attribute("description")) is not None:
        fields["description"] = _string_or_none(a.tokens) or ""
    if (a := block.attribute("sensitive")) is not None:
        try:
            fields["sensitive"] = literal_value(a.tokens) is True
        except NotLiteral:
            fields["sensitive"] = True
    checks = []
    for v in block.blocks("validation"):
        condition = v.attribute("condition")
        message = v.attribute("error_message")
        if condition is not None:
            checks.append(Validation(condition.tokens, _string_or_none(message.tokens) if message else None))
    if checks:
        fields["validations"] = tuple(checks)
    return fields


def _variables_of_hcl(text: str, file: str) -> list[tuple[str, int, dict[str, Any]]]:
    found = []
    for item in parse_body(text, file):
        if isinstance(item, Block) and item.type == "variable" and len(item.labels) == 1:
            found.append((item.labels[0], item.line, _fields_of_block(item)))
    return found


def _json_template_tokens(value: object, file: str) -> tuple[Token, ...]:
    """A JSON-syntax expression: a string holding ``${ ... }`` is that expression."""
    if not isinstance(value, str):
        return ()
    inner = value.strip()
    if inner.startswith("${") and inner.endswith("}"):
        inner = inner[2:-1]
    return tuple(tokenize(inner, file))


def _variables_of_json(text: str, file: str) -> list[tuple[str, int, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HclError(file, exc.lineno, f"invalid JSON: {exc.msg}") from None
    declared = data.get("variable") if isinstance(data, dict) else None
    groups = declared if isinstance(declared, list) else [declared] if isinstance(declared, dict) else []
    found = []
    for group in groups:
        if not isinstance(group, dict):
            continue
        for name, body in group.items():
            if not isinstance(body, dict):
                body = {}
            fields: dict[str, Any] = {}
            if isinstance(body.get("type"), str):
                fields["type"] = expression_text(_json_template_tokens(body["type"], file))
            if "default" in body:
                fields["default"] = body["default"]
            if isinstance(body.get("description"), str):
                fields["description"] = body["description"]
            if "sensitive" in body:
                fields["sensitive"] = body["sensitive"] is True
            raw_checks = body.get("validation")
            checks = raw_checks if isinstance(raw_checks, list) else [raw_checks] if raw_checks else []
            validations = tuple(
                Validation(
                    _json_template_tokens(c.get("condition"), file),
                    c["error_message"] if isinstance(c.get("error_message"), str) else None,
                )
                for c in checks
                if isinstance(c, dict)
            )
            if validations:
                fields["validations"] = validations
            found.append((str(name), 1, fields))
    return found


def _is_override(name: str) -> bool:
    stem = name.removesuffix(".json").removesuffix(".tf")
    return stem == "override" or stem.endswith("_override")


def configuration_files(directory: Path) -> list[Path]:
    """The root module's files in the order Terraform reads them: primary files by name, then overrides."""
    files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith((".tf", ".tf.json"))]
    return sorted(files, key=lambda p: (_is_override(p.name), p.name))


def read_variables(directory: Path) -> list[TerraformVariable]:
    """The ``variable`` blocks of the root module in ``directory``, in declaration order; HclError."""
    merged: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for path in configuration_files(directory):
        text = path.read_text(encoding="utf-8-sig", errors="replace")
        reader = _variables_of_json if path.name.endswith(".json") else _variables_of_hcl
        for name, line, fields in reader(text, path.name):
            if name in merged:
                if _is_override(path.name):
                    merged[name][2].update(fields)
                continue
            merged[name] = (path.name, line, fields)
    return [
        TerraformVariable(name=name, file=file, line=line, **fields)
        for name, (file, line, fields) in merged.items()
    ]
