"""Property: any names from a hostile alphabet (Python keywords, builtins, the generator's
own names, dunders, trailing underscores, pydantic's attributes) either compile to a module
that imports cleanly (warnings are errors) and shows every declared name as declared, or
get a diagnostic. Never a broken module (issue 9 §3)."""

from __future__ import annotations

import ast
import builtins
import keyword
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twelvefold.compiler import PromptFile, compile_text
from twelvefold.compiler.codegen import template_bindings
from twelvefold.compiler.pynames import reserved_names, state_function_names
from twelvefold.runtime.loading import import_file

HOSTILE = sorted(
    {
        *keyword.kwlist,
        "match", "case", "_", "type",
        *(n for n in dir(builtins) if n.isidentifier() and not n.startswith("__")),
        *template_bindings()[0],
        "model_dump", "model_config", "model_fields", "Field", "Literal", "ConfigDict",
        "pydantic", "typing", "json", "os", "self", "cls", "__init__", "__class__", "__dict__",
        "x", "x_", "_x", "x__", "from_", "json_", "State_", "_d_action", "_s0_action",
    }
)  # fmt: skip
"""Names a .agent NAME can spell (the grammar's NAME is `[A-Za-z_][A-Za-z0-9_]*`)."""

DESCRIPTION = ' "described"'
RISKY = ["int", "float", "str", "bool", "list", "dict", "Field", "Literal", "ConfigDict"]
"""Names a class body reads while it is being built: a field must never rebind them."""

names = (
    st.sampled_from(RISKY)
    | st.sampled_from(HOSTILE)
    | st.from_regex(r"_{0,2}[A-Za-z][A-Za-z0-9]{0,3}_{0,2}", fullmatch=True)
)


@st.composite
def programs(draw: st.DrawFn) -> tuple[str, list[tuple[str, list[str]]]]:
    type_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    types = []
    for name in type_names:
        # A field may be named like a declared type (or `Field`, `float`...) and refer to one.
        fields = draw(st.lists(names | st.sampled_from(type_names), max_size=5, unique=True))
        types.append((name, fields))
    state = draw(names)
    lines = ["agent p { start " + state + " }"]
    for name, fields in types:
        kinds = [
            draw(st.sampled_from(["int?", "float?", *(t + "?" for t in type_names)]))
            for _ in fields
        ]
        described = [draw(st.booleans()) for _ in fields]
        body = ", ".join(
            f"{f}: {k}{DESCRIPTION if d else ''}"
            for f, k, d in zip(fields, kinds, described, strict=True)
        )
        lines.append(f"type {name} {{ {body} }}")
    outputs = " | ".join(n for n, _ in types)
    rules = " ".join(f"on {n} -> {state}_end" for n, _ in types)
    lines.append(f'llm {state} -> {outputs} {{ prompt "p.j2" {rules} }}')
    lines.append(f"final {state}_end")
    return "\n".join(lines) + "\n", types


def _prompt(name: str) -> PromptFile:
    return PromptFile(name=name, path=Path(name), text="{{ context }}")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(programs())
def test_hostile_names_compile_to_a_clean_module_or_a_diagnostic(
    tmp_path: Path, program: tuple[str, list[tuple[str, list[str]]]]
) -> None:
    source, types = program
    result = compile_text(source, "p.agent", load_prompt=_prompt, generate_code=True)
    if any(d.is_error for d in result.diagnostics):
        assert all(d.span.line >= 1 for d in result.diagnostics)
        return
    ((file_name, module_text),) = result.files.items()
    _check_top_level_names(module_text, module_states(source))
    path = tmp_path / f"{abs(hash(source))}_{file_name}"
    path.write_text(module_text)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module = import_file(path, f"_hostile_{abs(hash(source))}")
    assert list(module.AGENT.types) == [name for name, _ in types]
    for name, fields in types:
        cls = module.AGENT.types[name]
        schema = cls.model_json_schema()
        if "$ref" in schema:  # a recursive type: its own schema is among the $defs
            schema = schema["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
        assert schema["title"] == name
        assert list(schema.get("properties", {})) == fields
        value = cls.model_validate({f: None for f in fields})
        assert value.model_dump(by_alias=True) == {f: None for f in fields}


def module_states(source: str) -> list[str]:
    return [
        line.split()[1].split("(")[0]
        for line in source.splitlines()
        if line.startswith(("llm ", "final "))
    ]


def _check_top_level_names(text: str, states: list[str]) -> None:
    """Every name the module binds at its top level is bound once, and is a class, a
    per-state function or one of pynames.reserved_names(): the reserved set cannot fall behind
    what module.py.j2 writes."""
    bound: list[str] = []
    classes: set[str] = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            bound += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.ClassDef):
            bound.append(node.name)
            classes.add(node.name)
        elif isinstance(node, ast.FunctionDef):
            bound.append(node.name)
        elif isinstance(node, ast.Assign):
            bound += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            bound.append(node.target.id)
    assert len(bound) == len(set(bound)), sorted(n for n in bound if bound.count(n) > 1)
    functions = {f for s in states for f in state_function_names(s)}
    unreserved = set(bound) - classes - functions - reserved_names()
    assert not unreserved, unreserved
