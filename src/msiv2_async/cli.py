"""The ``msiv2-async`` command: what the PowerShell sample ``get-msiv2-token.ps1`` does, and more.

    msiv2-async token      the real flow against IMDS, then (optionally) one resource call
    msiv2-async emulator   run the local IMDS + STS + resource emulator until interrupted
    msiv2-async demo       start the emulator in-process and run ``token`` against it
    msiv2-async doctor     check IMDS, identity, clock, backends, TLS, proxies: OK/WARN/FAIL with fixes
    msiv2-async decode     a token's header and claims as JSON (signature NOT verified), cnf vs a cert
    msiv2-async bench      the benchmarks (``python -m benchmarks``) of a source checkout

Progress and logs go to stderr, the resource body (or, with ``--json``, one JSON object) to stdout.
Exit status: 0 success, 1 failure (with a one-line reason and a hint where one is known), 2 usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

import anyio
import httpx

from . import _binding
from ._cli_options import add_endpoint_options, add_identity_options
from ._driver import Step
from ._errors import MsiV2Error
from ._models import MtlsPopToken
from ._redact import fingerprint
from .client import DEFAULT_SCOPE, MsiV2Client

DEFAULT_RESOURCE_URL = "https://mtlstb.graph.microsoft.com/v1.0/applications?$top=5"
_STEP_TITLES = {
    "imds_setup": "IMDS HTTP client",
    "mtls_setup": "mTLS context with the issued certificate",
    "getplatformmetadata": "Platform metadata (IMDS getplatformmetadata)",
    "key": "Binding key (open or create)",
    "csr_sign": "CSR signed with the binding key",
    "attest": "Key attestation (Microsoft Azure Attestation)",
    "issuecredential": "Certificate issued (IMDS issuecredential)",
    "token": "mtls_pop token (mTLS to the STS)",
    "binding_check": "Token binding check (cnf.x5t#S256)",
    "resource": "Resource call over mTLS",
}
_RESOURCE_HINTS = {
    401: "the resource rejected the token: check that the scope's audience matches the resource",
    403: "the identity lacks permission on the resource (grant the app role / RBAC role to the managed "
    "identity), or the resource is not enabled for mtls_pop tokens",
}


class CliFailure(Exception):
    """A failure reported as one line on stderr, with exit status 1."""


@dataclass
class Report:
    """What one run found out; printed as text or JSON."""

    steps: list[Step] = field(default_factory=list)
    token: MtlsPopToken | None = None
    cnf_thumbprint: str | None = None
    resource_status: int | None = None
    resource_body: str | None = None
    cache: dict[str, int] = field(default_factory=dict)

    def as_json(self, *, show_full_token: bool) -> dict[str, Any]:
        """The ``--json`` object."""
        token = self.token
        result: dict[str, Any] = {
            "token_type": token.token_type if token else None,
            "scope": token.scope if token else None,
            "expires_on": token.expires_on if token else None,
            "refresh_on": token.refresh_on if token else None,
            "correlation_id": token.correlation_id if token else None,
            "cert_thumbprint": token.binding_certificate.thumbprint_sha256 if token else None,
            "cert_not_after": token.binding_certificate.not_after.isoformat() if token else None,
            "cnf_thumbprint": self.cnf_thumbprint,
            "binding_verified": bool(
                token and self.cnf_thumbprint == token.binding_certificate.thumbprint_sha256
            ),
            "token_fingerprint": fingerprint(token.access_token) if token else None,
            "resource_status": self.resource_status,
            "steps": [{"name": s.name, "ms": round(s.milliseconds, 2)} for s in self.steps],
            "cache": self.cache,
        }
        if show_full_token and token:
            result["access_token"] = token.access_token
        return result


def _add_common_options(parser: argparse.ArgumentParser, *, resource_default: str | None) -> None:
    parser.add_argument(
        "-Scope", "--scope", default=DEFAULT_SCOPE, help="scope or resource (default: %(default)s)"
    )
    parser.add_argument(
        "-ResourceUrl",
        "--resource-url",
        default=resource_default,
        help="https URL called over mTLS with the token (quote it: '$top' is special in shells)",
    )
    parser.add_argument("--no-resource-call", action="store_true", help="stop after the token")
    parser.add_argument(
        "-VerboseLogging", "--verbose", "-v", action="store_true", help="DEBUG logs of msiv2_async on stderr"
    )
    parser.add_argument(
        "-ShowFullToken", "--show-full-token", action="store_true", help="print the whole access token"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    add_identity_options(parser)
    parser.add_argument(
        "--attestation",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="require (or forbid) key attestation; default: when the backend can",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="overall deadline in seconds")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (PowerShell spellings and POSIX long options both work)."""
    parser = argparse.ArgumentParser(
        prog="msiv2-async", description=__doc__.split("\n")[0], allow_abbrev=False
    )
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser("token", help="acquire a token from the real IMDS", allow_abbrev=False)
    _add_common_options(token, resource_default=DEFAULT_RESOURCE_URL)
    add_endpoint_options(token)
    demo = commands.add_parser(
        "demo", help="run the flow against the in-process emulator", allow_abbrev=False
    )
    _add_common_options(demo, resource_default=None)
    emulator = commands.add_parser("emulator", help="run the emulator until interrupted", allow_abbrev=False)
    emulator.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    emulator.add_argument("--imds-port", type=int, default=0, help="IMDS port (default: any free port)")
    emulator.add_argument("--sts-port", type=int, default=0, help="STS port (default: any free port)")
    emulator.add_argument(
        "--resource-port", type=int, default=0, help="resource port (default: any free port)"
    )
    emulator.add_argument("--require-attestation", action="store_true", help="IMDS demands attestation_token")
    backends = commands.add_parser(
        "backends", help="list the installed key backends with viability and priority", allow_abbrev=False
    )
    backends.add_argument("--json", action="store_true", help="one JSON object on stdout")
    _add_tooling_parsers(commands)
    commands.add_parser(  # listed for --help; main() hands its arguments to the benchmarks unparsed
        "bench", help="run the benchmarks of a source checkout (python -m benchmarks)", add_help=False
    )
    return parser


