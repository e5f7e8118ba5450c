"""Write docs/diagnostics.md from the invalid programs in tests/invalid/.

`python -m docs.make_diagnostics` (or `--check`).

Each code's section shows the program of `tests/invalid/<CODE>_*.agent` (its
`# error: ...` expectation comments left out), the diagnostic the compiler really
prints for it, and how to fix it. The rendered output is never written by hand: the
test in tests/test_checks_docs.py regenerates the page and fails when it is stale.

    python -m docs.make_diagnostics           write docs/diagnostics.md
    python -m docs.make_diagnostics --check   exit 1 when docs/diagnostics.md is stale
"""

from __future__ import annotations

import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from twelvefold.compiler import compile_file, compile_text
from twelvefold.compiler.api import project_settings
from twelvefold.compiler.diagnostics import render
from twelvefold.compiler.prompts import PromptDirectory

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "invalid"
PAGE = ROOT / "docs" / "diagnostics.md"
EXPECTATION = re.compile(r"\s*# (error|warning|note): [EW]\d{3}.*$")


@dataclass(frozen=True)
class Entry:
    title: str
    why: str
    fix: str
    file: tuple[str, bytes | Path] | None = None
    """For codes about the file itself rather than its text (no tests/invalid/ program can
    show them): the name shown and the bytes of the file, or a path to check as it is.
    The CLI tests in tests/test_cli_input.py cover these codes."""


FAMILIES = {
    "E0": "Syntax",
    "E1": "Names and settings",
    "W1": "Names and settings",
    "E2": "Routing and guards",
    "W2": "Routing and guards",
    "E3": "Reachability",
    "W3": "Reachability",
    "E4": "Type flow",
    "E5": "Approval dominance",
    "W5": "Approval dominance",
    "E6": "Bounded loops",
    "W6": "Bounded loops",
    "E7": "Templates",
    "W8": "Size",
    "W9": "Unused declarations",
}

