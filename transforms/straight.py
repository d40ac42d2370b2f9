"""Straight templates: those whose parsed form shows they cannot outgrow the alert they render. No I/O.

The render budget (:mod:`transforms.budget`) costs a few microseconds per render, for the
checks on every filter, call and output. Most templates Jinja renders need none of it:
``{{ group.groupLabels.values() | join(" ") }}: {{ annotations.summary | default(labels.alertname) }}``
runs each part once, on alert data (bounded at intake) and on constants written in the
rules file. :func:`is_straight` recognises such templates on the AST: only output, ``if``,
names, attribute and item lookups, literals, comparisons, tests, ``and`` / ``or`` / ``not``,
``~``, ``-``, ``/``, ``//``, the filters of :data:`FILTERS` and the methods of
:data:`METHODS` (arguments no longer than :data:`MAX_ARGUMENT` when written literally).
No loop, macro, assignment, ``*`` / ``**`` / ``+`` / ``%``, call of a global or filter
that multiplies: so each node runs once and makes at most a few times what it is given.
Anything else renders on the budget.
"""

from __future__ import annotations

from jinja2 import nodes

__all__ = ["FILTERS", "MAX_ARGUMENT", "METHODS", "is_straight"]

MAX_ARGUMENT = 64  # characters of a literal argument (a join separator, a replacement)

FILTERS = frozenset({
    "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "int", "items",
    "join", "last", "length", "list", "lower", "max", "min", "replace", "reverse", "round", "sort", "string",
    "striptags", "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "wordcount",
})
METHODS = frozenset({
    "capitalize", "count", "endswith", "find", "get", "index", "items", "keys", "lower", "lstrip", "rstrip",
    "split", "splitlines", "startswith", "strip", "title", "upper", "values",
})

# Nodes that run once and make no more than a few times what they are given.
_PLAIN = (
    nodes.Template, nodes.Output, nodes.TemplateData, nodes.If, nodes.Name, nodes.Getattr, nodes.Getitem,
    nodes.Slice, nodes.Concat, nodes.Compare, nodes.Operand, nodes.And, nodes.Or, nodes.Not, nodes.Neg,
    nodes.Pos, nodes.CondExpr, nodes.Test, nodes.Sub, nodes.Div, nodes.FloorDiv, nodes.List, nodes.Tuple,
    nodes.Dict, nodes.Pair, nodes.Keyword,
)


def _short(argument: nodes.Node) -> bool:
    """A literal argument is short; any other is checked as a node of its own."""
    return not isinstance(argument, nodes.Const) or len(str(argument.value)) <= MAX_ARGUMENT


def _straight_node(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Const):
        return True
    if isinstance(node, nodes.Filter):
        return (node.name in FILTERS and node.dyn_args is None and node.dyn_kwargs is None
                and not (node.name == "tojson" and (node.args or node.kwargs))  # an indent pads every line
                and all(_short(a) for a in (*node.args, *(k.value for k in node.kwargs))))
    if isinstance(node, nodes.Call):
        return (isinstance(node.node, nodes.Getattr) and node.node.attr in METHODS
                and node.dyn_args is None and node.dyn_kwargs is None
                and all(_short(a) for a in (*node.args, *(k.value for k in node.kwargs))))
    return isinstance(node, _PLAIN)


def is_straight(tree: nodes.Node) -> bool:
    """Whether ``tree`` (a parsed template, or one expression) and everything in it run straight."""
    return _straight_node(tree) and all(_straight_node(node) for node in tree.find_all(nodes.Node))
