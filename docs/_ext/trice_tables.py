"""Draw trice's state machines from the code's own transition tables.

``.. trice-transitions:: trice.ice._events.CONNECTION_TRANSITIONS`` imports the mapping and
renders it twice: as a table (state -> the states it may move to) and as a text diagram, a
spanning tree walked from the first state with every edge drawn once.  Two shapes of table are
understood::

    {state: frozenset({next_state, ...})}        # ICE connection, gathering and pair states
    {state: {event: next_state, ...}}            # the TURN allocation (labelled edges)

A state that every other state with somewhere to go may reach (``closed``) would clutter the
diagram, so it is drawn once in a note under the tree instead (the table still lists it).
No graphviz: the output is plain docutils nodes.

Options:
    ``:caption:`` text shown above the diagram.
    ``:no-table:`` / ``:no-diagram:`` leave one of the two out.
"""

from __future__ import annotations

import enum
import importlib
import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

__all__ = ["Edge", "TransitionsDirective", "edges_of", "render_table", "render_tree", "setup"]

#: (source, label or None, target), all as display names.
Edge = tuple[str, str | None, str]


def _name(value: object) -> str:
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _import(path: str) -> tuple[object, str | None]:
    """The object at dotted ``path`` (module attribute) and the file that defines it."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not a dotted path to a module attribute")
    module = importlib.import_module(module_name)
    try:
        value = getattr(module, attribute)
    except AttributeError:
        raise ValueError(f"module {module_name!r} has no attribute {attribute!r}") from None
    try:
        source = inspect.getsourcefile(module)
    except TypeError:
        source = None
    return value, source


def edges_of(table: Mapping[Any, Any]) -> tuple[list[str], list[Edge]]:
    """The states (in table order, then targets not listed as keys) and the edges of ``table``."""
    states: list[str] = [_name(state) for state in table]
    edges: list[Edge] = []
    for state, targets in table.items():
        if isinstance(targets, Mapping):
            pairs: Iterable[tuple[str | None, object]] = (
                (_name(event), target) for event, target in targets.items()
            )
        else:
            ordered = sorted(targets, key=lambda t: _order(table, t))
            pairs = ((None, target) for target in ordered)
        for label, target in pairs:
            edges.append((_name(state), label, _name(target)))
            if _name(target) not in states:
                states.append(_name(target))
    return states, edges


def _order(table: Mapping[Any, Any], state: object) -> int:
    keys = list(table)
    return keys.index(state) if state in keys else len(keys)


def universal_targets(states: list[str], edges: list[Edge]) -> list[str]:
    """Final states (no way out) reachable in one step from every other state that has a way
    out (at least three of them), such as ``closed``."""
    sources: dict[str, set[str]] = {}
    for source, _, target in edges:
        sources.setdefault(source, set()).add(target)
    found = []
    for candidate in states:
        if candidate in sources:
            continue
        others = [s for s in sources if s != candidate]
        if len(others) >= 3 and all(candidate in sources[s] for s in others):
            found.append(candidate)
    return found


def render_table(states: list[str], edges: list[Edge]) -> nodes.table:
    """A two-column table: each state and where it may go (with the event, when labelled)."""
    rows: list[tuple[str, str]] = []
    for state in states:
        targets = [
            f"{target} (on {label})" if label else target
            for source, label, target in edges
            if source == state
        ]
        rows.append((state, ", ".join(targets) if targets else "— (final)"))
    table = nodes.table(classes=["trice-transitions"])
    group = nodes.tgroup(cols=2)
    table += group
    group += nodes.colspec(colwidth=16)
    group += nodes.colspec(colwidth=50)
    head = nodes.thead()
    group += head
    head += _row(("state", "may move to"), literal=False)
    body = nodes.tbody()
    group += body
    for row in rows:
        body += _row(row, literal=True)
    return table


def _row(cells: tuple[str, str], *, literal: bool) -> nodes.row:
    row = nodes.row()
    for index, text in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        if literal and index == 0:
            paragraph += nodes.literal(text=text)
        else:
            paragraph += nodes.Text(text)
        entry += paragraph
        row += entry
    return row


def render_tree(states: list[str], edges: list[Edge], *, omit: Iterable[str] = ()) -> str:
    """A text diagram: depth-first from the first state, each edge drawn once; a state already
    drawn is shown as ``(↑ name)`` instead of being expanded again."""
    omitted = set(omit)
    out: dict[str, list[tuple[str | None, str]]] = {state: [] for state in states}
    for source, label, target in edges:
        if target not in omitted:
            out[source].append((label, target))
    lines: list[str] = []
    seen: set[str] = set()

    def walk(state: str, prefix: str) -> None:
        children = out[state]
        for index, (label, target) in enumerate(children):
            last = index == len(children) - 1
            arrow = f"─[{label}]─▶ " if label else "──▶ "
            branch = ("└" if last else "├") + arrow
            if target in seen:
                lines.append(f"{prefix}{branch}(↑ {target})")
                continue
            seen.add(target)
            lines.append(f"{prefix}{branch}{target}")
            walk(target, prefix + ("    " if last else "│   "))

    for root in states:
        if root in seen or root in omitted:
            continue
        seen.add(root)
        lines.append(root)
        walk(root, "")
    for state in sorted(omitted, key=states.index):
        lines.append("")
        lines.append(f"(and any state that is not final may also move to {state})")
    return "\n".join(lines)


class TransitionsDirective(SphinxDirective):
    """``.. trice-transitions:: dotted.path.TO_TABLE``"""

    required_arguments = 1
    has_content = False
    option_spec = {  # noqa: RUF012 (docutils reads this class attribute)
        "caption": directives.unchanged,
        "no-table": directives.flag,
        "no-diagram": directives.flag,
    }

    def run(self) -> list[nodes.Node]:
        path = self.arguments[0]
        try:
            table, source = _import(path)
        except (ImportError, ValueError) as exc:
            raise self.error(f"trice-transitions: cannot import {path}: {exc}") from None
        if not isinstance(table, Mapping):
            raise self.error(f"trice-transitions: {path} is not a mapping")
        if source:
            self.env.note_dependency(source)
        states, edges = edges_of(table)
        result: list[nodes.Node] = []
        if "no-table" not in self.options:
            result.append(render_table(states, edges))
        if "no-diagram" not in self.options:
            text = render_tree(states, edges, omit=universal_targets(states, edges))
            block = nodes.literal_block(text, text, classes=["trice-diagram"])
            block["language"] = "text"
            caption = self.options.get("caption")
            if caption:
                container = nodes.container(literal_block=True, classes=["literal-block-wrapper"])
                container += nodes.caption(caption, caption)
                container += block
                result.append(container)
            else:
                result.append(block)
        note = nodes.paragraph()
        note += nodes.Text("Generated from ")
        note += nodes.literal(text=path)
        note += nodes.Text(" (the code's own table)")
        if "no-diagram" not in self.options:
            note += nodes.Text("; in the diagram, ")
            note += nodes.literal(text="(↑ state)")
            note += nodes.Text(" is an edge back to a state drawn above")
        note += nodes.Text(".")
        result.append(note)
        return result


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("trice-transitions", TransitionsDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
