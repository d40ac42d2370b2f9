"""Templates: constants, native single expressions, missing names, the sandbox, the fast path."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import RuleSet
from transforms.base import Alert, AlertEvent, Group
from transforms.template import RenderError, TemplateError, compile_template


@pytest.fixture
def event(make_alert: Callable[..., Alert], make_group: Callable[..., Group]) -> AlertEvent:
    alert = make_alert(
        labels={"alertname": "DiskFull", "instance": "db-1:9100", "items": "x"},
        annotations={"summary": "disk full"},
    )
    return AlertEvent(alert=alert, group=make_group(alert), vars={"host": "db-1", "n": 3})


def test_constant_is_not_jinja(event: AlertEvent) -> None:
    """A string without {{ or {% is returned as written, even with Jinja-looking text."""
    template = compile_template("100% {# not a comment #} }}")
    assert template.kind == "constant"
    assert template.render(event) == "100% {# not a comment #} }}"


def test_single_expression_keeps_native_type(event: AlertEvent) -> None:
    """'{{ labels }}' is the label map and '{{ vars.n }}' the int, not their string forms."""
    assert compile_template("{{ labels }}").render(event) == {
        "alertname": "DiskFull",
        "instance": "db-1:9100",
        "items": "x",
    }
    assert compile_template("{{ vars.n }}").render(event) == 3
    assert compile_template("{{ labels | length }}").render(event) == 3
    assert compile_template("{{ labels }}\n").render(event)["instance"] == "db-1:9100"


def test_anything_else_renders_to_str(event: AlertEvent) -> None:
    """Text around an expression, or two expressions, make a string."""
    assert compile_template("n={{ vars.n }}").render(event) == "n=3"
    assert compile_template(" {{ vars.n }}").render(event) == " 3"
    assert compile_template("{{ vars.n }}{{ vars.n }}").render(event) == "33"
    assert compile_template("{% if vars.n > 2 %}big{% endif %}").render(event) == "big"


def test_missing_names_render_empty(event: AlertEvent) -> None:
    """Missing keys and names give "" and work with default(); going through one is an error."""
    assert compile_template("{{ labels.nope }}").render(event) == ""
    assert compile_template("{{ nothing }}").render(event) == ""
    assert compile_template("[{{ annotations.nope }}]").render(event) == "[]"
    assert compile_template("{{ annotations.nope | default(labels.alertname) }}").render(event) == "DiskFull"
    assert (
        compile_template("{{ annotations.summary | default(labels.alertname) }}").render(event) == "disk full"
    )
    with pytest.raises(RenderError) as info:
        compile_template("{{ labels.nope.deeper }}").render(event)
    assert str(info.value) == "UndefinedError: 'dict object' has no attribute 'nope'"


def test_scope_names(event: AlertEvent) -> None:
    """alert and group expose the webhook's field names; absent 0.32+ fields are empty."""
    source = (
        "{{ alert.status }} {{ alert.fingerprint }} {{ alert.generatorURL }} {{ group.receiver }}"
        " {{ group.groupKey }} {{ group.externalURL }} [{{ group.notification_reason }}]"
        " {{ group.routeLabels }}"
    )
    assert compile_template(source).render(event) == (
        'firing 0123456789abcdef http://prom.example/graph?g0.expr=x pd {}/{team="pd"}:{alertname="DiskFull"}'
        " http://am.example:9093 [] {}"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ labels.__class__.__mro__[1].__subclasses__() }}",
        "x {{ vars.__class__ }}",
    ],
)
def test_sandbox_refuses_unsafe_attributes(event: AlertEvent, source: str) -> None:
    """Dunder access raises a SecurityError render failure instead of rendering ""."""
    with pytest.raises(RenderError) as info:
        compile_template(source).render(event)
    assert str(info.value).startswith("SecurityError: access to attribute '__class__' of ")


def test_sandbox_refuses_mutation(event: AlertEvent) -> None:
    """The immutable sandbox refuses methods that modify the alert's maps."""
    with pytest.raises(RenderError) as info:
        compile_template("{{ labels.update({'a': 'b'}) }}").render(event)
    assert str(info.value).startswith(
        "SecurityError: access to attribute 'update' of 'dict' object is unsafe"
    )
    assert "a" not in event.alert.labels


