"""The redaction filter: defense in depth behind the rule that no secret is ever logged."""

from __future__ import annotations

import logging

import pytest

from msiv2_async._logging import RedactingFilter, get_logger

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJTRU5USU5FTCJ9.c2lnbmF0dXJlLVNFTlRJTkVM"


def test_get_logger_attaches_the_filter_once() -> None:
    first = get_logger("msiv2_async.test_once")
    second = get_logger("msiv2_async.test_once")
    assert first is second
    assert sum(isinstance(f, RedactingFilter) for f in first.filters) == 1


@pytest.mark.parametrize(
    "message",
    [f"token {JWT}", f"Authorization: mtls_pop {JWT}", 'body {"access_token":"SENTINEL-AT-123"}'],
)
def test_secret_looking_text_is_rewritten_before_handlers_see_it(
    message: str, caplog: pytest.LogCaptureFixture
) -> None:
    logger = get_logger("msiv2_async.test_redaction")
    with caplog.at_level(logging.DEBUG, logger="msiv2_async.test_redaction"):
        logger.warning("%s", message)
    assert "SENTINEL" not in caplog.text
    assert "c2lnbmF0dXJl" not in caplog.text
    assert "redacted" in caplog.text


def test_ordinary_messages_pass_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    logger = get_logger("msiv2_async.test_plain")
    with caplog.at_level(logging.INFO, logger="msiv2_async.test_plain"):
        logger.info("IMDS issued certificate %s for %s", "x" * 43, "system-assigned")
    assert caplog.records[0].getMessage() == f"IMDS issued certificate {'x' * 43} for system-assigned"
