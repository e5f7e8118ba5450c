"""Stage 1: source text -> `SourceFile` (the syntax tree) and syntax diagnostics.

Lark parses with LALR and a contextual lexer (grammar/agent.lark); a Transformer
builds the typed, frozen nodes of nodes.py with a span on every node. Settings inside
a block may come in any order; the builder collects them and reports repeats.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedInput
from lark.lexer import PatternStr
from lark.tree import Meta, Tree

from twelvefold.grammar import grammar_text
from twelvefold.runtime.usercache import keep_to_self, safe_cached_file, user_cache_dir

from . import nodes as n
from .diagnostics import Diagnostic, Span, error, normalize_newlines
from .limits import (
    MAX_DURATION_SECONDS,
    MAX_NAME_CHARS,
    MAX_NESTING,
    MAX_NUMBER_DIGITS,
    MAX_STRING_CHARS,
)
from .syntax_errors import describe_syntax_error


@cache
def _lark() -> Lark:
    tables = _tables_file()
    lark = Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        strict=True,
        propagate_positions=True,
        maybe_placeholders=True,
        # Building the LALR tables takes most of a second; a file keeps them for later
        # processes. It is a pickle, which runs code as it loads, so it lives only in the
        # user's own cache folder, never at Lark's default (a predictable name in the
        # shared temporary folder, where another local user can plant one).
        cache=tables or False,
    )
    if tables is not None:  # written as the umask allows: closed, so later starts use it
        keep_to_self(Path(tables))
    return lark


def _tables_file() -> str | None:
    """Where the parser's tables are kept between processes: a file named for the grammar,
    Lark and Python in the user's cache folder (runtime/usercache.py); None (build them
    each time) when that folder or the file in it is not the user's alone."""
    import lark

    folder = user_cache_dir()
    if folder is None:
        return None
    key = f"{grammar_text()}\n{lark.__version__}\n{sys.version_info[:2]}"
    path = folder / f"parser-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pickle"
    return str(path) if safe_cached_file(path) else None


def parse(text: str, path: str = "<agent>") -> tuple[n.SourceFile, list[Diagnostic]]:
    """Parse one .agent file. On a syntax error the file is empty and one diagnostic says why."""
    empty = n.SourceFile(path, (), (), ())
    text = normalize_newlines(text)  # Lark counts "\n" only; diagnostics.LINE_BREAK
    try:
        tree = _lark().parse(text)
    except UnexpectedInput as exc:
        return empty, [describe_syntax_error(exc, text, path, _keyword_text)]
    too_deep = _too_deep(tree, path)
    if too_deep is not None:
        return empty, [too_deep]
    builder = _Builder(path)
    source = builder.transform(tree)
    assert isinstance(source, n.SourceFile)
    return source, builder.diagnostics


_RAW_CONTROL = re.compile("[\x00-\x1f]")
"""The control characters JSON's strings (which .agent strings are) refuse written as they
are: invisible in an editor, so each is written as an escape (E010)."""
_SHORT_ESCAPES = {"\t": "\\t", "\b": "\\b", "\f": "\\f", "\r": "\\r"}


def _raw_control(path: str, token: Token, found: re.Match[str]) -> Diagnostic:
    """E010 at the first control character written raw in a string."""
    char = found.group(0)
    escape = _SHORT_ESCAPES.get(char, f"\\u{ord(char):04x}")
    line, column = token.line or 1, (token.column or 1) + found.start()
    named = "a tab" if char == "\t" else f"U+{ord(char):04X}"
    return error(
        "E010",
        f"a control character ({named}) written as it is in a string",
        path,
        Span(line, column, line, column + 1),
        label=named,
        help="remove it; no name, path or text needs NUL"
        if char == "\0"
        else f"write it as the escape `{escape}`"
        + (", or remove it" if char not in _SHORT_ESCAPES else ""),
    )


