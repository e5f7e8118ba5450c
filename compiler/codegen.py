"""Stage 3: `Program` -> {file name: Python source}. Writes nothing itself.

As in betterproto: everything a template needs (names, annotations, guard code,
comments) is computed here into a small view model; the Jinja2 template only lays it
out. Output always goes through ruff's formatter (generation fails without it), so
identical input gives byte-identical, formatted output.
"""

from __future__ import annotations

import ast
import re
import subprocess
import textwrap
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import PurePath

import jinja2
import networkx as nx

from twelvefold import __version__, runtime

from . import nodes as n
from .diagnostics import CompilerBug, Span, source_lines
from .graph import can_fail
from .guard_python import GuardCompiler
from .guard_text import guard_text
from .program import Edge, Program
from .pynames import (
    comment,
    docstring,
    function_name,
    module_file_stem,
    py_str,
    python_names,
)

_SCALARS = {"string": "str", "int": "int", "float": "float", "bool": "bool"}


def module_name(agent_name: str) -> str:
    """The generated module's file stem: the agent's name (already an identifier), unless
    that would shadow a module (pynames.module_file_stem)."""
    return module_file_stem(agent_name)


# ---- the view model -----------------------------------------------------------


@dataclass
class FieldView:
    attribute: str
    annotation: str
    default: str | None
    """The right-hand side of the field's assignment, or None for a required field."""


@dataclass
class ModelView:
    name: str
    docstring: str | None
    fields: list[FieldView]
    config: str
    """The arguments of the class's `ConfigDict`."""


@dataclass
class CaseView:
    pattern: str
    guard: str | None
    body: str
    rule: list[str]
    """The `.agent` rule this case implements, restated as comment lines."""


@dataclass
class StateView:
    name: str
    kind: str
    origin: list[str]
    """`deploybot.agent:24: llm decide -> ...`: the declaration's first line, wrapped."""
    action_function: str
    reduce_function: str
    action: str
    cases: list[CaseView]
    approval_guard: ApprovalGuardView | None = None


@dataclass
class ApprovalGuardView:
    function: str
    annotation: str
    expression: str
    origin: list[str]


@dataclass
class ModuleView:
    version: str
    source: str
    agent: str
    description: str | None
    input_annotation: str
    models: list[ModelView]
    states: list[StateView]
    spec: str
    runtime_imports: list[str]
    exports: list[str]
    uses_field: bool = False
    uses_annotated: bool = False
    uses_config: bool = False
    uses_literal: bool = False
    prompts: str | None = None
    """`PROMPTS`' value as a Python literal, or None for a module that records none."""


# ---- generation -------------------------------------------------------------------


