"""Loggers of the library: ``msiv2_async.<part>``, no handlers, and a redaction filter as defense in depth.

The code never passes a secret to a logger; the filter is the second line: any message that still
looks like a token, JWT, CSR or certificate is rewritten before a handler sees it.
"""

from __future__ import annotations

import logging

from ._redact import redact


class RedactingFilter(logging.Filter):
    """Rewrites a record whose formatted message contains something secret-looking."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` with the redaction filter attached once."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, RedactingFilter) for f in logger.filters):
        logger.addFilter(RedactingFilter())
    return logger
