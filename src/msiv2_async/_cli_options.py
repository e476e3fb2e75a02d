"""Command-line options shared by the ``token``/``demo`` and ``doctor`` subcommands."""

from __future__ import annotations

import argparse


def add_identity_options(parser: argparse.ArgumentParser) -> None:
    """``--client-id`` | ``--object-id`` | ``--resource-id``, and ``--backend``."""
    identity = parser.add_mutually_exclusive_group()
    identity.add_argument("--client-id", help="user-assigned identity by client id")
    identity.add_argument("--object-id", help="user-assigned identity by object id")
    identity.add_argument("--resource-id", help="user-assigned identity by ARM resource id")
    parser.add_argument(
        "--backend", help="key backend name (default: $MSIV2_ASYNC_BACKEND or the best viable)"
    )


def add_endpoint_options(parser: argparse.ArgumentParser) -> None:
    """``--imds-endpoint``, ``--ca-bundle`` and the repeatable ``--allowed-token-host``."""
    parser.add_argument("--imds-endpoint", help="IMDS base URL (default: $AZURE_POD_IDENTITY_AUTHORITY_HOST)")
    parser.add_argument("--ca-bundle", help="extra PEM CAs for the STS and resource ($MSIV2_ASYNC_CA_BUNDLE)")
    parser.add_argument(
        "--allowed-token-host",
        action="append",
        default=[],
        help="extra allowed STS host pattern, repeatable ($MSIV2_ASYNC_ALLOWED_TOKEN_HOSTS)",
    )