ENTRIES: dict[str, Entry] = {
    "E001": Entry(
        "unexpected token",
        "The parser met a word or symbol that cannot come next. The message names the block "
        "that is still open and what could come instead.",
        "Write what the label expects; transitions are written `->`, durations need a unit.",
    ),
    "E002": Entry(
        "unexpected character or unclosed string",
        'A character that no token starts with, or a string whose closing `"` is missing. '
        "Strings are one line long.",
        "Close the string on its line (write a newline as `\\n`), or remove the character.",
    ),
    "E003": Entry(
        "the file ends inside a block",
        "A `{` was never closed, or the last declaration is cut short.",
        "Close the block named in the message with `}`.",
    ),
    "E004": Entry(
        "invalid escape in a string",
        "Strings use JSON's escapes; `\\o` and friends are not escapes.",
        "Write a backslash as `\\\\`, or use a forward slash in paths.",
    ),
    "E010": Entry(
        "a control character written as it is in a string",
        "A TAB, an ESC or another control character (U+0000 to U+001F) typed into a string "
        "is invisible in an editor and not allowed in a JSON string, which .agent strings "
        "are. The caret is at the character.",
        "Write it as its escape: `\\t` for a tab, `\\u001b` for an ESC (or remove it).",
    ),
    "E006": Entry(
        "a setting is given twice",
        "A single-valued setting (`prompt`, `next`, `start`, ...) appears twice in one block. "
        "The first one would win, silently.",
        "Keep one of them.",
    ),
    "E005": Entry(
        "a character a string may not hold",
        "A string decodes to NUL (`\\u0000`) or to half of a surrogate pair on its own "
        "(`\\ud800`). Neither can reach a file path, a schema or a generated module intact.",
        "Remove it, or write the character itself (or both halves of its pair).",
    ),
    "E007": Entry(
        "the file is not UTF-8 text",
        "A `.agent` file is UTF-8 text (a leading byte-order mark is fine). The position is "
        "that of the first byte that is not.",
        "Save the file as UTF-8.",
        file=("latin1.agent", b"agent caf\xe9 { start done }\nfinal done\n"),
    ),
    "E008": Entry(
        "the file cannot be read",
        "The input is not a regular file (a folder, a FIFO, a device such as `/dev/zero`), "
        "is larger than 1 MiB, or cannot be opened. It is refused without being read.",
        "Give the path of the `.agent` file itself; split an agent that large.",
        file=("/dev/zero", Path("/dev/zero")),
    ),
    "E009": Entry(
        "over a limit of the language",
        "A name longer than 128 characters, a string longer than 8,192, a number with more "
        "than 32 digits, a duration over a year (`366d`), or `not` / `list[` / `map[` nested "
        "more than 32 deep. The limits are far above any real agent and keep every stage "
        "fast and shallow (docs/language.md, Limits).",
        "Shorten it; name an inner type instead of nesting it; drop pairs of `not`.",
    ),
    "E101": Entry(
        "no agent",
        "Every `.agent` file declares exactly one agent: its name, input and start state.",
        'Start the file with `agent NAME "what it does" { start FIRST_STEP }`.',
    ),
    "E102": Entry(
        "declared twice",
        "Two types, two states, or an llm output listed twice, share a name. A secondary "
        "label points at the first declaration.",
        "Rename or remove one of them.",
    ),
    "E103": Entry(
        "a field declared twice",
        "A type has two fields with the same name.",
        "Rename or remove one of the fields.",
    ),
    "E104": Entry(
        "unknown state",
        "A transition, `start`, or `max_steps`/`max_errors` names a state that is not "
        "declared. Close names are suggested.",
        "Fix the spelling, or declare the state.",
    ),
    "E105": Entry(
        "unknown type",
        "A step's input or output, a field, or the agent's `input` names a type that is "
        "neither declared nor built in (`string int float bool Answer`).",
        "Fix the spelling, or declare the type.",
    ),
    "E106": Entry(
        "no start state",
        "The agent block does not say where a thread starts.",
        "Add `start STATE` to the agent block.",
    ),
    "E107": Entry(
        "a reserved word as a name",
        "Keywords are keywords only where the grammar expects them, so states and fields may be "
        "called `next`, `drop` or `input`. A type cannot be called `error` (`on error` is the "
        "error edge), `list` or `map` (type constructors).",
        "Choose another name.",
    ),
    "E108": Entry(
        "malformed `module:function`",
        'A tool names its Python function as `"package.module:function"`: dotted '
        "identifiers, a colon, an identifier. The compiler never imports it.",
        'Write the module path and the function, e.g. `"deploybot.tools:deploy_backend"`.',
    ),
    "E109": Entry(
        "not a whole number in range",
        "`max_steps`, `max_errors`, `keep last` and `budget` are positive whole numbers; "
        "`retries` and `retry` are whole numbers, 0 or more.",
        "Write a whole number in range.",
    ),
    "E110": Entry(
        "temperature out of range",
        "Model temperatures go from 0 to 2.",
        "Use a temperature between 0 and 2.",
    ),
    "E111": Entry(
        "unknown context format",
        "The context window renders as `xml` (the default), `yaml` or `json`.",
        "Use one of the three.",
    ),
    "E112": Entry(
        "`render` names nothing",
        'A `render NAME "template"` line in the context block names a step (its events) '
        "or an event kind (`started`, `model_output`, `tool_result`, `step_failed`, ...).",
        "Name an existing step or an event kind.",
    ),
    "E113": Entry(
        "llm output is not a record",
        "An llm step answers with one of the declared record types, so that the answer can "
        "be validated and routed. Built-in scalars and `Answer` are not model outputs. The "
        "same holds for the members of a tool's result that is a union or is routed by "
        "rules: the result's type is what picks the rule.",
        "Declare a record type holding the value and list it instead.",
    ),
    "E114": Entry(
        "a required setting is missing",
        "An llm step needs a `prompt`; a tool, a human step and a wait need `next`; an approval "
        "needs `on approved` and `on rejected`.",
        "Add the setting the message names.",
    ),
    "E115": Entry(
        "a type named like a built-in",
        "`string`, `int`, `float`, `bool` and `Answer` are built in; a declaration of the "
        "same name would shadow them.",
        "Choose another name.",
    ),
    "E116": Entry(
        "a second agent",
        "A file declares one agent; the compiler writes one module per agent file.",
        "Move the second agent to its own file.",
    ),
    "E117": Entry(
        "map key that is not a string",
        "Maps are JSON objects, so their keys are strings: `map[string, T]`.",
        "Use `map[string, T]`, or a list of records.",
    ),
    "E118": Entry(
        "a standard-library module as a tool or a validator",
        "A tool (or a `validate` check) is your own function. One that names a "
        "standard-library module "
        '(`"sys:exit"`, `"os:abort"`, `"code:interact"`; CPython\'s test modules too, '
        '`"test.support.os_helper:rmtree"`, `"_testcapi:fatal_error"`, which '
        "`sys.stdlib_module_names` leaves out) could end or take over the process, "
        "so the runtime refuses it and the check reports it, by the module's name alone "
        "(the compiler never imports a tool). So is a module Python or its tools treat "
        'specially, which no configuration allows: `"__main__:main"` is the program that is '
        "running (twelvefold itself), `__init__` a package's own module imported a second "
        "time, `__dunder__` names Python's own, `sitecustomize` and `usercustomize` run as "
        "Python starts, `conftest` under pytest, `setup` as a package's build script.",
        "Point the tool at your own function (which may call the library), or allow a "
        "standard-library module by name in the configuration: "
        '`[tool.twelvefold.tools] allow_stdlib = ["json"]`.',
    ),
    "E119": Entry(
        "a wait for something that is not a record",
        "`wait NAME for TYPE` pauses until an outside event of TYPE is delivered "
        "(`twelvefold send`, `Runtime.send`). The event is validated against TYPE, so TYPE "
        "is one of the file's record types; built-in scalars and `Answer` are not events.",
        "Declare a record type for the event and wait for it.",
    ),
    "E120": Entry(
        "a timer of no length",
        "A `sleep` lasts its duration and a wait's `timeout D -> STATE` fires after D; a "
        "duration of zero would fire at the first `twelvefold expire`, which is surely not "
        "what was meant. So would an approval's or a human's `timeout` (an approval nobody "
        "could ever give), and a tool's `timeout 0s` fails every call.",
        "Give a duration longer than zero (`10m`, `2h`, `3d`).",
    ),
    "E121": Entry(
        "a cost budget that is not an amount",
        "`max_cost` is the most, in US dollars, a thread's model calls may spend before it "
        "goes to the budget's target; zero or less would stop it before its first call.",
        "Give an amount above zero, with cents if you like: `max_cost 2.50 -> escalate`.",
    ),
    "E122": Entry(
        "an agent's name that makes a module file Python cannot import or treats specially",
        "The agent's name is its module's file name (`twelvefold compile` writes `NAME.py`). "
        "A Python keyword makes a file no import can load (`class.py`); a name Python, "
        "pytest or packaging tools treat specially makes a file with side effects: "
        "`__init__.py` makes its folder a package, `__main__.py` is what `python -m` runs, "
        "`sitecustomize.py` and `usercustomize.py` run as Python starts, `conftest.py` under "
        "pytest, `setup.py` as a build script; a `__dunder__` name is Python's own. (A name "
        "that shadows a standard-library module, `agent json`, is written `json_agent.py`.)",
        "Rename the agent: `agent support_agent`, not `agent class` or `agent setup`.",
    ),
    "E123": Entry(
        "a type whose values nest too deep",
        "A declared type's values nest at most 16 levels: each record and each `list[` or "
        "`map[` inside one is a level (docs/language.md, Limits). A longer chain of records "
        "(`type T0 { next: T1? }`, `type T1 { next: T2? }`, ...) broke later: the schema sent "
        "with every model call and the property tests ran out of Python's stack. The message "
        "names the deepest chain; a recursive type is not deep by itself. A type imported "
        "from another file that is too deep by itself is reported at the `import` that "
        "leads to it, as other problems of imported files are, and the message ends with "
        "where it is declared, as in ``(`D0` is declared at linked/deep_types.agent:2:6)``: "
        "fix it there. "
        "A type of this file that an imported one takes past the limit is reported here.",
        "Flatten the chain: move an inner type's fields into the type that holds it, or keep "
        "an inner value apart (an id, or a step of its own).",
    ),
    "E124": Entry(
        "a type without a finite value",
        "A record whose required fields lead back to it (`type Node { next: Node }`, or two "
        "types that each require the other) has no value that ends: no JSON the model "
        "returns, no input and no tool result could ever be one, so every step producing it "
        "fails at run time (and `twelvefold test` could generate none). An optional field, a "
        "list or a map may end there (null, empty), so a recursive type with one is fine "
        "(`type Tree { children: list[Tree], parent: Tree? }`).",
        "Let the chain end: make the field that leads back optional (`next: Node?`) or a "
        "list (`next: list[Node]`).",
    ),
    "E130": Entry(
        "an imported file or a sub-agent's file cannot be read",
        '`import "FILE"` and `agent NAME(IN) -> OUT = "FILE"` name a .agent file relative '
        "to the folder of the file that names it; the checker reads it.",
        "Name the file as it is relative to this file's folder.",
    ),
    "E131": Entry(
        "an imported file holds more than types",
        "An imported file shares type declarations between agents; an agent or a step in "
        "it would mean something else in every file that imports it. It may import other "
        "files of types (each path relative to its own folder); a problem in one of those is "
        "reported at the `import` that leads to it, naming the file.",
        "Keep only `type` declarations (and `import`s of other files of types) in a file "
        "other agents import.",
    ),
    "E132": Entry(
        "a sub-agent's file does not compile",
        "A sub-agent runs as its own thread with the compiled child agent, so the child must "
        "compile; the message names the child's first error.",
        "Run `twelvefold check CHILD.agent` and fix what it reports.",
    ),
    "E133": Entry(
        "the types at a sub-agent's boundary differ",
        "The child agent must take the step's input type (its `input`) and finish with the "
        "step's output type (a `final NAME(OUT)` step), each declared alike in both files: "
        "the same name, the same fields, recursively.",
        "Put the shared types in one file and `import` it in both agents.",
    ),
    "E134": Entry(
        "agents that call each other in a cycle, or nest too deep",
        "An agent that reaches itself through its sub-agents would start children forever. "
        "Sub-agents may also nest at most 16 levels deep (each level is compiled with the "
        "parent); a deeper chain is reported with the same code.",
        "Let the child return a value and the parent decide what to do next.",
    ),
    "E135": Entry(
        "a sleep until something that is not a time",
        "`sleep NAME(IN) until FIELD` ends at the time FIELD holds: ISO 8601 text "
        "(`2026-12-01T09:00:00Z`; UTC when it names no zone) in a `string` field of the "
        "step's declared input type. A value that is not such a time ends the sleep at the "
        "first `twelvefold expire`.",
        "Declare the input type and name one of its `string` fields.",
    ),
    "E136": Entry(
        "imports that lead back to a file on the way, or nest too deep",
        "An imported file may import others, and those others, down the line; a file that "
        "imports itself through that chain would never be read to the end, so the cycle is "
        "reported at the `import` that leads into it, naming each file in it. Imports may "
        "also nest at most 16 files deep; a deeper chain is reported with the same code.",
        "Move the types both files need into a third file that imports nothing, and import "
        "that one from each.",
    ),
    "E201": Entry(
        "an output type is never routed",
        "An llm step lists a type among its outputs but no `on TYPE` rule routes it: the "
        "model could answer with it and the thread would have nowhere to go. The same holds "
        "for a tool that routes its result by rules: each member of its result union needs "
        "a rule.",
        "Add `on TYPE -> STATE`, or remove the type from the outputs.",
    ),
    "E202": Entry(
        "every rule for a type has a guard",
        "When none of the guards holds, the value has nowhere to go.",
        "End the type's rules with one that has no guard.",
    ),
    "E203": Entry(
        "a rule for a type the step cannot produce",
        "`on TYPE` names a type that is not among the step's outputs, so it never fires.",
        "Add the type to the outputs, or remove the rule.",
    ),
    "E204": Entry(
        "unknown field in a guard",
        "A guard reads a field the routed type (or the tool's input) does not have; nested "
        "paths are followed through records. Close names are suggested.",
        "Fix the field name.",
    ),
    "E205": Entry(
        "comparison of different types",
        "Guards compare strings with strings, numbers with numbers and bools with bools; "
        "lists, maps and records are not compared, and bools have no order.",
        "Compare the field with a value of its own type.",
    ),
    "E206": Entry(
        "a literal outside a literal union",
        "The field is a union of string literals and the value is none of them, so the "
        "comparison is constant. Usually a typo.",
        "Use one of the union's members.",
    ),
    "E207": Entry(
        "misuse of null",
        "Only optional fields (`T?`) can be null, and only `== null` / `!= null` test for "
        "it; every other comparison with a null field is false.",
        "Compare optional fields with `== null` / `!= null`; drop null tests on required ones.",
    ),
    "E208": Entry(
        "a condition that is not a bool",
        "A bare operand as a condition (`if urgent`) must be a `bool` field or literal.",
        'Compare the value instead, e.g. `if note != null` or `if name == "x"`.',
    ),
    "W119": Entry(
        "checks before dispatch without retries",
        "An llm step names `validate` functions or a `judge` but has no `retries`: the first "
        "refusal fails the step (and its `on error` decides), so the model never sees the "
        "reason and never gets to fix its output.",
        "Add `retries N` to the step: each refusal goes back to the model with its reason and "
        "uses one retry. Keep it at zero only if failing at once is what you want.",
    ),
    "W209": Entry(
        "a rule that never fires",
        "Rules are tried in order; after a rule without a guard, later rules for the same "
        "type are never reached. A guarded rule never fires either when no value passes its "
        "guard while failing every earlier guard for the type; literal-union and bool fields "
        "are decided exactly, as for approval dominance (a state only such rules lead to is "
        "unreachable, W301).",
        "Move the rule above the unguarded one, fix its guard, or remove it.",
    ),
    "E210": Entry(
        "a tool with both `next` and rules",
        "A tool's result goes on either by `next STATE` (every result the same way) or by "
        "`on TYPE [if GUARD] -> STATE` rules, as an llm step's output does; with both, a reader "
        "could not tell which one a result takes.",
        "Replace `next` with a last rule without a guard for the type.",
    ),
    "W301": Entry(
        "unreachable state",
        "No path from `start` leads to this state (the `max_errors`/`max_steps` targets "
        "count as reachable from every step that can fail or act), though some other "
        "unreachable state does.",
        "Route a reachable state to it, or remove it.",
    ),
    "E302": Entry(
        "a thread can never finish",
        "From this state no sequence of transitions reaches a `final` state (running out "
        "of `max_steps` does not count as finishing).",
        "Give the state, or one it leads to, a way to a final state.",
    ),
    "E303": Entry(
        "no final state",
        "Without a `final` state no thread can finish.",
        "Add a `final` state and route to it.",
    ),
    "E401": Entry(
        "a value of the wrong type arrives",
        "A step with a declared input receives a value of another type along this edge. "
        "llm rules carry their type, a tool's `next` its output, a human's `next` an "
        "`Answer`; errors, rejections, approvals and the ceilings pass the incoming value "
        "through unchanged; the start state receives the agent's `input`.",
        "Route only values of the declared type there, or drop the step's input type so it "
        "accepts anything.",
    ),
    "E403": Entry(
        "an `ask` reads an unknown field",
        "An approval's or human step's `ask` template reads the fields of its incoming "
        "value, nested paths included; a step without a declared input has no fields. "
        "Reads through a loop over a list (`{% for i in items %}{{ i.name }}`) and a "
        "literal index (`{{ items[0].name }}`) are fields of the list's item type; a loop "
        "over a map gives its keys (strings), `.values()` and the second name of "
        "`.items()` its values.",
        "Fix the field name, or declare the step's input type.",
    ),
    "E501": Entry(
        "approval bypassed",
        "A tool marked `requires approval [if GUARD]` is entered along an edge that is not "
        "an approval's `on approved`, and GUARD can hold for the value it carries. An llm "
        "rule carries its guard and the negation of the earlier guards for the same type; "
        "literal-union and bool fields are decided exactly, other fields are assumed to "
        "hold. `on rejected` and `on error` edges never count as approval.",
        "Route those values through an approval step whose `on approved` leads to the tool.",
    ),
    "E502": Entry(
        "a missing value skips the approval",
        "The condition of `requires approval if GUARD` is false when an optional field it "
        "reads is null, while some value of that field makes it true: a model that leaves "
        "the field out gets past the person. A guard that tests the field for null itself "
        "(`== null`, `!= null`) says what a missing value means and is not reported.",
        "Ask for approval when the value is missing (`amount == null or amount > 1000`), or "
        "say on purpose that it needs none (`amount != null and amount > 1000`).",
    ),
    "E503": Entry(
        "an approval that shows nothing",
        "An approval whose `on approved` enters a tool marked `requires approval` declares "
        "no input, so its `ask` cannot show the value the tool will run with: the person "
        "approves without seeing it.",
        "Declare the tool's input type on the approval and show its fields in the `ask`.",
    ),
    "E504": Entry(
        "the model decides its own approval",
        "A guard that decides whether a tool marked `requires approval` is reached without an "
        "`on approved` edge (its `requires approval if`, or a routing rule on a path into it) "
        "reads a field of the model's output that restates a fact a tool established "
        "earlier: a field of the same name and kind as one of the result of a tool that can "
        "run before. The model copied it, and a model that misquotes it (by mistake, or "
        "because a customer's email told it to) skips the approval while the approval proof "
        "still passes. A guard choosing between two approvals, or between an approval and a "
        "person, is not reported; nor is a guard on the action's own argument that the model "
        "chooses (deploybot's `env`), which restates no tool's fact. An intended case is "
        "acknowledged with `# trusts model: FIELD` on the guard's line: it is then a note. "
        "`twelvefold check --explain-approvals` lists every value that decides each approval "
        "and where it comes from.",
        'Route on the tool\'s result (`on Customer if tier == "enterprise" -> ...` in the '
        "tool), where the value is the tool's own; or acknowledge it with "
        "`# trusts model: FIELD`.",
    ),
    "W510": Entry(
        "approvers group not defined",
        "The project has a configuration (the nearest `twelvefold.toml`, or "
        "`[tool.twelvefold]` in `pyproject.toml`, at or above the .agent file) and it does "
        "not define this `approvers` group. The runtime cannot enforce a group it does not "
        "know: it accepts anyone's decision and says loudly that the group is not enforced.",
        "Define the group under `[approvers]` (`[tool.twelvefold.approvers]` in "
        "pyproject.toml), or fix its name.",
    ),
    "E601": Entry(
        "a loop of tools only",
        "A cycle that passes through no llm, approval or human state spins without anyone "
        "deciding whether to go round again.",
        "Send one of its steps back to a model or a person.",
    ),
    "E602": Entry(
        "a loop without `max_steps`",
        "An agent whose graph has a cycle must bound the steps a thread can take.",
        "Add `max_steps N [-> STATE]` to the agent block.",
    ),
    "E604": Entry(
        "a budget that goes to an llm step",
        "Once a thread has spent its `max_cost` or `max_tokens`, the reducer promises that no "
        "model call starts: the thread goes to the budget's target instead. An `llm` step as "
        "the target would call the model at once.",
        "Send the thread to a person (`human` or `approval`), a tool or a final state, or "
        "leave the target out (`max_cost 2.50`) to fail the thread when the budget is spent.",
    ),
    "W605": Entry(
        "a budget on an agent that calls no model",
        "Only `llm` steps (and their judges) spend `max_cost` and `max_tokens`; an agent "
        "without one never spends them.",
        "Remove the budget, or bound the agent's steps with `max_steps`.",
    ),
    "E603": Entry(
        "an error loop without `max_errors`",
        "An `on error` edge on a cycle retries a failing step forever.",
        "Add `max_errors N -> STATE` to the agent block.",
    ),
    "E701": Entry(
        "prompt template not found",
        "The template is looked up under the prompts directory (`--prompts DIR`, or the "
        "nearest `prompts/` folder). Close file names are suggested. A name the runtime "
        "would refuse is told why: an absolute path, a `..` part, a link to something "
        'outside the prompts directory, a folder (`prompt "link.j2" is a link to '
        "something outside the prompts directory`).",
        "Fix the path, or create the template; put a template that lives elsewhere in the "
        "prompts directory itself (a link that stays inside it is fine).",
    ),
    "E702": Entry(
        "template syntax error",
        "A prompt, `render` or `ask` template is not valid Jinja2, or is nested more deeply "
        "than Jinja2 and Python can compile (about 50 levels of blocks, brackets, filters or "
        "operators; about 20 nested `{% for %}`). The message gives the line inside the "
        "template; the caret points at the step that uses it.",
        "Fix the template; close every `{{ }}`, `{% if %}` and `{% for %}`. A template nested "
        "too deeply: compute the value in a tool or a deterministic step, or move an inner "
        "part into a macro or an included file.",
    ),
    "E703": Entry(
        "unknown variable in a template",
        "An llm prompt can use `context`, `events`, `input`, `last`, `agent` and `step`; a "
        "`render` template `event`, `kind`, `step`, `value` and `agent`; plus the names the "
        "template sets itself before it reads them, on every path: a name set on each branch "
        "of an `{% if %}` with an `{% else %}` is known after it; one set on some branches "
        "only is E703 too, since Jinja2 leaves it undefined when no such branch runs, "
        "unless every read of it is guarded: `name is defined` itself, `name | default(...)`, "
        "or a read where a condition has shown it is set, in an `{% if %}` or `{% elif %}`, "
        "an inline `a if test else b` or the right side of `and` and `or` (Jinja2 reads the "
        "right side of `A and B` only when A is true, of `A or B` only when A is false): "
        '`{{ name if name is defined else "" }}`, `{% if name is defined and name.a %}`, '
        "`name is not defined or name.a`. A name the template sets nowhere is E703 even "
        "behind a guard (a misspelt guard would hide its block on every run), except in a "
        "file another template loads (`{% include %}`, `{% import %}`, `{% extends %}`), "
        "which the loading file may pass it or not.",
        "Use one of the provided variables (the incoming value is `last`), set the name "
        "before the `{% if %}` or on every branch of it, or read it through `| default(...)`.",
    ),
    "E704": Entry(
        "a template reads Python internals",
        "Templates render in Jinja2's sandbox, which refuses attributes that start with `_` "
        "(`__class__`, `__globals__`): they reach Python's internals, never the data a "
        "template is given, whether written `x.__class__` or named by a string "
        "(`x | attr('__class__')`, `map(attribute='__class__')`, `'{0.__class__}'.format(x)`). "
        "`check` reports them before a run rather than failing it. A field the file declares "
        'with a name that starts with `_` is data: a record answers `x._id`, `x["_id"]` '
        "and `map(attribute='_id')` with it, but not `x | attr('_id')` (`attr` reads "
        "attributes only), nor `x.__init__` for a field named `__init__` (every record has "
        "that attribute).",
        "Read the value's fields; a template cannot run code. Read a field whose name starts "
        'with `_` with a key, `x["_id"]`, as the help says.',
    ),
    "E705": Entry(
        "a template load that cannot be checked",
        "`{% include %}`, `{% extends %}` and `{% import %}` are checked like the template "
        "itself, so they must name a file inside the prompts folder with a string literal; "
        "an `ask` string loads no files.",
        "Write the file name as a literal, or put the text in the `ask` itself.",
    ),
    "E706": Entry(
        "a prompt that cannot be read",
        "The template file exists but is not UTF-8 text, is larger than 1 MiB, or cannot be "
        "opened. Found while checking, not when a thread first reaches the step.",
        "Save the template as UTF-8 text.",
    ),
    "E707": Entry(
        "a template that loads itself",
        "A prompt, judge or `render` template that includes, extends or imports itself, "
        "directly or through the files it loads, would never finish rendering: Jinja2 "
        "recurses until Python's stack runs out. The message shows the cycle.",
        "Break the cycle; to render nested data, use a recursive macro or "
        "`{% for … recursive %}` inside one template.",
    ),
    "E708": Entry(
        "a macro that calls itself on every path",
        "A macro that calls itself (directly or through other macros of the template) "
        "outside any `{% if %}`, `{% for %}`, `… if … else …`, `and` or `or` never "
        "finishes, whatever it is given: rendering would fail when the step runs, once "
        "Python's stack or the template's step budget runs out. A macro that calls "
        "itself only under a condition is fine: that is how nested data is rendered. "
        "Here `endless_macro.j2` is `{% macro outline(section) %}- {{ section.title }}"
        "{{ outline(section) }}{% endmacro %}`.",
        "Call it again only where the recursion stops: under `{% if %}` for a value that "
        "has children, or in `{% for child in node.children %}` (an empty list ends it): "
        "`{% for child in section.children %}{{ outline(child) }}{% endfor %}`.",
    ),
    "E709": Entry(
        "a prompt reads a field its value does not have",
        "A prompt (and a judge prompt) reads `input`, the thread's input, of the agent's "
        "`input` type; `last`, the value the step is entered with, of every type that can "
        "arrive at the step; and, in a judge prompt, `output` of every output type of the "
        "step it judges. Each field it reads of them, nested paths, loop variables over a "
        "list and literal indexes included, must exist on every such type: a step entered "
        "with a `Draft` or a `Reply` can only read what both have. A read the template "
        'tests first (`last.tone is defined`, `last.tone | default("")`), a map\'s key '
        "(`last.by.alice`), an attribute of the value itself (`last.items`), and a path "
        "past a filter, a variable index or a `{% set %}` name are not checked. Here "
        "`unknown_field.j2` reads `{{ input.subjet }}` and, in "
        "`{% for line in input.lines %}`, `{{ line.txt }}`; `polish.j2` reads "
        "`{{ last.tone }}`.",
        "Fix the field name (the help suggests the closest), read a field every incoming "
        "type has, or test it first: `{% if last.tone is defined %}…{% endif %}`.",
    ),
    "W801": Entry(
        "too many states",
        "An agent with more than 12 states is probably two agents.",
        "Split off a part with its own input and result.",
    ),
    "W802": Entry(
        "a long path",
        "A path from `start` that visits more than 10 transitions without repeating a "
        "state suggests the agent does two jobs.",
        "Split the agent, or let one llm step decide more at once.",
    ),
    "W901": Entry(
        "unused type",
        "No step, field or agent input uses this type.",
        "Use it or remove it.",
    ),
    "W902": Entry(
        "unused state",
        "No transition, `start` or escalation leads to this state.",
        "Route a state to it, or remove it.",
    ),
}


