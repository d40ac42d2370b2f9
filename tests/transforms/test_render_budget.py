"""The render budget: a template that would grow past a limit fails that field, before doing the work.

Before the budget, ``{{ 'a' * 300000000 }}`` took seconds and 1.2 GiB, and two nested ``range``
loops never ended. Every message here is exact; what templates for real alerts do (loops over
the labels, joins, formats, JSON of the labels) still renders as before.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from transforms import RuleSet
from transforms.base import Alert, AlertEvent, Group
from transforms.budget import MAX_INSPECTED, MAX_ITERATIONS, MAX_SIZE
from transforms.sandbox import RuleEnvironment
from transforms.straight import is_straight
from transforms.template import RenderError, compile_template, template_context

Alerts = Callable[..., Alert]
Groups = Callable[..., Group]


@pytest.fixture
def event(make_alert: Alerts, make_group: Groups) -> AlertEvent:
    labels = {"alertname": "DiskFull", "a": "a", "hundred": "h" * 100, **{f"l{i:03}": f"v{i}" for i in range(120)}}
    alert = make_alert(labels=labels, annotations={"summary": "disk full"})
    return AlertEvent(alert=alert, group=make_group(alert))


def failure(source: str, event: AlertEvent) -> str:
    """The error ``source`` renders to for ``event``."""
    with pytest.raises(RenderError) as info:
        compile_template(source).render(event)
    return str(info.value)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'a' * 300000000 }}", "'*' would make 300000000 characters (limit 512000)"),
        ("{{ labels.a * 300000000 }}", "'*' would make 300000000 characters (limit 512000)"),
        ("x{{ 300000000 * labels.a }}", "'*' would make 300000000 characters (limit 512000)"),
        ("{{ [1, 2] * 300000 }}", "'*' would make 600001 characters and items (limit 512000)"),
        ("{{ (['a' * 1000] * 1000) | join }}", "'*' would make 1000001 characters and items (limit 512000)"),
        ("{{ (2 ** 4000) * (2 ** 4000) }}", "'*' would make an integer of about 8002 bits (limit 4096)"),
        ("{{ labels.a * 600000 + 'b' }}", "'*' would make 600000 characters (limit 512000)"),
        ("{{ labels.hundred * 5000 + labels.hundred * 200 }}", "'+' would make 520000 characters (limit 512000)"),
    ],
)
def test_repetition_is_bounded(event: AlertEvent, source: str, message: str) -> None:
    assert failure(source, event) == f"BudgetExceeded: {message}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 2 ** 100000000 }}", "'**' would make an integer of about 100000001 bits (limit 4096)"),
        ("{{ 7 ** 2000 }}", "'**' would make an integer of about 5615 bits (limit 4096)"),
        ("{{ 10 ** (10 ** 10) }}", "'**' would make an integer of about 10000000001 bits (limit 4096)"),
    ],
)
def test_power_is_bounded(event: AlertEvent, source: str, message: str) -> None:
    assert failure(source, event) == f"BudgetExceeded: {message}"


def test_small_arithmetic_is_untouched(event: AlertEvent) -> None:
    """Numbers, repetition and formats of the sizes templates use give what Python gives."""
    source = "{{ 2 ** 64 }} {{ 3 * 4 }} {{ '-' * 10 }} {{ [0] * 3 }} {{ 1.5 ** 2 }} {{ 'a' + 'b' }} {{ '%05d' % 7 }}"
    assert compile_template(source).render(event) == "18446744073709551616 12 ---------- [0, 0, 0] 2.25 ab 00007"


def test_range_is_bounded(event: AlertEvent) -> None:
    assert failure("{{ range(100000) | list | length }}", event) == (
        "BudgetExceeded: range() would make 100000 items (limit 10000)")
    assert failure("{{ range(0, 10 ** 30, 3) | length }}", event) == (
        "BudgetExceeded: range() would make 333333333333333333333333333334 items (limit 10000)")
    assert compile_template("{{ range(10000) | length }} {{ range(10, 0, -3) | list }}").render(event) == (
        "10000 [10, 7, 4, 1]")


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
        "{% for i in range(100) %}{% for j in range(100) %}{% endfor %}{% endfor %}",
        "{% for i in range(10000) %}{% for j in range(10000) if j < 0 %}{% endfor %}{% endfor %}",
        "{% for i in range(10000) %}{{ i }}{% endfor %}{% for i in range(1) %}{% endfor %}",
        "{% for x in [[range(5000)|list, range(5000)|list, [1]]] recursive %}"
        "{% if x is iterable %}{{ loop(x) }}{% endif %}{% endfor %}",
    ],
)
def test_loops_are_bounded_all_together(event: AlertEvent, source: str) -> None:
    """Nested loops (the hang), filtered loops, loops one after another and recursive loops share one count."""
    assert failure(source, event) == f"BudgetExceeded: loops over the limit of {MAX_ITERATIONS} iterations"


def test_loops_within_the_budget_render_and_each_render_has_its_own(event: AlertEvent) -> None:
    """99 × 99 (plus the outer 99) fits; the count starts again at every render."""
    template = compile_template("{% for i in range(99) %}{% for j in range(99) %}{% endfor %}{% endfor %}ok")
    assert [template.render(event) for _ in range(3)] == ["ok", "ok", "ok"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{% for i in range(9000) %}{{ labels.hundred }}{% endfor %}", "output over the limit of 512000 characters"),
        ("{% for i in range(9000) %}" + "x" * 100 + "{% endfor %}", "output over the limit of 512000 characters"),
        ("{% set s %}{% for i in range(5000) %}{{ labels.hundred }}{% endfor %}{% endset %}{{ s }}{{ s }}",
         "output over the limit of 512000 characters"),
        ("{% macro m() %}{{ labels.hundred * 5000 }}{% endmacro %}{{ m() }}{{ m() }}",
         "output over the limit of 512000 characters"),
    ],
)
def test_output_is_bounded(event: AlertEvent, source: str, message: str) -> None:
    """Output counts as it is made, in blocks and macros too; literal text repeated by a loop is caught at the end."""
    assert failure(source, event) == f"BudgetExceeded: {message}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'a' | center(300000000) }}", "center() width 300000000 is over the limit of 512000"),
        ("{{ 'a'.ljust(1000000000) }}", "ljust() width 1000000000 is over the limit of 512000"),
        ("{{ 'a'.zfill(10 ** 40) }}", "zfill() width 10000000000000000000… is over the limit of 512000"),
        ("{{ '\t'.expandtabs(tabsize=1000000000) }}", "expandtabs() would make 1000000001 characters (limit 512000)"),
        ("{{ (labels.a * 1000) | replace('a', labels.a * 1000) }}",
         "replace() would make 1000000 characters (limit 512000)"),
        ("{{ (labels.a * 1000).replace('a', labels.a * 1000) }}",
         "replace() would make 1000000 characters (limit 512000)"),
        ("{{ range(1000) | map('string') | join(labels.hundred * 1000) }}",
         "join() would make 99902891 characters (limit 512000)"),
        ("{{ (labels.hundred * 1000).join(range(1000) | map('string')) }}",
         "join() would make 99902890 characters (limit 512000)"),
        ("{{ ((labels.hundred ~ '\\n') * 100) | indent(10000, true) }}",
         "indent() would make 1020100 characters (limit 512000)"),
        ("{{ '%1000000000d' % 1 }}", "format width 1000000000 is over the limit of 512000"),
        ("{{ '%.999999999f' | format(1.5) }}", "format width 999999999 is over the limit of 512000"),
        ("{{ '%*d' % (1000000000, 1) }}", "format width 1000000000 is over the limit of 512000"),
        ("{{ '{:>1000000000}'.format('a') }}", "format width 1000000000 is over the limit of 512000"),
        ("{{ '{:>{w}}'.format('a', w=1000000000) }}", "format width 1000000000 is over the limit of 512000"),
        ("{{ '{a:>{w}}'.format_map({'a': 'x', 'w': 1000000000}) }}",
         "format width 1000000000 is over the limit of 512000"),
        ("{{ [1] | batch(100000, labels.hundred) | list }}", "batch() would make 10000000 characters and items"
         " (limit 512000)"),
        ("{{ '%s' % ([labels.hundred] * 5000, [labels.hundred] * 5000) }}",
         "a value over the limit of 512000 characters and items"),
        ("{{ [1] | batch(1000000000, 'x') | list }}", "batch() size 1000000000 is over the limit of 512000"),
        ("{{ labels | tojson(indent=1000) }}", "tojson() indent 1000 is over the limit of 16"),
        ("{{ labels.hundred.translate({104: labels.hundred * 100}) }}",
         "translate() would make 1000000 characters (limit 512000)"),
    ],
)
def test_filters_and_methods_that_multiply_are_checked_first(event: AlertEvent, source: str, message: str) -> None:
    assert failure(source, event) == f"BudgetExceeded: {message}"


def test_a_value_doubled_again_and_again_is_stopped(event: AlertEvent) -> None:
    """A namespace value made of itself twice, 60 times over: a few items each time, 2**60 in the end."""
    source = ("{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}"
              "{{ ns.x | string | length }}")
    assert failure(source, event) == f"BudgetExceeded: values inspected over the limit of {MAX_INSPECTED} items"
    doubled = "{% set a = [labels.hundred * 5000] %}{% set b = [a, a] %}{{ b | length }}"
    assert failure(doubled, event) == f"BudgetExceeded: a value over the limit of {MAX_SIZE} characters and items"


def test_macros_cannot_call_themselves_for_ever(event: AlertEvent) -> None:
    """Endless recursion ends at Python's recursion limit; a macro calling itself twice, 15 levels deep
    (32,767 calls), at the call limit: both as errors of the field."""
    endless = "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(0) }}"
    assert failure(endless, event).startswith("RecursionError: maximum recursion depth exceeded")
    fan = "{% macro f(n) %}{{ f(n + 1) if n < 14 else '' }}{{ f(n + 1) if n < 14 else '' }}{% endmacro %}{{ f(0) }}"
    assert failure(fan, event) == "BudgetExceeded: calls over the limit of 10000"


def test_lipsum_is_not_offered(event: AlertEvent) -> None:
    """Filler text by the paragraph count has no place in alerts."""
    assert failure("{{ lipsum(100000) }}", event) == "UndefinedError: 'lipsum' is undefined"


def test_templates_for_real_alerts_render_as_before(event: AlertEvent) -> None:
    """Loops over every label, sorting, joining, formatting, JSON: nothing near a limit."""
    source = (
        "{% for k, v in labels | dictsort %}{% if k.startswith('l') %}{{ k }}={{ v }};{% endif %}{% endfor %}"
        "|{{ labels.keys() | sort | join(',') | truncate(40) }}"
        "|{{ '%s on %s' % (labels.alertname, labels.a) }}|{{ '{:>8}'.format(labels.a) }}"
        "|{{ labels | tojson | length }}|{{ annotations.summary | title | center(13) }}"
    )
    unbounded = ImmutableSandboxedEnvironment().from_string(source).render(template_context(event))
    assert compile_template(source).render(event) == unbounded
    assert unbounded.startswith("".join(f"l{i:03}=v{i};" for i in range(120)) + "|a,alertname,hundred,")


STRAIGHT = [
    '{{ group.groupLabels.values() | join(" ") }}: {{ group.commonAnnotations.summary | default(labels.alertname) }}',
    "{% if labels.a == 'a' %}{{ labels | dictsort | first }}{% else %}{{ -1 // 2 }}{% endif %}",
    "{{ labels.hundred[:10] ~ '/' ~ labels.get('a', 'none') | upper }}{{ labels.keys() | sort | join(', ') }}",
    "{{ labels | tojson }}{{ annotations.summary.split() | length is odd }}{{ [labels.a, labels.a] | unique | list }}",
]
BUDGETED = [
    "{% for k in labels %}{{ k }}{% endfor %}", "{{ labels.a * 2 }}", "{{ labels.a + 'b' }}", "{{ '%s' % labels.a }}",
    "{{ 2 ** 3 }}", "{{ labels.a | center(9) }}", "{{ labels | tojson(indent=2) }}", "{{ range(3) | list }}",
    "{{ labels.a.ljust(9) }}", "{{ '{}'.format(labels.a) }}", "{% set x = labels %}{{ x }}",
    "{% macro m() %}{% endmacro %}{{ m() }}", "{{ labels.a | replace('a', '" + "b" * 65 + "') }}",
    "{{ labels.values() | map('upper') | join }}", "{% with x = 1 %}{{ x }}{% endwith %}",
]


@pytest.mark.parametrize(("source", "straight"), [(s, True) for s in STRAIGHT] + [(s, False) for s in BUDGETED])
def test_only_templates_that_cannot_outgrow_the_alert_skip_the_counting(
    event: AlertEvent, source: str, straight: bool
) -> None:
    """No loop, macro, assignment, multiplying operator, global call or multiplying filter, no long literal
    argument: each part runs once on alert data. Both kinds render exactly as the plain sandbox does."""
    assert is_straight(RuleEnvironment().parse(source)) is straight
    unbounded = ImmutableSandboxedEnvironment().from_string(source).render(template_context(event))
    assert str(compile_template(source).render(event)) == unbounded


@pytest.mark.parametrize(
    ("part", "kind"), [("{{ labels.hundred }}", "fast"), ("{{ labels.hundred | upper }}", "jinja")]
)
def test_templates_without_loops_still_have_an_output_limit(event: AlertEvent, part: str, kind: str) -> None:
    """Without loops a template can still repeat a large value by writing it out many times: on the fast
    path and on a straight template alike, the output stops at the limit."""
    source = part * 6000
    assert (compile_template(source).kind, is_straight(RuleEnvironment().parse(source))) == (kind, True)
    assert failure(source, event) == f"BudgetExceeded: output over the limit of {MAX_SIZE} characters"


def test_a_template_over_budget_fails_its_field_like_any_template_error(make_alert: Alerts, make_group: Groups) -> None:
    """The field keeps its default, the error is recorded as rule.field: message, the rest of the step applies."""
    rules = RuleSet.from_text(
        "version: 1\nrules:\n  - name: text\n    set:\n"
        "      summary: \"{{ 'a' * 300000000 }}\"\n"
        "      source: '{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}'\n"
        "      component: ok\n"
    )
    alert = make_alert(labels={"alertname": "DiskFull", "instance": "a:9100"})
    result = rules.evaluate(make_group(alert))
    assert result.template_errors == (
        "text.summary: BudgetExceeded: '*' would make 300000000 characters (limit 512000)",
        f"text.source: BudgetExceeded: loops over the limit of {MAX_ITERATIONS} iterations",
    )
    payload = result.events[0].body["payload"]
    assert (payload["summary"], payload["source"], payload["component"]) == ("DiskFull", "a:9100", "ok")