def _add_tooling_parsers(commands: Any) -> None:
    from . import _decode, _doctor

    _doctor.add_parser(commands)
    _decode.add_parser(commands)


class Progress:
    """Numbered steps with timings on stderr, as the PowerShell sample prints them."""

    def __init__(self, stream: TextIO, *, quiet: bool) -> None:
        self._stream = stream
        self._quiet = quiet
        self._count = 0
        self._key_announced = False

    def step(self, step: Step) -> None:
        """Print one finished step (and, after the metadata, that the key step comes next)."""
        self._count += 1
        if not self._quiet:
            title = _STEP_TITLES.get(step.name, step.name)
            print(f"[{self._count}] {title:.<58} {step.milliseconds:8.1f} ms", file=self._stream)
            if step.name == "getplatformmetadata" and not self._key_announced:
                self._key_announced = True
                print("    opening the binding key (generating it if new)...", file=self._stream)

    def line(self, text: str) -> None:
        """Print one informational line."""
        if not self._quiet:
            print(text, file=self._stream)


def _abbreviated(token: str) -> str:
    return f"{token[:12]}...({len(token)} chars, {fingerprint(token)})"


async def _call_resource(client: MsiV2Client, token: MtlsPopToken, url: str, report: Report) -> None:
    async with await client.resource_client(token) as http:
        try:
            response = await http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise CliFailure(
                f"resource call to {url.split('?')[0]} failed: {type(exc).__name__}: {exc}"
            ) from None
    report.resource_status = response.status_code
    report.resource_body = response.text


