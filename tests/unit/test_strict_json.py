"""Strict JSON for untrusted answers (RELIABILITY.md §4): every defect is a MalformedResponseError."""

from __future__ import annotations

from typing import Any

import pytest

from msiv2_async import _json
from msiv2_async._errors import MalformedResponseError

ENDPOINT = "getplatformmetadata"
MIB = 1024 * 1024


def _malformed(body: bytes) -> MalformedResponseError:
    with pytest.raises(MalformedResponseError) as caught:
        _json.parse_object(body, endpoint=ENDPOINT)
    assert type(caught.value) is MalformedResponseError
    assert caught.value.endpoint == ENDPOINT
    assert ENDPOINT in str(caught.value)
    return caught.value


def test_a_plain_object_is_parsed() -> None:
    assert _json.parse_object(b'{"a": 1, "b": {"c": [true, null, "x"]}}', endpoint=ENDPOINT) == {
        "a": 1,
        "b": {"c": [True, None, "x"]},
    }


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_rejected(constant: bytes) -> None:
    _malformed(b'{"expires_in": ' + constant + b"}")


@pytest.mark.parametrize(
    "body",
    [b'{"clientId": "a", "clientId": "b"}', b'{"cuId": {"vmId": "a", "vmId": "b"}}'],
)
def test_duplicate_keys_are_rejected_at_any_level(body: bytes) -> None:
    _malformed(body)


@pytest.mark.parametrize(
    "body",
    [b"[" * 200_000, b'{"a":' * 200_000, b"[" * 200_000 + b"]" * 200_000, b'{"a":' + b"[" * 5000 + b"1"],
)
def test_deep_nesting_is_rejected_without_recursion_error(body: bytes) -> None:
    _malformed(body)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = "[" * 100 + '\\"' + "{" * 100
    body = ('{"error_description": "' + text + '"}').encode()
    assert _json.parse_object(body, endpoint=ENDPOINT) == {"error_description": text.replace('\\"', '"')}


@pytest.mark.parametrize("body", [b"[]", b'["a"]', b'"text"', b"1", b"null", b"true"])
def test_a_body_that_is_not_an_object_is_rejected(body: bytes) -> None:
    _malformed(body)


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"{", b'{"a":}', b"<html>502 Bad Gateway</html>", b"{'a': 1}", b'{"a":1}{"b":2}']
)
def test_a_body_that_is_not_json_is_rejected(body: bytes) -> None:
    _malformed(body)


@pytest.mark.parametrize("body", [b'{"a": "\xff"}', b'{"a": "\xc3\x28"}', b"\xfe\xff\x00{\x00}"])
def test_a_body_that_is_not_utf8_is_rejected(body: bytes) -> None:
    _malformed(body)


def test_a_body_over_one_mib_is_rejected() -> None:
    body = b'{"a": "' + b"x" * MIB + b'"}'
    assert len(body) > MIB
    error = _malformed(body)
    assert "bytes" in str(error)


def test_a_body_of_exactly_one_mib_is_accepted() -> None:
    filler = MIB - len(b'{"a": ""}')
    body = b'{"a": "' + b"x" * filler + b'"}'
    assert len(body) == MIB
    assert len(_json.parse_object(body, endpoint=ENDPOINT)["a"]) == filler


def test_an_integer_with_thousands_of_digits_is_rejected() -> None:
    _malformed(b'{"expires_in": ' + b"9" * 5000 + b"}")


# --- typed members -------------------------------------------------------------------------------
def _seconds(value: Any, *, required: bool = True) -> int | None:
    return _json.seconds({"expires_in": value}, "expires_in", endpoint="token", required=required)


@pytest.mark.parametrize(
    ("value", "expected"), [(3599, 3599), ("3599", 3599), (0, 0), ("0", 0), (86399, 86399)]
)
def test_durations_accept_integers_and_strings_of_digits(value: Any, expected: int) -> None:
    assert _seconds(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        3599.0,
        3599.5,
        float("inf"),
        -1,
        "-1",
        "+5",
        "3599.0",
        " 3599",
        "3 599",
        "",
        "0x10",
        "\u0661\u0662\u0663",  # Arabic-Indic digits: str.isdigit() but not ASCII
        10**10,
        10**400,
        "9" * 11,
        "9" * 5000,
        [3599],
        {"s": 3599},
    ],
)
def test_durations_reject_bools_floats_negatives_huge_and_non_digit_strings(value: Any) -> None:
    with pytest.raises(MalformedResponseError) as caught:
        _seconds(value)
    assert type(caught.value) is MalformedResponseError
    assert "expires_in" in str(caught.value)


@pytest.mark.parametrize("literal", [b"1e400", b"3599.0", b"true", b"-5", b"1" * 30])
def test_durations_from_parsed_json_literals_are_rejected(literal: bytes) -> None:
    obj = _json.parse_object(b'{"expires_in": ' + literal + b"}", endpoint="token")
    with pytest.raises(MalformedResponseError):
        _json.seconds(obj, "expires_in", endpoint="token", required=True)


def test_a_missing_required_duration_is_rejected_and_an_optional_one_is_none() -> None:
    with pytest.raises(MalformedResponseError, match="expires_in"):
        _json.seconds({}, "expires_in", endpoint="token", required=True)
    assert _json.seconds({}, "refresh_in", endpoint="token", required=False) is None
    assert _json.seconds({"refresh_in": None}, "refresh_in", endpoint="token", required=False) is None


@pytest.mark.parametrize("value", [None, "", "   ", 5, True, ["a"], {"a": "b"}])
def test_required_strings_must_be_present_non_empty_strings(value: Any) -> None:
    obj = {} if value is None else {"clientId": value}
    with pytest.raises(MalformedResponseError, match="clientId"):
        _json.require_str(obj, "clientId", endpoint=ENDPOINT)


def test_required_strings_are_returned_unchanged() -> None:
    assert _json.require_str({"clientId": "abc"}, "clientId", endpoint=ENDPOINT) == "abc"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("x", "x")])
def test_optional_strings_are_none_when_absent_null_or_empty(value: Any, expected: str | None) -> None:
    assert _json.optional_str({"vmId": value}, "vmId", endpoint=ENDPOINT) == expected
    assert _json.optional_str({}, "vmId", endpoint=ENDPOINT) is None


@pytest.mark.parametrize("value", [5, True, ["x"], {"x": 1}])
def test_optional_strings_of_the_wrong_type_are_rejected(value: Any) -> None:
    with pytest.raises(MalformedResponseError, match="vmId"):
        _json.optional_str({"vmId": value}, "vmId", endpoint=ENDPOINT)