def test_syntax_error_at_compile() -> None:
    """A malformed template fails when it is compiled, not when an alert arrives."""
    with pytest.raises(TemplateError) as info:
        compile_template("{{ labels.instance ")
    assert str(info.value) == (
        "template syntax error in '{{ labels.instance ': unexpected end of template, expected 'end of print statement'."
    )


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("{{ labels.instance }}", "fast"),
        ("{{ labels['instance'] }}", "fast"),
        ("{{ vars.host }}", "fast"),
        ("{{ alert.generatorURL }}", "fast"),
        ("{{ group.commonLabels.team }}", "fast"),
        ("{{ labels }}", "fast"),
        ("{{ annotations.summary | default(labels.alertname) }} on {{ vars.host }}", "fast"),
        ("{{ labels.items }}", "jinja"),  # dict.items: Jinja returns the method
        ("{{ labels._x }}", "jinja"),
        ("{{ labels.instance | upper }}", "jinja"),
        ("{{ labels.instance ~ 'x' }}", "jinja"),
        ("{% if labels %}x{% endif %}", "jinja"),
    ],
)
def test_fast_path_is_chosen_from_the_ast(source: str, kind: str) -> None:
    """Plain paths, constants and default() take the fast path; everything else uses Jinja."""
    assert compile_template(source).kind == kind


def _outcome(source: str, fast: bool, event: AlertEvent) -> Any:
    try:
        return ("ok", compile_template(source, fast=fast).render(event))
    except RenderError as exc:
        return ("error", str(exc))


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.instance }}",
        "{{ labels['instance'] }}",
        "{{ labels.nope }}",
        "{{ labels.nope.deeper }}",
        "{{ labels.instance.deeper }}",
        "{{ labels }}",
        "{{ vars }}",
        "{{ vars.n }}",
        "n={{ vars.n }} h={{ vars.host }} x={{ vars.missing }}",
        "{{ alert }}",
        "{{ alert.labels.alertname }}",
        "{{ alert.startsAt }}",
        "{{ alert.nope }}",
        "{{ group.notification_reason }}",
        "{{ group.groupLabels }}",
        "{{ group.groupLabels.alertname }}",
        "{{ annotations.nope | default(labels.nope) }}",
        "{{ annotations.nope | d('fallback') }}",
        "{{ annotations.nope | default }}",
        "{{ 'x' | default(labels.nope.deeper) }}",  # Jinja evaluates an unused default() argument too
        "{{ labels.instance | default(labels.nope.deeper) }}",
        "{{ 'const' }}",
        "{{ 42 }}",
        "a {{ labels }} b",
    ],
)
def test_fast_path_equals_jinja(event: AlertEvent, source: str) -> None:
    """The fast path gives exactly Jinja's value or Jinja's error for every supported shape."""
    assert _outcome(source, True, event) == _outcome(source, False, event)


def test_fast_path_defers_to_jinja_for_non_dict_maps(
    make_alert: Callable[..., Alert], make_group: Callable[..., Group]
) -> None:
    """Label maps that are not plain dicts go through Jinja and still render correctly."""
    alert = make_alert()
    alert = Alert(
        status=alert.status,
        labels=MappingProxyType({"instance": "h:1"}),
        annotations=alert.annotations,
        starts_at=alert.starts_at,
        ends_at=alert.ends_at,
        generator_url=alert.generator_url,
        fingerprint=alert.fingerprint,
    )
    event = AlertEvent(alert=alert, group=make_group(alert))
    assert compile_template("{{ labels.instance }}").render(event) == "h:1"
    assert compile_template("at {{ labels.instance }}").render(event) == "at h:1"


def test_render_failure_falls_back_and_is_counted(
    make_alert: Callable[..., Alert], make_group: Callable[..., Group]
) -> None:
    """A failing template leaves the default in place and is reported as rule.field: message."""
    rules = RuleSet.from_text(
        "version: 1\n"
        "rules:\n"
        "  - name: text\n"
        "    set:\n"
        "      summary: '{{ labels.__class__ }}'\n"
        "      source: '{{ 1 / 0 }}'\n"
        "      component: ok\n"
    )
    alert = make_alert(labels={"alertname": "DiskFull", "instance": "a:9100"})
    result = rules.evaluate(make_group(alert))
    assert result.template_errors == (
        "text.summary: SecurityError: access to attribute '__class__' of 'dict' object is unsafe",
        "text.source: ZeroDivisionError: division by zero",
    )
    payload = result.events[0].body["payload"]
    assert (payload["summary"], payload["source"], payload["component"]) == ("DiskFull", "a:9100", "ok")