def generate(program: Program, prompts: str | None = None) -> dict[str, str]:
    """`{file name: module text}`. With `prompts` (the folder the program's templates were
    read from, relative to the folder the module is written to, POSIX; or absolute), the
    module records it as `PROMPTS`, and the runtime reads its templates there
    (runtime/loading.py): `twelvefold compile -o DIR` writes such modules."""
    view = _ModuleBuilder(program).build()
    if prompts is not None:
        view = replace(view, prompts=py_str(prompts))
    text = _template().render(m=view)
    return {f"{module_name(program.name)}.py": _format(text)}


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("twelvefold.compiler", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template("module.py.j2")


@cache
def template_bindings() -> tuple[frozenset[str], frozenset[str]]:
    """(names, modules): every name module.py.j2 binds at the top level of a module, and
    the top-level modules it imports, read from the template itself (rendered with every
    optional part on, and no declared type or state) so that no list kept by hand can fall
    behind it (pynames.reserved_names).

    Every `bool` of the view model is on, every optional text given, and every name the
    runtime exports imported: the most a module can bind besides its classes and its
    per-state functions."""
    options: dict[str, object] = {}
    for option in fields(ModuleView):
        if option.type == "bool":
            options[option.name] = True
        elif option.type == "str | None":
            options[option.name] = '"."'
    probe = ModuleView(
        version="0",
        source="probe.agent",
        agent="probe",
        input_annotation="str",
        models=[],
        states=[],
        spec="None",
        runtime_imports=list(runtime.__all__),
        exports=[],
        **options,  # type: ignore[arg-type]
    )
    names: set[str] = set()
    modules: set[str] = set()
    for node in ast.parse(_template().render(m=probe)).body:
        match node:
            case ast.ImportFrom(module=str(module)):
                modules.add(module.split(".")[0])
                names |= {(a.asname or a.name) for a in node.names}
            case ast.Import():
                modules |= {a.name.split(".")[0] for a in node.names}
                names |= {(a.asname or a.name).split(".")[0] for a in node.names}
            case ast.FunctionDef(name=name) | ast.ClassDef(name=name):
                names.add(name)
            case ast.Assign(targets=targets):
                names |= {t.id for t in targets if isinstance(t, ast.Name)}
            case ast.AnnAssign(target=ast.Name(id=name)):
                names.add(name)
    return frozenset(names), frozenset(modules)


class FormatterUnavailable(Exception):
    """ruff, which formats every generated module, cannot be found or run.

    Formatting is part of the contract (a module's layout is byte-stable and lint-clean, and
    `AGENT` is readable rather than one line of thousands of characters), so generation
    fails instead of writing an unformatted module. ruff is a dependency of twelvefold; this
    means a broken installation.
    """


def _format(source: str) -> str:
    """The module laid out by ruff's formatter, the version pinned in pyproject.toml.

    Raises FormatterUnavailable when ruff is missing; CompilerBug when it rejects the text.
    """
    try:
        from ruff.__main__ import find_ruff_bin

        ruff = find_ruff_bin()
    except (ImportError, FileNotFoundError) as exc:
        raise FormatterUnavailable(
            "cannot format the generated module: ruff is not installed "
            "(it is a dependency of twelvefold: reinstall twelvefold, or `pip install ruff`)"
        ) from exc
    try:
        result = subprocess.run(
            [
                ruff,
                "format",
                "--isolated",
                "--line-length",
                "100",
                "--stdin-filename",
                "agent.py",
                "-",
            ],
            input=source,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise FormatterUnavailable(f"cannot format the generated module: {ruff}: {exc}") from exc
    if result.returncode != 0:
        raise CompilerBug(f"generated code does not format:\n{result.stderr}")
    return result.stdout


class _ModuleBuilder:
    def __init__(self, program: Program) -> None:
        self.program = program
        self.types = program.types
        self.source_name = PurePath(program.source.path).name
        self.names = python_names(self.types.values(), program.steps)
        # Lines as the parser counts them (diagnostics.LINE_BREAK), not str.splitlines(),
        # which also splits at form feeds and other characters a comment may hold.
        self.lines = source_lines(program.source_text)
        self.imports: set[str] = {"AgentSpec", "Event", "IllegalEvent", "Started", "State"}
        self.imports |= {"Action", "StateSpec", "EdgeSpec", "Fail"}
        self.uses_field = False
        self.uses_literal = False
        self.uses_config = False
        self.uses_annotated = False

    def build(self) -> ModuleView:
        models = [self._model(self.types[name]) for name in self._types_in_dependency_order()]
        states = [self._state(step) for step in self.program.steps.values()]
        spec = self._spec()
        agent = self.program.agent
        return ModuleView(
            version=__version__,
            source=comment(self.source_name),
            agent=self.program.name,
            description=docstring(agent.description) if agent.description else None,
            input_annotation=self._input_annotation(),
            models=models,
            states=states,
            spec=spec,
            runtime_imports=_isort_order(sorted(self.imports)),
            exports=_isort_order(["AGENT", *(m.name for m in models), *_PUBLIC_FUNCTIONS]),
            uses_field=self.uses_field,
            uses_config=self.uses_config,
            uses_literal=self.uses_literal,
            uses_annotated=self.uses_annotated,
        )

    # -- types ---------------------------------------------------------------

    def _types_in_dependency_order(self) -> list[str]:
        """Referenced types before the types that use them; source order otherwise."""
        graph = nx.DiGraph()
        order = list(self.types)
        graph.add_nodes_from(order)
        for name, decl in self.types.items():
            for f in decl.fields:
                for used in n.named_types(f.type):
                    if used.name in self.types and used.name != name:
                        graph.add_edge(used.name, name)
        position = {name: i for i, name in enumerate(order)}
        try:
            return list(nx.lexicographical_topological_sort(graph, key=position.__getitem__))
        except nx.NetworkXUnfeasible:  # mutually recursive types: pydantic resolves them lazily
            return order

    def _annotation(self, expr: n.TypeExpr) -> str:
        match expr:
            case n.NamedType(name=name):
                if name in _SCALARS:
                    return _SCALARS[name]
                if name == n.ANSWER_TYPE:
                    self.imports.add("Answer")
                    return "Answer"
                return self.names.classes[name]
            case n.ListType(item=item):
                return f"list[{self._annotation(item)}]"
            case n.MapType(value=value):
                return f"dict[str, {self._annotation(value)}]"
            case n.LiteralUnion(values=values):
                self.uses_literal = True
                return f"Literal[{', '.join(py_str(v) for v in values)}]"
            case n.OptionalType(inner=inner):
                return f"{self._annotation(inner)} | None"
        raise CompilerBug(f"unknown type expression {expr!r}")

    def _model(self, decl: n.TypeDecl) -> ModelView:
        fields = []
        needs_config = False
        attributes = self.names.attributes[decl.name.text]
        for f in decl.fields:
            attribute = attributes[f.name.text]
            arguments = []
            if isinstance(f.type, n.OptionalType):
                arguments.append("default=None")
            if attribute != f.name.text:
                arguments.append(f"alias={py_str(f.name.text)}")
                needs_config = True
            if f.description:
                arguments.append(f"description={py_str(f.description)}")
            default = None
            if arguments == ["default=None"]:
                default = "None"
            elif arguments:
                self.uses_field = True
                default = f"Field({', '.join(arguments)})"
            annotation = self._annotation(f.type)
            if f.secret:  # never shown (runtime/redact.py); validated like any other field
                self.uses_annotated = True
                self.imports.add("SECRET")
                annotation = f"Annotated[{annotation}, SECRET]"
            fields.append(FieldView(attribute, annotation, default))
        self.uses_config = True
        name = self.names.classes[decl.name.text]
        # Unknown keys are errors at every level (LANGUAGE.md), not only at the top.
        # An instance is checked like a dict: pydantic trusts one by default, and one
        # built by `model_construct` (or a subclass) could carry what validation refuses
        # into the log, which then no longer reads back (tests/test_unchecked_instances.py).
        config = ['extra="forbid"', 'revalidate_instances="always"']
        if needs_config:
            config.append("populate_by_name=True")
        if any(_has_float(f.type) for f in decl.fields):
            # docs/language.md: NaN and the infinities are not numbers a model may answer
            # (an amount of NaN slips past every ordering guard); validation refuses them,
            # so the model is asked again like for any other malformed output.
            config.append("allow_inf_nan=False")
        if name != decl.name.text:  # the declared name stays the one the model sees
            config.append(f"title={py_str(decl.name.text)}")
        # Validators and schemas are built on first use, not when the module is imported
        # (issue 13: importing an agent within 100 ms; a reducer never validates).
        config.append("defer_build=True")
        return ModelView(
            name=name,
            docstring=docstring(decl.description) if decl.description else None,
            fields=fields,
            config=", ".join(config),
        )

    def _input_annotation(self) -> str:
        agent = self.program.agent
        if agent.input is None or agent.input.text == "string":
            return "str"
        return self._annotation(n.NamedType(agent.input.text))

    # -- states --------------------------------------------------------------

    def _origin(self, step: n.Step) -> list[str]:
        line = step.span.line
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else step.name.text
        text = text.removesuffix("{").rstrip()  # the body's rules are restated above each case
        return _comment_lines(f"{self.source_name}:{line}: {text}")

    def _rule(self, span: Span) -> list[str]:
        """The source text under `span` (a rule such as `on Deploy if ... -> approve`), as
        comment lines; a rule written over several lines is joined into one."""
        rows = self.lines[span.line - 1 : span.end_line]
        if not rows:
            return _comment_lines(f"{self.source_name}:{span.line}")
        if len(rows) == 1:
            rows = [rows[0][span.column - 1 : span.end_column - 1]]
        else:
            rows = [rows[0][span.column - 1 :], *rows[1:-1], rows[-1][: span.end_column - 1]]
        text = " ".join(" ".join(row.split()) for row in rows if row.strip())
        return _comment_lines(f"{self.source_name}:{span.line}: {text}")

    def _state(self, step: n.Step) -> StateView:
        name = step.name.text
        view = StateView(
            name=name,
            kind=step.kind,
            origin=self._origin(step),
            action_function=function_name(name, "action"),
            reduce_function=function_name(name, "reduce"),
            action=self._action(step),
            cases=self._cases(step),
        )
        if isinstance(step, n.ToolStep) and step.requires_approval is not None:
            view.approval_guard = self._approval_guard(step, step.requires_approval)
        return view

    def _action(self, step: n.Step) -> str:
        name = py_str(step.name.text)
        match step:
            case n.LlmStep():
                # Built by the plain function, not the class: a class call passes its
                # keywords through a new dict (twice the cost; every model call makes one).
                self.imports.add("build_call_model")
                outputs = ", ".join(self.names.classes[o.text] for o in step.outputs)
                arguments = [
                    f"step={name}",
                    "value=state.value",
                    f"outputs=({outputs},)" if len(step.outputs) == 1 else f"outputs=({outputs})",
                    f"prompt={py_str(step.prompt.value) if step.prompt else None}",
                ]
                if step.model:
                    arguments.append(f"model={py_str(step.model.value)}")
                if step.retries:
                    arguments.append(f"retries={int(step.retries.value)}")
                if step.temperature is not None:
                    arguments.append(f"temperature={float(step.temperature.value)!r}")
                if step.validators:
                    checks = ", ".join(py_str(v.function.value) for v in step.validators)
                    arguments.append(f"validators=({checks},)")
                if step.judge is not None:
                    arguments.append(f"judge={py_str(step.judge.prompt.value)}")
                if step.validators or step.judge is not None:
                    arguments.append("rejections=state.rejections")
                return f"build_call_model({', '.join(arguments)})"
            case n.ToolStep():
                self.imports.add("build_call_tool")  # as `build_call_model`
                arguments = [
                    f"step={name}",
                    f"function={py_str(step.function.value)}",
                    "value=state.value" if step.input else "value=None",
                    f"output={self._output_class(step.outputs[0].text)}",
                ]
                if len(step.outputs) > 1:
                    members = ", ".join(self._output_class(o.text) for o in step.outputs)
                    arguments.append(f"outputs=({members})")
                if step.retry:
                    arguments.append(f"retries={int(step.retry.attempts.value)}")
                    if step.retry.backoff:
                        arguments.append(f"backoff_seconds={step.retry.backoff.seconds!r}")
                if step.timeout:
                    arguments.append(f"timeout_seconds={step.timeout.seconds!r}")
                arguments.append("started_key=state.tool_key")
                arguments.append("retry_key=state.retry_key")
                return f"build_call_tool({', '.join(arguments)})"
            case n.ApprovalStep():
                self.imports.add("AwaitApproval")
                ask = step.ask.value if step.ask else f"Approve `{step.name.text}`?"
                arguments = [f"step={name}", "value=state.value", f"ask={py_str(ask)}"]
                if step.approvers:
                    listed = ", ".join(py_str(a.value) for a in step.approvers)
                    arguments.append(f"approvers=({listed},)")
                if step.timeout:
                    arguments.append(f"timeout_seconds={step.timeout.seconds!r}")
                arguments.append("notified=state.notified")
                arguments.append("request=state.request")
                return f"AwaitApproval({', '.join(arguments)})"
            case n.HumanStep():
                self.imports.add("AwaitAnswer")
                ask = step.ask.value if step.ask else ""
                arguments = [f"step={name}", "value=state.value", f"ask={py_str(ask)}"]
                if step.timeout:
                    arguments.append(f"timeout_seconds={step.timeout.seconds!r}")
                arguments.append("notified=state.notified")
                arguments.append("request=state.request")
                return f"AwaitAnswer({', '.join(arguments)})"
            case n.WaitStep():
                self.imports.add("AwaitSignal")
                arguments = [
                    f"step={name}",
                    "value=state.value",
                    f"event={self._output_class(step.event.text)}",
                ]
                if step.timeout:
                    arguments.append(f"timeout_seconds={step.timeout.duration.seconds!r}")
                arguments.append("request=state.request")
                return f"AwaitSignal({', '.join(arguments)})"
            case n.SleepStep(until=n.Name() as until):
                # The time comes from the value (checked: a `string` field, E135).
                self.imports.add("Sleep")
                field = self.names.attribute(step.input.text if step.input else None, until.text)
                arguments = [
                    f"step={name}",
                    "value=state.value",
                    "seconds=0.0",
                    f"until=state.value.{field}",
                    "request=state.request",
                ]
                return f"Sleep({', '.join(arguments)})"
            case n.SleepStep(duration=n.Duration() as duration):
                self.imports.add("Sleep")
                return (
                    f"Sleep(step={name}, value=state.value, "
                    f"seconds={duration.seconds!r}, request=state.request)"
                )
            case n.AgentStep():
                self.imports.add("CallAgent")
                return (
                    f"CallAgent(step={name}, value=state.value, agent={py_str(step.file.value)}, "
                    f"output={self._output_class(step.output.text)}, "
                    "started=state.notified, request=state.request)"
                )
            case n.FinalStep():
                self.imports.add("Finish")
                return f"Finish(step={name}, result=state.value)"
        raise CompilerBug(f"unknown step {step!r}")

    def _output_class(self, type_name: str) -> str:
        if type_name == n.ANSWER_TYPE:
            self.imports.add("Answer")
            return "Answer"
        return self.names.classes[type_name]

    def _cases(self, step: n.Step) -> list[CaseView]:
        cases: list[CaseView] = []
        for edge in self.program.edges_from(step.name.text):
            case = self._case(step, edge)
            if case is not None:
                cases.append(case)
        if can_fail(step) and not any(
            e.kind == "error" for e in self.program.edges_from(step.name.text)
        ):
            # No `on error`: the error ceiling or a failed thread (AgentSpec.fail decides).
            self.imports.add("StepFailed")
            rule = ["no `on error`: the agent's max_errors rule, else the thread fails"]
            cases.append(
                CaseView("StepFailed()", None, "AGENT.fail(state, event, on_error=None)", rule)
            )
        return cases

    def _case(self, step: n.Step, edge: Edge) -> CaseView | None:
        target = py_str(edge.target)
        rule = self._rule(edge.span)
        match edge.kind:
            case "output":
                # An llm output and a routed tool result match the same way: by type, then guard.
                assert edge.type is not None
                event, value = (
                    ("ToolResult", "result") if step.kind == "tool" else ("ModelOutput", "output")
                )
                self.imports.add(event)
                cls = self._output_class(edge.type)
                guard = None
                if edge.guard is not None:
                    guard = GuardCompiler(self.types, edge.type, value, self.names).compile(
                        edge.guard
                    )
                return CaseView(
                    f"{event}({value}={cls}() as {value})",
                    guard,
                    f"AGENT.move(state, event, {target}, {value})",
                    rule,
                )
            case "next" if isinstance(step, n.ToolStep):
                self.imports.add("ToolResult")
                classes = " | ".join(f"{self._output_class(o.text)}()" for o in step.outputs)
                return CaseView(
                    f"ToolResult(result={classes} as result)",
                    None,
                    f"AGENT.move(state, event, {target}, result)",
                    rule,
                )
            case "next" if isinstance(step, n.WaitStep):
                # Only an event of the type it waits for moves it; `send` checked the shape.
                self.imports.add("Signalled")
                cls = self._output_class(step.event.text)
                return CaseView(
                    f"Signalled(value={cls}() as signal)",
                    None,
                    f"AGENT.move(state, event, {target}, signal)",
                    rule,
                )
            case "next" if isinstance(step, n.AgentStep):
                # The child's final value, already validated against the output type.
                self.imports.add("ChildEnded")
                cls = self._output_class(step.output.text)
                return CaseView(
                    f"ChildEnded(value={cls}() as result)",
                    None,
                    f"AGENT.move(state, event, {target}, result)",
                    rule,
                )
            case "next" | "timeout" if isinstance(step, n.SleepStep | n.WaitStep):
                # The timer ran out: the value that arrived at the step goes on.
                self.imports.add("TimerFired")
                return CaseView(
                    "TimerFired()", None, f"AGENT.move(state, event, {target}, state.value)", rule
                )
            case "next":
                self.imports.add("Answered")
                return CaseView(
                    "Answered(answer=answer)",
                    None,
                    f"AGENT.move(state, event, {target}, answer)",
                    rule,
                )
            case "error":
                self.imports.add("StepFailed")
                return CaseView(
                    "StepFailed()", None, f"AGENT.fail(state, event, on_error={target})", rule
                )
            case "approved":
                self.imports.add("Approved")
                return CaseView(
                    "Approved()", None, f"AGENT.move(state, event, {target}, state.value)", rule
                )
            case "rejected":
                self.imports.add("Rejected")
                return CaseView(
                    "Rejected()", None, f"AGENT.move(state, event, {target}, state.value)", rule
                )
        return None  # escalation edges are AgentSpec's business, not the state's

    def _approval_guard(self, step: n.ToolStep, requires: n.RequiresApproval) -> ApprovalGuardView:
        input_type = step.input.text if step.input else None
        annotation = self._output_class(input_type) if input_type else "object"
        expression = "True"
        if requires.guard is not None:
            expression = GuardCompiler(self.types, input_type, "value", self.names).compile(
                requires.guard
            )
        line = requires.span.line
        text = self.lines[line - 1].strip() if 0 < line <= len(self.lines) else "requires approval"
        return ApprovalGuardView(
            function=function_name(step.name.text, "needs_approval"),
            annotation=annotation,
            expression=expression,
            origin=_comment_lines(f"{self.source_name}:{line}: {text}"),
        )

    # -- AGENT ---------------------------------------------------------------

    def _spec(self) -> str:
        program = self.program
        agent = program.agent
        types = ", ".join(f"{py_str(name)}: {self.names.classes[name]}" for name in self.types)
        states = []
        for name, step in program.steps.items():
            arguments = [py_str(step.kind), f"line={step.span.line}"]
            if step.input is not None:
                arguments.append(f"input={py_str(step.input.text)}")
            match step:
                case n.LlmStep():
                    outputs = ", ".join(py_str(o.text) for o in step.outputs)
                    arguments.append(f"outputs=({outputs},)")
                    if step.prompt:
                        arguments.append(f"prompt={py_str(step.prompt.value)}")
                    checks = [v.function.value for v in step.validators]
                    checks += ["judge"] if step.judge is not None else []
                    if checks:
                        arguments.append(f"checks=({''.join(f'{py_str(c)}, ' for c in checks)})")
                    if step.judge is not None:
                        arguments.append(f"judge={py_str(step.judge.prompt.value)}")
                case n.ToolStep():
                    arguments.append(f"output={py_str(step.outputs[0].text)}")
                    if len(step.outputs) > 1:
                        outputs = ", ".join(py_str(o.text) for o in step.outputs)
                        arguments.append(f"outputs=({outputs})")
                    arguments.append(f"function={py_str(step.function.value)}")
                    if step.requires_approval is not None:
                        arguments.append(
                            f"requires_approval={function_name(name, 'needs_approval')}"
                        )
                case n.HumanStep():
                    arguments.append(f"output={py_str(n.ANSWER_TYPE)}")
                case n.WaitStep():
                    arguments.append(f"output={py_str(step.event.text)}")
                    if step.timeout is not None:
                        arguments.append(f"seconds={step.timeout.duration.seconds!r}")
                case n.SleepStep(duration=n.Duration() as duration):
                    arguments.append(f"seconds={duration.seconds!r}")
                case n.AgentStep():
                    arguments.append(f"output={py_str(step.output.text)}")
                    arguments.append(f"function={py_str(step.file.value)}")
            states.append(f"{py_str(name)}: StateSpec({', '.join(arguments)})")
        edges = []
        for edge in program.edges():
            arguments = [py_str(edge.source), py_str(edge.target), py_str(edge.kind)]
            if edge.type:
                arguments.append(f"type={py_str(edge.type)}")
            if edge.guard is not None:
                arguments.append(f"guard={py_str(guard_text(edge.guard))}")
            edges.append(f"EdgeSpec({', '.join(arguments)})")
        settings = [
            f"name={py_str(program.name)}",
            f"description={py_str(agent.description) if agent.description else None}",
            f"source={py_str(self.source_name)}",
            f"start={py_str(program.start)}",
            f"input_type={self._input_annotation()}",
            f"types={{{types}}}",
            "states={" + ", ".join(states) + ",}",
            "edges=(" + "".join(f"{edge}, " for edge in edges) + ")",  # `()` when none
        ]
        if agent.max_steps:
            settings.append(f"max_steps={int(agent.max_steps.limit.value)}")
            if agent.max_steps.target:
                settings.append(f"on_max_steps={py_str(agent.max_steps.target.text)}")
        if agent.max_errors:
            settings.append(f"max_errors={int(agent.max_errors.limit.value)}")
            if agent.max_errors.target:
                settings.append(f"on_max_errors={py_str(agent.max_errors.target.text)}")
        if agent.context is not None:
            settings.append(f"context={self._context(agent.context)}")
        if agent.max_cost:
            settings.append(f"max_cost={float(agent.max_cost.limit.value)!r}")
            if agent.max_cost.target:
                settings.append(f"on_max_cost={py_str(agent.max_cost.target.text)}")
        if agent.max_tokens:
            settings.append(f"max_tokens={int(agent.max_tokens.limit.value)}")
            if agent.max_tokens.target:
                settings.append(f"on_max_tokens={py_str(agent.max_tokens.target.text)}")
        return "AgentSpec(" + ", ".join(settings) + ",)"

    def _context(self, context: n.ContextDecl) -> str:
        self.imports.add("ContextSpec")
        arguments = []
        if context.format is not None:
            arguments.append(f"format={py_str(context.format.text)}")
        if context.keep_last is not None:
            arguments.append(f"keep_last={int(context.keep_last.value)}")
        if context.drop_resolved_errors:
            arguments.append("drop_resolved_errors=True")
        if context.budget_tokens is not None:
            arguments.append(f"budget_tokens={int(context.budget_tokens.value)}")
        if context.renders:
            renders = ", ".join(
                f"{py_str(r.event.text)}: {py_str(r.template.value)}" for r in context.renders
            )
            arguments.append(f"renders={{{renders}}}")
        return f"ContextSpec({', '.join(arguments)})"


_PUBLIC_FUNCTIONS = ("initial_state", "next_action", "reduce", "replay")


def _isort_order(names: list[str]) -> list[str]:
    """The order ruff's RUF022 expects of `__all__` (its "isort-style" sort): CONSTANTS
    (upper case, more than one character: `A` is a class), Classes, then the rest, each
    group in natural order (`T2` before `T10`)."""

    def key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
        group = 0 if len(name) > 1 and name.isupper() else 1 if name[:1].isupper() else 2
        natural = [
            (0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", name)
            if part
        ]
        return group, natural

    return sorted(names, key=key)


def _comment_lines(text: str) -> list[str]:
    """A source line restated as comment lines that fit the line length."""
    return textwrap.wrap(comment(text), width=96, subsequent_indent="  ") or [""]


def _has_float(expr: n.TypeExpr) -> bool:
    """A field type that holds a float anywhere (`float?`, `list[float]`, a map's values)."""
    match expr:
        case n.NamedType(name=name):
            return name == "float"
        case n.OptionalType(inner=inner):
            return _has_float(inner)
        case n.ListType(item=item):
            return _has_float(item)
        case n.MapType(value=value):
            return _has_float(value)
    return False
