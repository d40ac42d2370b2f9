"""Alertmanager matchers: parsing both forms, anchoring, missing labels, errors, parity with Alertmanager's parser."""

from __future__ import annotations

import pytest
import re2

from transforms import RulesError, RuleSet, match
from transforms.match import Matcher, MatcherError, Regex, compile_guard, parse_matchers

LABELS = {"alertname": "DiskFull", "env": "production", "team": "db", "service.name": "api", "msg": "a\nb"}


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('alertname="DiskFull"', True),
        ("alertname=DiskFull", True),
        ('alertname="Disk"', False),
        ('alertname!="DiskFull"', False),
        ('alertname!="Other"', True),
        ('env=~"prod"', False),  # anchored: prod does not match production
        ('env=~"prod.*"', True),
        ('env=~"staging|production"', True),
        ('env=~"duction"', False),
        ('env!~"prod.*"', False),
        ('env!~"staging|dev"', True),
        ('missing=""', True),  # a missing label is the empty string
        ('missing!=""', False),
        ('team!=""', True),
        ('missing=~".*"', True),
        ('missing=~".+"', False),
        ('missing!~".+"', True),
        ('"service.name"="api"', True),
        ('msg=~"a.b"', False),  # RE2: "." does not match a newline
        ('msg=~"(?s)a.b"', True),
        ('msg="a\\nb"', True),  # \n escape in a quoted value
        ('team=~"DB"', False),
        ('team=~"(?i)DB"', True),
        ('alertname=~"Disk[A-Z][a-z]+"', True),
        ('alertname = "DiskFull"', True),  # spaces around the operator
    ],
)
def test_matcher_semantics(spec: str, expected: bool) -> None:
    """Each matcher string matches LABELS exactly as Alertmanager would decide."""
    guard = compile_guard(parse_matchers(spec))
    assert guard is not None and guard(LABELS) is expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ('a="b"', [("a", "=", "b")]),
        ("{a=b}", [("a", "=", "b")]),
        ('{a="b", c=~"d|e"}', [("a", "=", "b"), ("c", "=~", "d|e")]),
        ('{a="b", c=~"d|e",}', [("a", "=", "b"), ("c", "=~", "d|e")]),
        ('a="b",c!~"x",', [("a", "=", "b"), ("c", "!~", "x")]),
        ("  { a = b }  ", [("a", "=", "b")]),
        ('"service.name"="api"', [("service.name", "=", "api")]),
        ('a="x\\"y"', [("a", "=", 'x"y')]),
        ('a="back\\\\slash"', [("a", "=", "back\\slash")]),
        # An unknown escape is kept as written: Alertmanager 0.25 accepts 'foo=~"\\d+"' too
        # (amtool check-config: SUCCESS; pkg/labels/parse.go keeps "spurious" escapes).
        ('a=~"\\d+"', [("a", "=~", "\\d+")]),
        ('{a=~"\\d+"}', [("a", "=~", "\\d+")]),
        ('a=~"\\\\d+"', [("a", "=~", "\\d+")]),
        ('a=""', [("a", "=", "")]),
        ("{}", []),
        ("", []),
        (["a=b", 'c="d", e!="f"'], [("a", "=", "b"), ("c", "=", "d"), ("e", "!=", "f")]),
        (['{a="b"}', "c=d"], [("a", "=", "b"), ("c", "=", "d")]),
    ],
)
def test_parse_forms(spec: str | list[str], expected: list[tuple[str, str, str]]) -> None:
    """List form, brace form, quoting and escapes parse into the expected (name, op, value)."""
    assert [(m.name, m.op, m.value) for m in parse_matchers(spec)] == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('env=~"prod', "bad matcher 'env=~\"prod': unterminated quoted string starting at column 6"),
        (
            "a=",
            "bad matcher 'a=': expected a value at column 3, found the end; write \"\" for an empty value",
        ),
        ("a", "bad matcher 'a': expected an operator (=, !=, =~, !~) after 'a', found the end"),
        (
            "a='b'",
            'bad matcher "a=\'b\'": expected a value at column 3, found "\'"; quote values with double quotes',
        ),
        ('{a="b"', "bad matcher '{a=\"b\"': missing closing '}'"),
        ('a="b"}', "bad matcher 'a=\"b\"}': expected ',' after a matcher at column 6, found '}'"),
        ('{a="b",,}', "bad matcher '{a=\"b\",,}': expected a label name at column 8, found ','"),
        ("=b", "bad matcher '=b': expected a label name at column 1, found '='"),
        ('a="b" c="d"', "bad matcher 'a=\"b\" c=\"d\"': expected ',' after a matcher at column 7, found 'c'"),
        ('{a="b"} x', "bad matcher '{a=\"b\"} x': unexpected text after '}' at column 9"),
        ('a=~"("', "bad matcher 'a=~\"(\"': invalid regex '(': missing ): ( (column 4)"),
        (
            'a=~"(?<=x)y"',
            "bad matcher 'a=~\"(?<=x)y\"': invalid regex '(?<=x)y': invalid perl operator: (?<= (column 4)",
        ),
    ],
)
def test_parse_errors(spec: str, message: str) -> None:
    """Malformed matchers and non-RE2 regexes raise MatcherError naming the string and the problem."""
    with pytest.raises(MatcherError) as info:
        parse_matchers(spec)
    assert str(info.value) == message