@pytest.mark.parametrize(
    "source",
    [
        "{{ labels.nope | default(vars.host) | default('z') }}",
        "{{ labels.nope | default(annotations.nope) | default('z') }}",
        "{{ labels.nope | d(annotations.nope | default(vars.n)) }}",
        "{{ 'x' | default(labels.instance) }}",
        "{{ labels | default('x') }}",
        "{{ vars.missing | default(42) }}",
        "{{ group.commonLabels.nope | default(alert.fingerprint) }}",
        "{{ labels.nope | default(group.groupLabels.alertname) }}",
        "{{ alert.labels.instance }}",
        "a{{ labels.nope | default(vars.host) }}b{{ 'c' }}{{ labels.nope }}",
    ],
)
def test_fast_default_chains_equal_jinja(event: AlertEvent, source: str) -> None:
    """Chains of default() over paths and constants take the fast path and give Jinja's value."""
    assert compile_template(source).kind == "fast"
    assert _outcome(source, True, event) == _outcome(source, False, event)


def test_field_reads_agree_with_the_scope_dicts(event: AlertEvent) -> None:
    """alert.<name> / group.<name>, read straight from the dataclasses, equal what the alert / group dicts hold."""
    from transforms.template import alert_dict, group_dict

    for root, scope in (("alert", alert_dict(event.alert)), ("group", group_dict(event.group))):
        for name, value in scope.items():
            source = "{{ " + root + "." + name + " }}"
            assert compile_template(source).kind == "fast"
            assert _outcome(source, True, event) == _outcome(source, False, event) == ("ok", value), source


# Generated templates: paths over every name in scope (keys present, missing, dict methods,
# private), constants, default() chains, and a filter the fast path leaves to Jinja.
_KEYS = ["instance", "team", "nope", "items", "get", "_x", "host", "n", "startsAt", "groupLabels", "alertname"]
_NAMES = ["labels", "annotations", "vars", "alert", "group", "nothing"]
_PLAIN = st.text(alphabet="abc xyz-:é", max_size=6)
_NESTED = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | _PLAIN,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    max_leaves=6,
)


def _accessor(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([f".{key}", f"['{key}']"]) if key.isidentifier() else st.just(f"['{key}']")


@st.composite
def _path(draw: st.DrawFn) -> str:
    keys = draw(st.lists(st.sampled_from(_KEYS), max_size=3))
    return draw(st.sampled_from(_NAMES)) + "".join(draw(_accessor(key)) for key in keys)


_CONSTANT = st.sampled_from(["'x'", "42", "''", "true"])
_EXPRESSION = st.recursive(
    _path() | _CONSTANT,
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: f"{p[0]} | default({p[1]})"),
        inner.map(lambda e: f"{e} | d"),
        st.tuples(inner, inner).map(lambda p: f"{p[0]} | default({p[1]}, true)"),
        inner.map(lambda e: f"({e}) | string | upper"),
    ),
    max_leaves=4,
)
_TEMPLATE = st.one_of(
    _EXPRESSION.map(lambda e: "{{ " + e + " }}"),
    st.lists(st.tuples(_PLAIN, _EXPRESSION), min_size=1, max_size=3).map(
        lambda parts: "".join(text + "{{ " + expr + " }}" for text, expr in parts)
    ),
)
_LABELS = st.dictionaries(st.sampled_from(_KEYS), _PLAIN, max_size=4)


# make_alert / make_group are stateless builders, so sharing them across examples is safe.
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    source=_TEMPLATE,
    labels=_LABELS,
    annotations=_LABELS,
    variables=st.dictionaries(st.sampled_from(_KEYS), _NESTED, max_size=4),
    proxied=st.booleans(),
)
def test_fast_path_equals_jinja_on_generated_templates(
    make_alert: Callable[..., Alert],
    make_group: Callable[..., Group],
    source: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    variables: dict[str, Any],
    proxied: bool,
) -> None:
    """For any generated template and labels the fast path gives Jinja's value, or Jinja's error."""
    alert = make_alert(labels=labels, annotations=annotations)
    if proxied:  # a label map that is not a plain dict: the fast path must hand it to Jinja
        alert = msgspec.structs.replace(alert, labels=MappingProxyType(labels))
    event = AlertEvent(alert=alert, group=make_group(alert, group_labels=labels), vars=variables)
    assert _without_addresses(_outcome(source, True, event)) == _without_addresses(_outcome(source, False, event))


def _without_addresses(outcome: tuple[str, Any]) -> tuple[str, Any]:
    """Jinja gives ``alert.items`` as a method of a dict built for each render: compare it by name, not address."""
    kind, value = outcome
    if callable(value):
        return kind, ("callable", value.__name__)
    if isinstance(value, str):
        return kind, re.sub(r" at 0x[0-9a-f]+", "", value, flags=re.IGNORECASE)
    return outcome
