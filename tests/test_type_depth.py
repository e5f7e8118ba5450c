"""Values nest at most MAX_TYPE_DEPTH levels (E123): a chain of record types, or lists and
maps inside them, deeper than that passed `check` and broke later (`prompt` ran out of
stack building the schema from 35 levels, `run` and `test` raised RecursionError). The
limit leaves pydantic, the JSON schema and the property tests room to spare."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from twelvefold.compiler import PromptFile, compile_text
from twelvefold.compiler.api import Compilation
from twelvefold.compiler.limits import MAX_TYPE_DEPTH
from twelvefold.runtime.cassette import read_cassette
from twelvefold.runtime.loading import import_file


def _prompt(name: str) -> PromptFile:
    return PromptFile(name=name, path=Path(name), text="{{ context }}")


def chain(levels: int, wrap: str = "{}?") -> str:
    """`type T0 { next: T1? } ... type T{levels-1} { last: string }`: values `levels` deep."""
    lines = ["agent a { start decide }"]
    for i in range(levels - 1):
        lines.append(f"type T{i} {{ next: {wrap.format(f'T{i + 1}')} }}")
    lines.append(f"type T{levels - 1} {{ last: string }}")
    lines.append('llm decide -> T0 { prompt "p.j2" on T0 -> done }\nfinal done(T0)')
    return "\n".join(lines) + "\n"


def compiled(source: str) -> Compilation:
    return compile_text(source, "a.agent", load_prompt=_prompt)


def test_a_chain_at_the_limit_compiles_and_its_schema_has_room_to_spare(tmp_path: Path) -> None:
    result = compiled(chain(MAX_TYPE_DEPTH))
    assert result.ok, [d.message for d in result.diagnostics]
    ((name, text),) = result.files.items()
    (tmp_path / name).write_text(text)
    module = import_file(tmp_path / name, "_depth_at_limit")
    declared = module.AGENT.types["T0"]
    value: dict[str, object] = {"last": "x"}
    for _ in range(MAX_TYPE_DEPTH - 1):
        value = {"next": value}
    limit = sys.getrecursionlimit()
    # Half of Python's default stack, from here: the CLI and the runtime use some of it.
    sys.setrecursionlimit(len(inspect.stack()) + 500)
    try:
        schema = declared.model_json_schema()
        assert declared.model_validate(value).model_dump(exclude_none=True, by_alias=True) == value
    finally:
        sys.setrecursionlimit(limit)
    assert len(schema["$defs"]) == MAX_TYPE_DEPTH - 1


def test_one_level_more_is_refused_naming_the_chain() -> None:
    (found,) = [d for d in compiled(chain(MAX_TYPE_DEPTH + 1)).diagnostics if d.is_error]
    assert found.code == "E123" and found.span.line == 2
    assert f"{MAX_TYPE_DEPTH + 1} levels" in found.message
    assert "T0.next -> T1.next -> " in found.message and "-> T16" in found.message


@pytest.mark.parametrize("levels", [40, 300, 1000])
def test_long_chains_are_refused_without_running_out_of_stack(levels: int) -> None:
    diagnostics = [d for d in compiled(chain(levels)).diagnostics if d.is_error]
    assert [d.code for d in diagnostics] == ["E123"]


def test_lists_and_maps_are_levels_too() -> None:
    assert compiled(chain(MAX_TYPE_DEPTH // 2, "list[{}]")).ok
    refused = compiled(chain(MAX_TYPE_DEPTH // 2 + 1, "list[map[string, {}]?]"))
    assert [d.code for d in refused.diagnostics if d.is_error] == ["E123"]
    inner = "string"
    for _ in range(MAX_TYPE_DEPTH):
        inner = f"list[{inner}]"
    source = chain(1).replace("last: string", f"deep: {inner}")
    assert [d.code for d in compiled(source).diagnostics if d.is_error] == ["E123"]


def test_recursive_types_are_not_too_deep() -> None:
    source = """agent a { start decide }