def test_list_entries_must_be_strings() -> None:
    """A non-string list entry is refused."""
    with pytest.raises(MatcherError) as info:
        parse_matchers(["a=b", 3])  # type: ignore[list-item]
    assert str(info.value) == "a matcher must be a string, got 3"


def test_canonical_string_form() -> None:
    """str() gives Alertmanager's form: quoted values, names quoted only when needed."""
    rendered = [str(m) for m in parse_matchers('{a=b, "service.name"!~"x|y", c="q\\"t"}')]
    assert rendered == ['a="b"', '"service.name"!~"x|y"', 'c="q\\"t"']


@pytest.mark.parametrize("pattern", ["prod|staging|dev-1", "a||b", "", "x:1/y_2"])
def test_literal_alternation_matches_like_re2(pattern: str) -> None:
    """The set lookup for plain alternations agrees with RE2 on hits and misses, for =~ and !~."""
    regex = Regex(pattern)
    positive, negative = Matcher("env", "=~", pattern), Matcher("env", "!~", pattern)
    for value in ["prod", "staging", "dev-1", "production", "", "prod|staging", "dev", "a", "b", "x:1/y_2"]:
        assert (positive.test(value), negative.test(value)) == (regex.fullmatch(value), not regex.fullmatch(value))


def test_regex_named_groups() -> None:
    """Regex.named_groups returns every named group, with "" for one that took no part."""
    regex = Regex(r"(?P<host>[^:]+)(:(?P<port>\d+))?")
    assert regex.named_groups("db-1:9100") == {"host": "db-1", "port": "9100"}
    assert regex.named_groups("db-1") == {"host": "db-1", "port": ""}
    assert regex.named_groups("db-1:x") is None
    assert Regex("é+").fullmatch("éé") is True  # UTF-8 semantics: one character, not two bytes


@pytest.mark.parametrize(
    ("spec", "labels", "expected"),
    [
        ('env=~"prod.*", team!="db"', {"env": "production", "team": "web"}, True),
        ('env=~"prod.*", team!="db"', {"env": "production", "team": "db"}, False),
        ('env=~"prod.*", team!="db"', {"team": "web"}, False),
        ('{team=~"db|web", missing=""}', {"team": "db"}, True),
        ('{team=~"db|web", missing=""}', {"team": "db", "missing": "x"}, False),
        ('msg!~"a.b", msg=~"a\\nb"', {"msg": "a\nb"}, True),
    ],
)
def test_guard_needs_every_matcher(spec: str, labels: dict[str, str], expected: bool) -> None:
    """A rule's guard is the AND of its matchers."""
    guard = compile_guard(parse_matchers(spec))
    assert guard is not None and guard(labels) is expected


def test_no_matchers_no_guard() -> None:
    """A step without matchers has no guard: it applies to every alert."""
    assert compile_guard(parse_matchers("{}")) is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('foo="a\udc80"', "bad matcher 'foo=\"a\\udc80\"': not valid UTF-8: '\\udc80' at column 7 is a lone surrogate"),
        (
            '{foo=~"x", "b\udc80r"="1"}',
            "bad matcher '{foo=~\"x\", \"b\\udc80r\"=\"1\"}':"
            " not valid UTF-8: '\\udc80' at column 14 is a lone surrogate",
        ),
        ("foo=\udcff", "bad matcher 'foo=\\udcff': not valid UTF-8: '\\udcff' at column 5 is a lone surrogate"),
        ("\ud800=x", "bad matcher '\\ud800=x': not valid UTF-8: '\\ud800' at column 1 is a lone surrogate"),
    ],
)
def test_invalid_utf8_is_refused(spec: str, message: str) -> None:
    """Like Alertmanager ("matcher value not valid UTF-8"), text with no UTF-8 form is refused, naming the matcher."""
    with pytest.raises(MatcherError) as info:
        parse_matchers(spec)
    assert str(info.value) == message


def test_invalid_utf8_in_a_rules_file_is_a_load_error() -> None:
    """A YAML escape for a lone surrogate in a match is reported at its file and line."""
    with pytest.raises(RulesError) as info:
        RuleSet.from_text('version: 1\nrules:\n  - match: "team=\\"\\uDC80\\""\n    drop: true\n', "r.yaml")
    assert info.value.errors == [
        "r.yaml:3: bad matcher 'team=\"\\udc80\"': not valid UTF-8: '\\udc80' at column 7 is a lone surrogate"
    ]


def test_regex_without_the_bindings_raw_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """If the RE2 binding lacks its raw Match call, the public API gives the same spans and results."""
    pattern = r"(?P<host>[^:]+)(:(?P<port>\d+))?"
    compiled = re2.compile(pattern.encode(), match._RE2_OPTIONS)
    raw, public = match._span_match(compiled), match._public_span_match(compiled)
    assert raw is not public
    for text in ("db-1:9100", "db-1", "db-1:x", "", "é:1"):
        data = text.encode()
        assert list(public(None, data, 0, len(data))) == list(raw(match._ANCHOR_BOTH, data, 0, len(data)))
    monkeypatch.setattr(match, "_span_match", match._public_span_match)
    regex = Regex(pattern)
    assert (regex.named_groups("db-1:9100"), regex.named_groups("é"), regex.named_groups("db-1:x")) == (
        {"host": "db-1", "port": "9100"},
        {"host": "é", "port": ""},
        None,
    )
    assert (Regex("é+").fullmatch("éé"), Regex("é+").fullmatch("ée")) == (True, False)
