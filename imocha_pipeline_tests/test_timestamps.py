"""The one timestamp reader (``imocha_pipeline.timestamps.parse_utc``) on every shape iMocha, Degreed and the
simulators' control calls write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from imocha_pipeline.timestamps import parse_utc

MOMENT = datetime(2021, 10, 19, 10, 1, 40, 246712, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "expected"), [
    ("2021-10-19T10:01:40.2467123", MOMENT),  # .NET: 7 fraction digits, no zone (UTC)
    ("2021-10-19T10:01:40.246712Z", MOMENT),
    ("2021-10-19T10:01:40.246712z", MOMENT),
    ("2021-10-19T12:01:40.246712+02:00", MOMENT),
    ("2021-10-19T05:01:40.246712-0500", MOMENT),
    ("2021-10-19 10:01:40.246712", MOMENT),  # a space instead of T
    ("2021-10-19T10:01:40", MOMENT.replace(microsecond=0)),
    ("2021-10-19T10:01", MOMENT.replace(second=0, microsecond=0)),
    ("2021-10-19", datetime(2021, 10, 19, tzinfo=UTC)),  # a bare date: midnight UTC
    ("  2021-11-11T20:56:41.093  ", datetime(2021, 11, 11, 20, 56, 41, 93000, tzinfo=UTC)),
    (datetime(2021, 10, 19, 10, 1, 40, 246712), MOMENT),  # naive: UTC
    (datetime(2021, 10, 19, 12, 1, 40, 246712, tzinfo=timezone(timedelta(hours=2))), MOMENT),
])
def test_every_written_shape_reads_as_the_same_utc_moment(raw, expected):
    result = parse_utc(raw)
    assert result == expected and result.tzinfo is UTC
    assert parse_utc(raw, strict=True) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "None", "null", "NULL", "0001-01-01T00:00:00", True])
def test_no_value_in_any_spelling_is_none(raw):
    assert parse_utc(raw) is None and parse_utc(raw, strict=True) is None


@pytest.mark.parametrize("raw", ["yesterday", "2021-13-40T10:00:00", "19/10/2021 10:01", "2021-10-19T25:00", 12])
def test_what_is_not_a_timestamp_is_none_or_an_error_when_strict(raw):
    assert parse_utc(raw) is None
    with pytest.raises(ValueError, match="not a timestamp"):
        parse_utc(raw, strict=True)