_NESTING_RULES = frozenset({"negation", "list_type", "map_type"})
# Lone surrogates decode from `\\ud800` escapes; NUL ends a path at the operating system.
_FORBIDDEN_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _too_deep(tree: Tree[Token], path: str) -> Diagnostic | None:
    """E009 at the first construct nested more than MAX_NESTING deep, found without
    recursion: the builder (a Lark Transformer) recurses once per level, so it must not
    see a tree deeper than Python's stack."""
    stack: list[tuple[Tree[Token] | Token, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, Tree):
            continue
        depth += node.data in _NESTING_RULES
        if depth > MAX_NESTING:
            negation = node.data == "negation"
            return error(
                "E009",
                f"{'`not`' if negation else '`list[` and `map[`'} nested more than "
                f"{MAX_NESTING} deep",
                path,
                _meta_span(node.meta),
                label="too deep",
                help="`not not x` is `x`: drop pairs of `not`"
                if negation
                else "name an inner part: declare a `type` for it and use its name",
            )
        stack.extend((child, depth) for child in node.children)
    return None


def _keyword_text(terminal: str) -> str | None:
    """`NEXT` -> `next`: the literal text of an anonymous keyword terminal, if it is one."""
    for term in _lark().terminals:
        if term.name == terminal and isinstance(term.pattern, PatternStr):
            return str(term.pattern.value)
    return None


def keywords_beside_names() -> frozenset[str]:
    """Keywords the LALR tables accept in a parser state that also accepts a NAME: the
    only places where the contextual lexer reads such a word as the keyword, not a name."""
    lark = _lark()
    keywords = {
        t.name: str(t.pattern.value)
        for t in lark.terminals
        if isinstance(t.pattern, PatternStr) and str(t.pattern.value).isidentifier()
    }
    states = lark.parser.parser.parser.parse_table.states
    return frozenset(
        keywords[terminal]
        for actions in states.values()
        if "NAME" in actions
        for terminal in actions
        if terminal in keywords
    )


# ---- spans -------------------------------------------------------------------


def _token_span(token: Token) -> Span:
    return Span(
        token.line or 1,
        token.column or 1,
        token.end_line or token.line or 1,
        token.end_column or (token.column or 1) + len(token),
    )


def _meta_span(meta: Meta) -> Span:
    if getattr(meta, "empty", True):
        return Span(1, 1, 1, 1)
    return Span(meta.line, meta.column, meta.end_line, meta.end_column)


# ---- the builder ---------------------------------------------------------------

T = TypeVar("T")
_Setting = tuple[str, Any, Span]
_meta_args = v_args(meta=True)


class _Builder(Transformer[Token, Any]):
    """Builds nodes bottom-up; settings are `(key, value, span)` until their block collects them."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.file = path
        self.diagnostics: list[Diagnostic] = []

    # -- leaves --------------------------------------------------------------

    def NAME(self, token: Token) -> n.Name:
        if len(token) > MAX_NAME_CHARS:
            self._over_limit(
                token,
                f"this name is {len(token):,} characters long; the limit is {MAX_NAME_CHARS}",
                "use a shorter name",
            )
        return n.Name(str(token), _token_span(token))

    def _over_limit(self, token: Token, message: str, fix: str) -> None:
        span = _token_span(token)
        self.diagnostics.append(
            error("E009", message, self.file, span, label="over a limit", help=fix)
        )

    def STRING(self, token: Token) -> n.Text:
        span = _token_span(token)
        raw = _RAW_CONTROL.search(str(token))
        if raw is not None:
            self.diagnostics.append(_raw_control(self.file, token, raw))
            return n.Text(str(token)[1:-1], span)
        try:
            value = json.loads(str(token))
        except json.JSONDecodeError:
            bad = re.search(r"\\[^\"\\/bfnrtu]|\\u(?![0-9a-fA-F]{4})", str(token))
            self.diagnostics.append(
                error(
                    "E004",
                    "invalid escape in a string",
                    self.file,
                    span,
                    label=f"`{bad.group(0)}` is not an escape" if bad else "",
                    help='the escapes are \\" \\\\ \\n \\t \\r \\/ \\b \\f and \\uXXXX; '
                    "write a backslash as \\\\",
                )
            )
            value = str(token)[1:-1]
        if len(value) > MAX_STRING_CHARS:
            self._over_limit(
                token,
                f"this string is {len(value):,} characters long; the limit is {MAX_STRING_CHARS:,}",
                "shorten it; a long prompt belongs in a template file under prompts/",
            )
        forbidden = _FORBIDDEN_CHARACTER.search(value)
        if forbidden is not None:
            nul = forbidden.group(0) == "\0"
            self.diagnostics.append(
                error(
                    "E005",
                    f"a string may not hold U+{ord(forbidden.group(0)):04X}",
                    self.file,
                    span,
                    label="NUL" if nul else "half of a surrogate pair, alone",
                    help="remove the `\\u0000`; no name, path or text needs it"
                    if nul
                    else "write the character itself, or both halves of its pair "
                    "(`\\ud83d\\ude00`)",
                )
            )
        return n.Text(value, span)

    def NUMBER(self, token: Token) -> n.Number:
        text = str(token)
        if self._too_many_digits(token, text):
            return n.Number(0, _token_span(token))
        value: int | float = float(text) if "." in text else int(text)
        return n.Number(value, _token_span(token))

    def DURATION(self, token: Token) -> n.Duration:
        text = str(token)
        match = re.fullmatch(r"([0-9.]+)(ms|s|m|h|d)", text)
        assert match is not None  # the grammar's DURATION guarantees the shape
        if self._too_many_digits(token, match.group(1)):
            return n.Duration(0, text, _token_span(token))
        seconds = (
            float(match.group(1))
            * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        )
        if seconds > MAX_DURATION_SECONDS:
            self._over_limit(
                token,
                f"`{text}` is longer than a year, the longest duration",
                "use at most `366d`; a person who may take longer is better asked again",
            )
        return n.Duration(seconds, text, _token_span(token))

    def _too_many_digits(self, token: Token, number: str) -> bool:
        digits = sum(c.isdigit() for c in number)
        if digits <= MAX_NUMBER_DIGITS:
            return False
        self._over_limit(
            token,
            f"this number has {digits:,} digits; the limit is {MAX_NUMBER_DIGITS}",
            "write a smaller number; no setting needs one this large",
        )
        return True

    # -- types ---------------------------------------------------------------

    @_meta_args
    def named_type(self, meta: Meta, children: list[Any]) -> n.NamedType:
        (name,) = children
        return n.NamedType(name.text, _meta_span(meta))

    @_meta_args
    def list_type(self, meta: Meta, children: list[Any]) -> n.ListType:
        return n.ListType(children[0], _meta_span(meta))

    @_meta_args
    def map_type(self, meta: Meta, children: list[Any]) -> n.MapType:
        key, value = children
        return n.MapType(key, value, _meta_span(meta))

    @_meta_args
    def literal_union(self, meta: Meta, children: list[n.Text]) -> n.LiteralUnion:
        return n.LiteralUnion(tuple(t.value for t in children), _meta_span(meta))

    @_meta_args
    def type_expr(self, meta: Meta, children: list[Any]) -> n.TypeExpr:
        inner, optional = children
        if optional is None:
            return inner  # type: ignore[no-any-return]
        return n.OptionalType(inner, _meta_span(meta))

    @_meta_args
    def field(self, meta: Meta, children: list[Any]) -> n.FieldDecl:
        name, type_, secret, description = children
        return n.FieldDecl(
            name,
            type_,
            description.value if description else None,
            _meta_span(meta),
            secret=secret is not None,
        )

    def SECRET(self, token: Token) -> bool:
        return True

    @_meta_args
    def type_decl(self, meta: Meta, children: list[Any]) -> n.TypeDecl:
        name, description, *fields = children
        return n.TypeDecl(
            name, description.value if description else None, tuple(fields), _meta_span(meta)
        )

    # -- guards --------------------------------------------------------------

    @_meta_args
    def path(self, meta: Meta, children: list[n.Name]) -> n.Path:
        return n.Path(tuple(c.text for c in children), _meta_span(meta))

    @_meta_args
    def string(self, meta: Meta, children: list[n.Text]) -> n.Literal:
        return n.Literal(children[0].value, _meta_span(meta))

    @_meta_args
    def number(self, meta: Meta, children: list[Any]) -> n.Literal:
        return n.Literal(children[0].value, _meta_span(meta))

    @_meta_args
    def true(self, meta: Meta, children: list[Any]) -> n.Literal:
        return n.Literal(True, _meta_span(meta))

    @_meta_args
    def false(self, meta: Meta, children: list[Any]) -> n.Literal:
        return n.Literal(False, _meta_span(meta))

    @_meta_args
    def null(self, meta: Meta, children: list[Any]) -> n.Literal:
        return n.Literal(None, _meta_span(meta))

    def list_literal(self, children: list[Any]) -> tuple[n.Literal, ...]:
        return tuple(c for c in children if c is not None)

    @_meta_args
    def compare(self, meta: Meta, children: list[Any]) -> n.Compare:
        left, op, right = children
        return n.Compare(str(op), left, right, _meta_span(meta))  # type: ignore[arg-type]

    @_meta_args
    def member(self, meta: Meta, children: list[Any]) -> n.Member:
        return n.Member(children[0], children[1], False, _meta_span(meta))

    @_meta_args
    def non_member(self, meta: Meta, children: list[Any]) -> n.Member:
        return n.Member(children[0], children[1], True, _meta_span(meta))

    @_meta_args
    def truthy(self, meta: Meta, children: list[Any]) -> n.Truthy:
        return n.Truthy(children[0], _meta_span(meta))

    @_meta_args
    def negation(self, meta: Meta, children: list[Any]) -> n.Not:
        return n.Not(children[0], _meta_span(meta))

    @_meta_args
    def and_expr(self, meta: Meta, children: list[Any]) -> n.And:
        return n.And(tuple(children), _meta_span(meta))

    @_meta_args
    def or_expr(self, meta: Meta, children: list[Any]) -> n.Or:
        return n.Or(tuple(children), _meta_span(meta))

    def guard(self, children: list[Any]) -> n.Expr:
        return children[0]  # type: ignore[no-any-return]

    # -- settings: (key, value, span) until the block collects them ---------------

    def _setting(key: str, build: Callable[[list[Any], Span], Any]) -> Any:  # type: ignore[misc]
        @_meta_args
        def method(self: _Builder, meta: Meta, children: list[Any]) -> _Setting:
            span = _meta_span(meta)
            return (key, build(children, span), span)

        return method

    input_setting = _setting("input", lambda c, s: c[0])
    start_setting = _setting("start", lambda c, s: c[0])
    max_steps = _setting("max_steps", lambda c, s: n.Ceiling(c[0], c[2], s))
    max_errors = _setting("max_errors", lambda c, s: n.Ceiling(c[0], c[2], s))
    max_cost = _setting("max_cost", lambda c, s: n.Ceiling(c[0], c[2], s))
    max_tokens = _setting("max_tokens", lambda c, s: n.Ceiling(c[0], c[2], s))
    ctx_format = _setting("format", lambda c, s: c[0])
    ctx_keep_last = _setting("keep_last", lambda c, s: c[0])
    ctx_drop_resolved = _setting("drop_resolved_errors", lambda c, s: True)
    ctx_budget = _setting("budget_tokens", lambda c, s: c[0])
    ctx_render = _setting("render", lambda c, s: n.RenderTemplate(c[0], c[1], s))
    prompt = _setting("prompt", lambda c, s: c[0])
    model = _setting("model", lambda c, s: c[0])
    retries = _setting("retries", lambda c, s: c[0])
    temperature = _setting("temperature", lambda c, s: c[0])
    on_output = _setting("rule", lambda c, s: n.OutputRule(c[0], c[1], c[3], s))
    on_error = _setting("on_error", lambda c, s: n.Goto(c[1], s))
    validate = _setting("validate", lambda c, s: n.Validate(c[0], s))
    judge = _setting("judge", lambda c, s: n.Judge(c[0], s))
    next = _setting("next", lambda c, s: n.Goto(c[0], s))
    retry = _setting("retry", lambda c, s: n.Retry(c[0], c[1], s))
    timeout = _setting("timeout", lambda c, s: c[0])
    requires_approval = _setting("requires_approval", lambda c, s: n.RequiresApproval(c[0], s))
    ask = _setting("ask", lambda c, s: c[0])
    approvers = _setting("approvers", lambda c, s: tuple(c))
    on_approved = _setting("on_approved", lambda c, s: n.Goto(c[1], s))
    on_rejected = _setting("on_rejected", lambda c, s: n.Goto(c[1], s))
    wait_timeout = _setting("wait_timeout", lambda c, s: n.WaitTimeout(c[0], c[2], s))

    del _setting

    def input_decl(self, children: list[n.Name]) -> n.Name:
        return children[0]

    # -- blocks --------------------------------------------------------------

    def _collect(
        self, settings: list[_Setting], block: str, repeatable: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """Settings by key. A repeat of a single-valued setting is an error; the first one wins."""
        found: dict[str, Any] = {}
        first_span: dict[str, Span] = {}
        for key, value, span in settings:
            if key in repeatable:
                found.setdefault(key, []).append(value)
            elif key in found:
                # As written: `max_cost` has its underscore, `on error` has a space.
                shown = key if key.startswith("max_") else key.replace("_", " ")
                self.diagnostics.append(
                    error(
                        "E006",
                        f"`{shown}` is set twice in {block}",
                        self.file,
                        span,
                        label="second setting",
                        help=f"keep one `{shown}`; the first is at line {first_span[key].line}",
                    )
                )
            else:
                found[key] = value
                first_span[key] = span
        return found

    @_meta_args
    def context(self, meta: Meta, children: list[_Setting]) -> _Setting:
        span = _meta_span(meta)
        s = self._collect(children, "the context block", frozenset({"render"}))
        decl = n.ContextDecl(
            format=s.get("format"),
            keep_last=s.get("keep_last"),
            drop_resolved_errors=s.get("drop_resolved_errors", False),
            budget_tokens=s.get("budget_tokens"),
            renders=tuple(s.get("render", [])),
            span=span,
        )
        return ("context", decl, span)

    @_meta_args
    def agent(self, meta: Meta, children: list[Any]) -> n.AgentDecl:
        name, description, *settings = children
        s = self._collect(settings, f"agent `{name.text}`")
        return n.AgentDecl(
            name=name,
            description=description.value if description else None,
            input=s.get("input"),
            start=s.get("start"),
            max_steps=s.get("max_steps"),
            max_errors=s.get("max_errors"),
            context=s.get("context"),
            max_cost=s.get("max_cost"),
            max_tokens=s.get("max_tokens"),
            span=_meta_span(meta),
        )

    @_meta_args
    def llm(self, meta: Meta, children: list[Any]) -> n.LlmStep:
        name, _arrow, *rest = children
        outputs = tuple(c for c in rest if isinstance(c, n.Name))
        settings = [c for c in rest if isinstance(c, tuple)]
        s = self._collect(settings, f"llm `{name.text}`", frozenset({"rule", "validate"}))
        return n.LlmStep(
            name=name,
            outputs=outputs,
            prompt=s.get("prompt"),
            model=s.get("model"),
            retries=s.get("retries"),
            temperature=s.get("temperature"),
            rules=tuple(s.get("rule", [])),
            on_error=s.get("on_error"),
            span=_meta_span(meta),
            validators=tuple(s.get("validate", [])),
            judge=s.get("judge"),
        )

    @_meta_args
    def tool(self, meta: Meta, children: list[Any]) -> n.ToolStep:
        name, input_, _arrow, *rest = children
        at = next(i for i, c in enumerate(rest) if isinstance(c, n.Text))
        outputs, function, settings = tuple(rest[:at]), rest[at], rest[at + 1 :]
        s = self._collect(
            [c for c in settings if c is not None], f"tool `{name.text}`", frozenset({"rule"})
        )
        return n.ToolStep(
            name=name,
            input=input_,
            outputs=outputs,
            function=function,
            rules=tuple(s.get("rule", [])),
            next=s.get("next"),
            on_error=s.get("on_error"),
            retry=s.get("retry"),
            timeout=s.get("timeout"),
            requires_approval=s.get("requires_approval"),
            span=_meta_span(meta),
        )

    @_meta_args
    def approval(self, meta: Meta, children: list[Any]) -> n.ApprovalStep:
        name, input_, *settings = children
        s = self._collect(settings, f"approval `{name.text}`")
        return n.ApprovalStep(
            name=name,
            input=input_,
            ask=s.get("ask"),
            approvers=s.get("approvers", ()),
            timeout=s.get("timeout"),
            on_approved=s.get("on_approved"),
            on_rejected=s.get("on_rejected"),
            span=_meta_span(meta),
        )

    @_meta_args
    def human(self, meta: Meta, children: list[Any]) -> n.HumanStep:
        name, input_, *settings = children
        s = self._collect(settings, f"human `{name.text}`")
        return n.HumanStep(
            name=name,
            input=input_,
            ask=s.get("ask"),
            next=s.get("next"),
            timeout=s.get("timeout"),
            on_error=s.get("on_error"),
            span=_meta_span(meta),
        )

    @_meta_args
    def wait(self, meta: Meta, children: list[Any]) -> n.WaitStep:
        name, input_, event, *settings = children
        s = self._collect(settings, f"wait `{name.text}`")
        return n.WaitStep(
            name=name,
            input=input_,
            event=event,
            next=s.get("next"),
            timeout=s.get("wait_timeout"),
            span=_meta_span(meta),
        )

    @_meta_args
    def sleep(self, meta: Meta, children: list[Any]) -> n.SleepStep:
        name, input_, length, goto = children
        until = length if isinstance(length, n.Name) else None
        duration = None if until is not None else length
        return n.SleepStep(
            name=name,
            input=input_,
            duration=duration,
            next=goto[1],
            span=_meta_span(meta),
            until=until,
        )

    def sleep_until(self, children: list[n.Name]) -> n.Name:
        return children[0]

    @_meta_args
    def subagent(self, meta: Meta, children: list[Any]) -> n.AgentStep:
        name, input_, _arrow, output, file, *settings = children
        s = self._collect([c for c in settings if c is not None], f"agent `{name.text}`")
        return n.AgentStep(
            name=name,
            input=input_,
            output=output,
            file=file,
            next=s.get("next"),
            on_error=s.get("on_error"),
            span=_meta_span(meta),
        )

    @_meta_args
    def import_decl(self, meta: Meta, children: list[Any]) -> n.Import:
        return n.Import(children[0], _meta_span(meta))

    @_meta_args
    def final(self, meta: Meta, children: list[Any]) -> n.FinalStep:
        name, input_ = children
        return n.FinalStep(name=name, input=input_, span=_meta_span(meta))

    def start(self, children: list[Any]) -> n.SourceFile:
        return n.SourceFile(
            path=self.file,
            agents=tuple(_only(children, n.AgentDecl)),
            types=tuple(_only(children, n.TypeDecl)),
            steps=tuple(
                c
                for c in children
                if isinstance(
                    c,
                    n.LlmStep
                    | n.ToolStep
                    | n.ApprovalStep
                    | n.HumanStep
                    | n.WaitStep
                    | n.SleepStep
                    | n.AgentStep
                    | n.FinalStep,
                )
            ),
            imports=tuple(_only(children, n.Import)),
        )

    def ARROW(self, token: Token) -> str:
        return "->"

    def __default__(self, data: Any, children: list[Any], meta: Any) -> Any:
        raise AssertionError(f"grammar rule {data!r} has no builder")  # pragma: no cover


def _only(items: list[Any], kind: type[T]) -> Iterator[T]:
    return (i for i in items if isinstance(i, kind))