def example_file(code: str) -> Path:
    found = sorted(INVALID.glob(f"{code}_*.agent"))
    if not found:
        raise SystemExit(f"no tests/invalid/{code}_*.agent for {code}")
    return found[0]


def strip_expectations(text: str) -> str:
    return "\n".join(EXPECTATION.sub("", line) for line in text.splitlines()) + "\n"


def file_section(code: str, entry: Entry) -> str:
    """A code about the file itself: the command and what it prints."""
    assert entry.file is not None
    shown, content = entry.file
    with tempfile.TemporaryDirectory() as folder:
        if isinstance(content, bytes):
            path = Path(folder) / shown
            path.write_bytes(content)
        else:
            path = content
        result = compile_file(path, display_path=shown, generate_code=False)
    rendered = [render(d, None) for d in result.diagnostics if d.code == code]
    if not rendered:
        raise SystemExit(f"{shown} does not report {code}")
    shown_output = f"```text\n$ twelvefold check {shown}\n" + "\n\n".join(rendered) + "\n```"
    return _section_text(code, entry, [shown_output], "Tested by `tests/test_cli_input.py`.")


def _section_text(code: str, entry: Entry, examples: list[str], source: str) -> str:
    return "\n".join(
        [f"### {code}: {entry.title}", "", entry.why, ""]
        + [line for example in examples for line in (example, "")]
        + [f"**Fix.** {entry.fix}", "", source, ""]
    )


