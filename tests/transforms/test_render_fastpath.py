"""render's shortcuts for plain values give exactly what the plain conversion gives."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.render import jsonable, jsonable_plain

_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8),
                     st.binary(max_size=4))
_keys = st.one_of(st.text(max_size=6), st.integers(), st.booleans())
_values: st.SearchStrategy[Any] = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple),
                            st.dictionaries(_keys, inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), st.text(max_size=6), max_size=6)),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(_values)
def test_jsonable_equals_the_plain_conversion(value: Any) -> None:
    """Label maps, nested containers, non-string keys, floats, bytes: the same JSON data, and never shared."""
    fast, plain = jsonable(value), jsonable_plain(value)
    assert fast == plain or repr(fast) == repr(plain)  # NaN != NaN; both are then the string 'nan'
    assert type(fast) is type(plain)
    if isinstance(value, dict):
        assert fast is not value