async def run_token(options: argparse.Namespace, client_kwargs: dict[str, Any], report: Report) -> None:
    """Acquire the token, check its binding, optionally call the resource; fill ``report``."""
    progress = Progress(sys.stderr, quiet=options.json)

    def observe(step: Step) -> None:
        report.steps.append(step)
        progress.step(step)

    async with MsiV2Client(step_observer=observe, timeout=options.timeout, **client_kwargs) as client:
        identity, backend = client.identity.describe(), client.backend.name
        progress.line(f"IMDS {client.imds_endpoint}, identity {identity}, backend {backend}")
        token = await client.acquire_token(options.scope)
        report.token = token
        started = time.perf_counter()
        report.cnf_thumbprint = _binding.cnf_thumbprint(token.access_token)
        observe(Step("binding_check", (time.perf_counter() - started) * 1000))
        expires = datetime.fromtimestamp(token.expires_on, timezone.utc)
        progress.line(f"    token_type {token.token_type}, expires {expires:%Y-%m-%d %H:%M:%S} UTC")
        progress.line(f"    certificate x5t#S256 {token.binding_certificate.thumbprint_sha256}")
        progress.line(f"    token cnf.x5t#S256   {report.cnf_thumbprint}")
        progress.line(f"    access token {_abbreviated(token.access_token)}")
        if options.resource_url and not options.no_resource_call:
            started = time.perf_counter()
            await _call_resource(client, token, options.resource_url, report)
            observe(Step("resource", (time.perf_counter() - started) * 1000))
            progress.line(f"    resource answered HTTP {report.resource_status}")
        report.cache = client.cache_stats


def _client_kwargs(options: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "client_id": options.client_id,
        "object_id": options.object_id,
        "resource_id": options.resource_id,
        "backend": options.backend,
        "attestation": options.attestation,
    }
    for name in ("imds_endpoint", "ca_bundle"):
        if getattr(options, name, None):
            kwargs[name] = getattr(options, name)
    if getattr(options, "allowed_token_host", None):
        kwargs["allowed_token_hosts"] = options.allowed_token_host
    return kwargs


def _finish(options: argparse.Namespace, report: Report, failure: str | None) -> int:
    status = report.resource_status
    if failure is None and status is not None and not 200 <= status < 300:
        failure = f"the resource answered HTTP {status}"
        if status in _RESOURCE_HINTS:
            failure += f" ({_RESOURCE_HINTS[status]})"
    if options.json:
        document = report.as_json(show_full_token=options.show_full_token)
        document["ok"] = failure is None
        if failure:
            document["error"] = failure
        if report.resource_body is not None:
            document["resource_body"] = report.resource_body
        print(json.dumps(document, indent=2))
    else:
        if report.token and options.show_full_token:
            print("WARNING: printing the full access token; treat this output as a secret", file=sys.stderr)
            print(report.token.access_token)
        if report.resource_body is not None:
            print(report.resource_body)
    if failure:
        print(f"msiv2-async: error: {failure}", file=sys.stderr)
        return 1
    return 0


def _configure_logging(verbose: bool) -> None:
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("msiv2_async")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)


def command_token(options: argparse.Namespace, client_kwargs: dict[str, Any]) -> int:
    """``token`` (and the second half of ``demo``): run, report, exit status."""
    report = Report()
    failure: str | None = None
    try:
        anyio.run(run_token, options, client_kwargs, report)
    except (MsiV2Error, CliFailure) as exc:
        failure = str(exc)
    return _finish(options, report, failure)


def _start_emulator(**kwargs: Any) -> Any:
    try:
        from .emulator import Emulator
    except ImportError as exc:
        raise SystemExit(
            f"msiv2-async: error: the emulator needs its extra: pip install 'msiv2-async[emulator]' ({exc})"
        ) from None
    emulator = Emulator(**kwargs)
    emulator.start()
    return emulator


def command_demo(options: argparse.Namespace) -> int:
    """Start the emulator in this process and run ``token`` against it, resource call included."""
    emulator = _start_emulator()
    try:
        if not options.json:
            print(f"Emulator: IMDS {emulator.imds_url}, STS {emulator.sts_url}", file=sys.stderr)
        options.resource_url = options.resource_url or emulator.resource_url
        kwargs = _client_kwargs(options)
        kwargs.update(
            imds_endpoint=emulator.imds_url,
            ca_bundle=emulator.ca_bundle_path,
            allowed_token_hosts=[emulator.allowed_token_host],
        )
        return command_token(options, kwargs)
    finally:
        emulator.stop()


