"""Imports nest: an imported file of types may import others, each path relative to the
folder of the file that names it. A cycle is refused naming the files in it, a chain
deeper than `IMPORT_DEPTH_LIMIT` as too deep (E136); a problem in a file further down is
reported at the compiled file's `import` that leads to it, naming that file."""

from __future__ import annotations

from pathlib import Path

from twelvefold.compiler import compile_file
from twelvefold.compiler.diagnostics import Diagnostic
from twelvefold.compiler.linking import IMPORT_DEPTH_LIMIT

AGENT = 'import "types/all.agent"\nagent a { input Ask start done }\nfinal done(Ask)\n'


def errors(path: Path) -> list[Diagnostic]:
    return [d for d in compile_file(path, generate_code=False).diagnostics if d.code[0] == "E"]


def write(folder: Path, name: str, text: str) -> None:
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def test_types_two_imports_down_are_found_relative_to_each_file(tmp_path: Path) -> None:
    write(tmp_path, "a.agent", AGENT)
    write(tmp_path, "types/all.agent", 'import "ask.agent"\n')
    write(tmp_path, "types/ask.agent",
          'import "money/cents.agent"\ntype Ask { text: string  price: Money }\n')  # fmt: skip
    write(tmp_path, "types/money/cents.agent", "type Money { cents: int }\n")
    result = compile_file(tmp_path / "a.agent", generate_code=False)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.program is not None and {"Ask", "Money"} <= set(result.program.types)


def test_a_cycle_is_refused_naming_the_files_in_it(tmp_path: Path) -> None:
    write(tmp_path, "a.agent", AGENT)
    write(tmp_path, "types/all.agent", 'import "ask.agent"\n')
    write(tmp_path, "types/ask.agent", 'import "all.agent"\ntype Ask { text: string }\n')
    (found,) = errors(tmp_path / "a.agent")
    assert found.code == "E136" and found.span.line == 1
    assert "all.agent -> ask.agent -> all.agent" in found.message
    assert "a.agent ->" not in found.message  # the compiled file is not in the cycle


def test_an_import_of_the_importing_agent_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.agent", AGENT)
    write(tmp_path, "types/all.agent", 'import "../a.agent"\ntype Ask { text: string }\n')
    (found,) = errors(tmp_path / "a.agent")
    assert found.code == "E136" and "a.agent -> all.agent -> a.agent" in found.message


def test_imports_as_deep_as_the_limit_compile_and_deeper_are_too_deep(tmp_path: Path) -> None:
    def nest(levels: int) -> Path:
        folder = tmp_path / f"n{levels}"
        write(folder, "a.agent", AGENT.replace("types/all.agent", "i1.agent"))
        for i in range(1, levels):
            write(folder, f"i{i}.agent", f'import "i{i + 1}.agent"\n')
        write(folder, f"i{levels}.agent", "type Ask { text: string }\n")
        return folder / "a.agent"

    assert errors(nest(IMPORT_DEPTH_LIMIT)) == []
    (found,) = [d for d in errors(nest(IMPORT_DEPTH_LIMIT + 1)) if d.code == "E136"]
    assert found.span.line == 1 and "deep" in found.message and "->" not in found.message


def test_a_missing_or_wrong_file_further_down_is_named_at_the_import(tmp_path: Path) -> None:
    write(tmp_path, "a.agent", AGENT)
    write(tmp_path, "types/all.agent", 'import "gone.agent"\ntype Ask { text: string }\n')
    (found,) = errors(tmp_path / "a.agent")
    assert (found.code, found.span.line) == ("E130", 1)
    assert '"gone.agent" (imported through `types/all.agent`)' in found.message
    write(tmp_path, "types/gone.agent", "agent g { start done }\nfinal done\n")
    (found,) = errors(tmp_path / "a.agent")
    assert found.code == "E131" and "gone.agent" in found.message


def test_a_file_imported_twice_is_read_once_and_the_first_declaration_wins(
    tmp_path: Path,
) -> None:
    write(tmp_path, "a.agent", AGENT)
    write(tmp_path, "types/all.agent", 'import "one.agent"\nimport "two.agent"\n')
    write(tmp_path, "types/one.agent", 'import "ask.agent"\n')
    write(tmp_path, "types/two.agent", 'import "ask.agent"\n')
    write(tmp_path, "types/ask.agent", "type Ask { text: string }\n")
    assert errors(tmp_path / "a.agent") == []


def test_a_loop_of_symbolic_links_is_a_diagnostic_not_a_traceback(tmp_path: Path) -> None:
    """An import or a sub-agent named through a loop of symbolic links cannot be read: E130
    at the name (resolving the path raised RuntimeError before)."""
    (tmp_path / "l3.agent").symlink_to("l2.agent")
    (tmp_path / "l2.agent").symlink_to("l3.agent")
    write(tmp_path, "a.agent", 'import "l2.agent"\nagent a { input T start s }\n'
          "type T { x: string }\nfinal s(T)\n")  # fmt: skip
    write(tmp_path, "b.agent", "agent b { input T start c }\ntype T { x: string }\n"
          'agent c(T) -> T = "l2.agent" { next d }\nfinal d(T)\n')  # fmt: skip
    for name, line in (("a.agent", 1), ("b.agent", 3)):
        found = errors(tmp_path / name)
        assert [(d.code, d.span.line) for d in found] == [("E130", line)], found