def section(code: str, entry: Entry) -> str:
    if entry.file is not None:
        return file_section(code, entry)
    path = example_file(code)
    text = strip_expectations(path.read_text(encoding="utf-8"))
    result = compile_text(
        text,
        path.name,
        load_prompt=PromptDirectory(INVALID / "prompts"),
        generate_code=False,
        base_dir=path.parent,
        **project_settings(path)._asdict(),  # tests/invalid/twelvefold.toml
    )
    # A message may name a folder of this checkout: show it as the reader's checkout has it.
    shown = [render(d, text).replace(f"{ROOT}/", "") for d in result.diagnostics if d.code == code]
    if not shown:
        raise SystemExit(f"{path.name} does not report {code} once its comments are stripped")
    return _section_text(
        code,
        entry,
        [f"```agent\n{text.rstrip()}\n```", "```text\n" + "\n\n".join(shown) + "\n```"],
        f"Test program: `tests/invalid/{path.name}`.",
    )


def page() -> str:
    parts = [
        "# Diagnostics",
        "",
        "Every diagnostic twelvefold reports, with a program that triggers it, the output of",
        "`twelvefold check` for that program, and the fix. Errors (`E`) stop compilation;",
        "warnings (`W`) do not. The first line of each diagnostic is",
        "`path:line:col: error[CODE]: message`; `--format json` gives the same as data.",
        "With `--format json`, stdout is always one JSON list: a usage error (an unknown",
        "option, no file named; exit 2) or an output folder `compile` cannot write to (exit 1)",
        'is an entry of the same shape with the code `"usage"` and no position (line 0). A',
        "file that is missing or cannot be read (a folder, a FIFO) is E008, exit 1.",
        "In the text output, what comes from your files (a path, a name, a template's file",
        "name, a description, the source line) is printed escaped: a line break as `\\n`, a",
        "tab as `\\t`, any other control character or [hidden",
        "character](prompts-and-context.md#the-context-window) (an ANSI escape, a bidi",
        "override, a zero width space) as `\\uXXXX`, so no value can start a line of its own,",
        "drive the terminal or read differently from what it is. JSON keeps the raw value.",
        "A column (`col`, and `column` in JSON) counts characters from 1; the carets under",
        "the source line stand under the span as a terminal draws the line (a wide",
        "character such as `注` takes two columns, a combining accent none).",
        "",
        "This page is generated by `python -m docs.make_diagnostics` from the programs in",
        "`tests/invalid/`; a test fails when it is out of date.",
        "",
    ]
    family = ""
    for code in sorted(ENTRIES, key=lambda c: (c[1:], c)):
        name = FAMILIES[code[:2]]
        if name != family:
            family = name
            parts += [f"## {name}", ""]
        parts.append(section(code, ENTRIES[code]))
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = page()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print("docs/diagnostics.md is stale: run `python -m docs.make_diagnostics`")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