type Node { children: list[Node], parent: Tree? }
type Tree { root: Node? }
llm decide -> Tree { prompt "p.j2" on Tree -> done }
final done(Tree)
"""
    assert compiled(source).ok


def test_a_cassette_line_nested_too_deep_for_json_is_refused_naming_its_line(
    tmp_path: Path,
) -> None:
    deep = '{"next": ' * 100_000 + "null" + "}" * 100_000
    line = f'{{"agent": "a", "step": "decide", "type": "T0", "output": {deep}}}'
    path = tmp_path / "deep.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(OSError, match=r"nested too deeply") as refused:
        read_cassette(path)
    assert str(refused.value.filename).endswith("deep.jsonl:1")  # (the CLI: one line)


def test_a_cassette_entry_holding_a_unicode_line_separator_is_one_entry(tmp_path: Path) -> None:
    """JSON text may hold a raw U+2028 (the recorder writes `ensure_ascii=False`):
    `str.splitlines` cut such an entry in two, neither half JSON (rt19, F13's kind)."""
    line = '{"agent": "a", "step": "decide", "type": "T", "output": {"x": "a\u2028b\x85c"}}'
    path = tmp_path / "sep.jsonl"
    path.write_text(line + "\r\n", encoding="utf-8")
    (entry,) = read_cassette(path)
    assert entry.output == {"x": "a\u2028b\x85c"}


def _deep_import(folder: Path, levels: int) -> Path:
    """`folder/lib/deep.agent`: the types of `chain(levels)`, nothing else, after a
    comment line (so its types start at line 2)."""
    (folder / "lib").mkdir()
    types = [line for line in chain(levels).splitlines() if line.startswith("type ")]
    (folder / "lib" / "deep.agent").write_text("# types only\n" + "\n".join(types) + "\n")
    return folder / "lib" / "deep.agent"


@pytest.mark.parametrize("local", [False, True], ids=["used directly", "inside a local type"])
def test_an_imported_type_too_deep_is_reported_at_the_import_naming_its_definition(
    tmp_path: Path, local: bool
) -> None:
    """Found by a review: the imported type's own position (line 2 of lib/deep.agent) was
    reported as if in the importing file, or the local type that uses it took the blame.
    Cross-file problems are reported at the `import` that leads to them (E130, E131,
    E136), and this one says where the type is declared."""
    _deep_import(tmp_path, MAX_TYPE_DEPTH + 2)
    output = "Holder" if local else "T3"
    holder = "type Holder { inner: T0 }\n" if local else ""
    source = (
        'import "lib/deep.agent"\n'
        "agent a { start decide }\n"
        f"{holder}"
        f'llm decide -> {output} {{ prompt "p.j2" on {output} -> done }}\n'
        f"final done({output})\n"
    )
    result = compile_text(
        source, "agents/a.agent", load_prompt=_prompt, generate_code=False, base_dir=tmp_path
    )
    (found,) = [d for d in result.diagnostics if d.is_error]
    assert found.code == "E123"
    assert found.path == "agents/a.agent"
    assert (found.span.line, found.span.column) == (1, 8)  # the import's file name
    assert "values of `T0` nest 18 levels deep" in found.message
    assert "`T0` is declared at agents/lib/deep.agent:2:6" in found.message


def test_a_local_type_made_too_deep_by_an_imported_one_is_reported_where_it_is() -> None:
    """An imported type within the limit, held by a local type that takes it past: the
    local type is the one to change, and is reported (in its own file)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        _deep_import(Path(folder), MAX_TYPE_DEPTH)
        source = (
            'import "lib/deep.agent"\n'
            "agent a { start decide }\n"
            "type Holder { inner: T0 }\n"
            'llm decide -> Holder { prompt "p.j2" on Holder -> done }\n'
            "final done(Holder)\n"
        )
        result = compile_text(
            source, "a.agent", load_prompt=_prompt, generate_code=False, base_dir=Path(folder)
        )
    (found,) = [d for d in result.diagnostics if d.is_error]
    assert (found.code, found.path, found.span.line, found.span.column) == ("E123", "a.agent", 3, 6)
    assert "values of `Holder` nest 17 levels deep" in found.message


@pytest.mark.parametrize(
    ("types", "code", "says"),
    [
        ("type Parcel { weight: Kilograms }", "E105", "unknown type `Kilograms`"),
        ("type Parcel { weight: float, weight: int }", "E103", "declared twice"),
        ("type Parcel { weight: map[int, float] }", "E117", "map keys must be strings"),
    ],
    ids=["E105", "E103", "E117"],
)
def test_a_problem_inside_an_imported_type_is_reported_at_the_import(
    tmp_path: Path, types: str, code: str, says: str
) -> None:
    """The same mistake as E123's (found beside it): a problem in a field of an imported
    type was reported at its position in the imported file as if in the importing one.
    It is reported at the import, saying where (file:line:col) and in which type."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "parcel.agent").write_text(f"# types only\n{types}\n")
    source = (
        'import "lib/parcel.agent"\n'
        "agent a { start decide }\n"
        'llm decide -> Parcel { prompt "p.j2" on Parcel -> done }\n'
        "final done(Parcel)\n"
    )
    result = compile_text(
        source, "a.agent", load_prompt=_prompt, generate_code=False, base_dir=tmp_path
    )
    (found,) = [d for d in result.diagnostics if d.is_error]
    assert (found.code, found.path, found.span.line, found.span.column) == (code, "a.agent", 1, 8)
    assert says in found.message
    assert "at lib/parcel.agent:2:" in found.message and "imported type `Parcel`" in found.message
    assert found.notes == ()