def command_emulator(options: argparse.Namespace) -> int:
    """Run the emulator until Ctrl-C, printing how to point ``msiv2-async token`` at it."""
    emulator = _start_emulator(
        host=options.host,
        imds_port=options.imds_port,
        sts_port=options.sts_port,
        resource_port=options.resource_port,
        require_attestation=options.require_attestation,
    )
    try:
        print(f"IMDS      {emulator.imds_url}")
        print(f"STS       {emulator.sts_url}")
        print(f"resource  {emulator.resource_url}")
        print(f"CA bundle {emulator.ca_bundle_path}")
        print(f"control   {emulator.control_url}/  (README: 'Emulator fault injection')")
        print("\nPoint msiv2-async at it with:")
        for name, value in emulator.env().items():
            print(f"  export {name}='{value}'")
        print(
            f"  msiv2-async token --resource-url '{emulator.resource_url}'\n\nCtrl-C stops the emulator.",
            flush=True,
        )
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


class _RetryLine(logging.Handler):
    """Prints the driver's back-off messages (``msiv2_async.retry``, INFO) as progress lines."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self._stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"    waiting: {record.getMessage()}", file=self._stream, flush=True)
        except Exception:
            self.handleError(record)


def _show_retries(options: argparse.Namespace) -> None:
    """In human, non-verbose mode, show each retry and its wait on stderr."""
    if getattr(options, "json", False) or getattr(options, "verbose", False):
        return
    logger = logging.getLogger("msiv2_async.retry")
    if not any(isinstance(handler, _RetryLine) for handler in logger.handlers):
        logger.addHandler(_RetryLine(sys.stderr))
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)


def command_backends(options: argparse.Namespace) -> int:
    """``backends``: every installed backend, best first; exit status 1 when none is viable."""
    from .backends import available_backends

    infos = available_backends()
    if options.json:
        rows = [
            {
                "name": info.name,
                "viable": info.viable,
                "priority": info.priority,
                "reason": info.reason,
                "binding_strength": info.binding_strength,
                "supports_attestation": info.supports_attestation,
                "distribution": info.distribution,
                "version": info.version,
            }
            for info in infos
        ]
        print(json.dumps({"backends": rows}, indent=2))
    else:
        for info in infos:
            state = f"viable, priority {info.priority:g}" if info.priority is not None else "not viable"
            strength = f", strength {info.binding_strength}" if info.binding_strength else ""
            origin = f" ({info.distribution} {info.version or ''})".rstrip() if info.distribution else ""
            print(f"{info.name}: {state}{strength}{origin}" + (f": {info.reason}" if info.reason else ""))
    return 0 if any(info.viable for info in infos) else 1


def command_bench(arguments: Sequence[str]) -> int:
    """Run ``python -m benchmarks`` of the source checkout this package is installed from, if any."""
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        print(
            "msiv2-async: the benchmarks are part of the source repository, not of the installed package; "
            "in a checkout run: pip install -e '.[emulator,bench]' && python -m benchmarks --quick "
            "(or --target imds on an Azure VM)",
            file=sys.stderr,
        )
        return 1
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    benchmarks = importlib.import_module("benchmarks")
    return int(benchmarks.main(list(arguments)))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``msiv2-async`` console script."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        return command_bench(arguments[1:])
    options = build_parser().parse_args(argv)
    if options.command == "emulator":
        return command_emulator(options)
    if options.command == "backends":
        return command_backends(options)
    if options.command == "decode":
        from . import _decode

        return _decode.main(options)
    _show_retries(options)
    if options.command == "doctor":
        from . import _doctor

        _configure_logging(options.verbose)
        return _doctor.main(options)
    _configure_logging(options.verbose)
    if options.command == "demo":
        return command_demo(options)
    return command_token(options, _client_kwargs(options))
