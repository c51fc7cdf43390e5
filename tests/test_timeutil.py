"""Datetime variants: the canonical fast path and the general parser agree."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from harvester.timeutil import DatetimeError, format_datetime, is_canonical, parse_datetime


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-06-15T10:26:09Z", "2022-06-15T10:26:09Z"),
        ("2022-06-15T10:26:09.024000Z", "2022-06-15T10:26:09.024000Z"),
        ("2022-06-15T10:26:09.000000Z", "2022-06-15T10:26:09Z"),
        ("2022-06-15T10:26:09.024Z", "2022-06-15T10:26:09.024000Z"),
        ("2022-06-15 10:26:09+02:00", "2022-06-15T08:26:09Z"),
        ("2022-06-15", "2022-06-15T00:00:00Z"),
        ("2013-07-17T00:00:00-05:00Z", "2013-07-17T05:00:00Z"),
        ("2022-06-15T10:26:09.1234567891Z", "2022-06-15T10:26:09.123456Z"),
    ],
)
def test_variants_parse_to_the_canonical_form(text: str, expected: str) -> None:
    parsed = parse_datetime(text)
    assert parsed.tzinfo is not None and parsed.utcoffset() == UTC.utcoffset(None)
    assert format_datetime(parsed) == expected
    assert is_canonical(expected)
    assert is_canonical(text) == (text == expected)


def test_the_fast_path_equals_the_general_parser() -> None:
    for text in ("2022-06-15T10:26:09Z", "1999-12-31T23:59:59.999999Z", "2024-02-29T00:00:00.000001Z"):
        fast = parse_datetime(text)
        general = parse_datetime(text.replace("T", " "))  # the space variant takes the general path
        assert fast == general and isinstance(fast, datetime)


@pytest.mark.parametrize("text", ["2022-02-30T10:26:09Z", "2022-13-01T00:00:00Z", "2022-06-15T24:00:00Z", "garbage"])
def test_invalid_dates_raise_the_typed_error(text: str) -> None:
    with pytest.raises(DatetimeError):
        parse_datetime(text)
