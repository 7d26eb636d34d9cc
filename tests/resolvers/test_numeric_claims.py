"""NumericDate claims from external tokens are bounded before any conversion (RFC 7519 §2)."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentguard.errors import InvalidToken, Reason
from agentguard.resolvers._claims import MAX_NUMERIC_DATE, numeric_date

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
)


def _is_date(value: object) -> bool:
    """The oracle: a JSON number (not a bool) between 0 and MAX_NUMERIC_DATE, NaN excluded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not (isinstance(value, float) and math.isnan(value)) and 0 <= value <= MAX_NUMERIC_DATE


@given(VALUES)
def test_numeric_date_is_a_bounded_float_or_a_clear_refusal(value: object) -> None:
    if value is None:
        assert numeric_date({"exp": value}, "exp") is None
    elif _is_date(value):
        seconds = numeric_date({"exp": value}, "exp")
        assert seconds is not None
        assert 0 <= seconds <= MAX_NUMERIC_DATE
        datetime.fromtimestamp(seconds, timezone.utc)  # convertible: no OverflowError later
    else:
        with pytest.raises(InvalidToken, match="exp") as caught:
            numeric_date({"exp": value}, "exp")
        assert caught.value.reason is Reason.MALFORMED_KEY


@pytest.mark.parametrize("value", [0, 1.5, 1796520360.42, MAX_NUMERIC_DATE])
def test_fractional_and_boundary_dates_are_accepted(value: float) -> None:
    assert numeric_date({"nbf": value}, "nbf") == float(value)


@pytest.mark.parametrize("value", [MAX_NUMERIC_DATE + 1, -1, 1e300, 10**400, float("nan")])
def test_out_of_range_dates_are_malformed(value: float) -> None:
    with pytest.raises(InvalidToken, match="NumericDate"):
        numeric_date({"iat": value}, "iat")
