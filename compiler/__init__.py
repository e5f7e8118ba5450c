"""twelvefold.compiler: .agent source -> checked program -> plain Python reducer modules.

The stages are pure functions, each in its own module:

    parse(text, path)            -> (SourceFile, diagnostics)      parser.py
    check(source, load_prompt=)  -> (Program | None, diagnostics)  check.py
    generate(program)            -> {file name: Python source}     codegen.py

`compile_text` and `compile_file` run them in order, as `twelvefold compile` does.
"""

if __name__ != "twelvefold.compiler":  # pragma: no cover - what the guard refuses
    # The repository shows this folder at its top; it is a part of the twelvefold package
    # and must never be importable under a second name (two copies of every class).
    raise ImportError(f"import twelvefold.compiler, not {__name__}")

from .api import Compilation, compile_file, compile_text
from .check import check
from .codegen import generate, module_name
from .diagnostics import CompilerBug, Diagnostic, Severity, Span
from .parser import parse
from .program import Edge, Program, PromptFile
from .prompts import PromptDirectory, find_prompts_dir

__all__ = [
    "Compilation",
    "CompilerBug",
    "Diagnostic",
    "Edge",
    "Program",
    "PromptDirectory",
    "PromptFile",
    "Severity",
    "Span",
    "check",
    "compile_file",
    "compile_text",
    "find_prompts_dir",
    "generate",
    "module_name",
    "parse",
]
