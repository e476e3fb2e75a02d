"""``msiv2-async doctor``: on one screen, why Managed Identity v2 does or does not work on this host.

Each check ends ``OK``, ``WARN``, ``FAIL`` (with a fix) or ``SKIP`` (not checked, and why):

| check               | what it looks at                                                          |
| ------------------- | ------------------------------------------------------------------------- |
| configuration       | the IMDS endpoint and the identity selection are valid                    |
| imds                | the capability probe (PROTOCOL.md §2.3): IMDS v2, v1 only, or none         |
| mtls_pop            | whether this host and backend can get mtls_pop tokens, at which strength  |
| identity            | ``getplatformmetadata`` answers for the selected identity (its client id) |
| clock               | skew of the local clock against IMDS's ``Date`` header                    |
| backends            | installed key backends, their viability and strength, the one selected    |
| attestation_library | AttestationClientLib (KeyGuard attestation on Windows): found, and where   |
| tls                 | the extra CA bundle for the STS and resources loads                       |
| token_hosts         | the allowlist of mTLS token endpoints in effect                           |
| proxy               | proxy variables (never used for IMDS; for STS/resource only when asked)   |

The exit status is 0 without a ``FAIL``, else 1. The whole run is bounded by ``--timeout`` (default 15 s);
IMDS calls are retried once, after half a second, so an outage is reported rather than waited out.
"""

from __future__ import annotations

import argparse
import email.utils
import ipaddress
import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread

from . import _http, _imds, _imds_v1, _sts
from ._cli_options import add_endpoint_options, add_identity_options
from ._effects import HttpRequest, HttpResponse, TransportFailure
from ._errors import ConfigurationError, MsiV2Error, MsiV2TimeoutError
from ._models import Capabilities, ManagedIdentity, ManagedIdentitySource
from ._retry import RetryPolicy
from ._store import CACHE_DIR_ENV
from .backends import BackendInfo, KeyBackend, SoftwareBackend, TlsSettings, available_backends, get_backend
from .backends.software import server_verifying_context
from .client import CA_BUNDLE_ENV, MsiV2Client

OK, WARN, FAIL, SKIP = "OK", "WARN", "FAIL", "SKIP"
DEFAULT_TIMEOUT = 15.0
SKEW_OK_SECONDS = 60.0
SKEW_FAIL_SECONDS = 300.0
DOCTOR_RETRY = RetryPolicy(imds_delays=(0.5,), gone_retries=0, retry_after_cap=5.0, jitter=0.0)
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
ORDER = (
    "configuration",
    "imds",
    "mtls_pop",
    "identity",
    "clock",
    "backends",
    "attestation_library",
    "tls",
    "token_hosts",
    "proxy",
)
_CORE_IMDS_HINT = "; is this an Azure VM, and is AZURE_POD_IDENTITY_AUTHORITY_HOST right if set?"
"""The hint the core adds to every unreachable-IMDS message; the fix line says it once instead."""
_IMDS_FIX = (
    "run on an Azure VM or VMSS instance with a managed identity; if IMDS is elsewhere (a test emulator) "
    "pass --imds-endpoint or set AZURE_POD_IDENTITY_AUTHORITY_HOST; check that no firewall blocks "
    "169.254.169.254:80"
)


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: str
    summary: str
    fix: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DoctorOptions:
    """What to diagnose: the same choices ``msiv2-async token`` takes."""

    imds_endpoint: str | None = None
    client_id: str | None = None
    object_id: str | None = None
    resource_id: str | None = None
    backend: str | None = None
    allowed_token_hosts: tuple[str, ...] = ()
    ca_bundle: str | None = None
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Report:
    """All checks, in :data:`ORDER`."""

    checks: list[Check]
    imds_endpoint: str | None
    identity: str | None
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(check.status != FAIL for check in self.checks)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "ok": self.ok,
            "imds_endpoint": self.imds_endpoint,
            "identity": self.identity,
            "elapsed_ms": round(self.elapsed_ms, 1),
            "checks": [asdict(check) | {"details": dict(check.details)} for check in self.checks],
        }

    def as_text(self) -> str:
        """Aligned lines: status, name, summary and, under it, the fix."""
        lines = [f"msiv2-async doctor: IMDS {self.imds_endpoint or '?'}, identity {self.identity or '?'}"]
        for check in self.checks:
            lines.append(f"  {check.status:<5} {check.name:<20} {check.summary}")
            if check.fix and check.status in (WARN, FAIL):
                lines.append(f"  {'':<5} {'':<20} fix: {check.fix}")
        failed = sum(check.status == FAIL for check in self.checks)
        warned = sum(check.status == WARN for check in self.checks)
        verdict = "Managed Identity v2 should work here" if failed == 0 else "fix the FAIL lines above"
        lines.append(f"{failed} FAIL, {warned} WARN in {self.elapsed_ms / 1000:.1f} s: {verdict}.")
        return "\n".join(lines)


# -- checks that need no network ---------------------------------------------------------------------


def _configuration(options: DoctorOptions, environ: Mapping[str, str]) -> tuple[Check, str | None, Any]:
    try:
        endpoint = _imds.resolve_endpoint(options.imds_endpoint, environ)
        if options.client_id is None and options.object_id is None and options.resource_id is None:
            identity = ManagedIdentity.system_assigned()
        else:
            identity = ManagedIdentity.user_assigned(
                client_id=options.client_id, object_id=options.object_id, resource_id=options.resource_id
            )
    except ConfigurationError as exc:
        fix = "correct --imds-endpoint / AZURE_POD_IDENTITY_AUTHORITY_HOST or the identity option"
        return Check("configuration", FAIL, str(exc), fix), None, None
    if options.imds_endpoint:
        origin = "--imds-endpoint"
    elif environ.get(_imds.IMDS_ENDPOINT_ENV, "").strip():
        origin = f"${_imds.IMDS_ENDPOINT_ENV}"
    else:
        origin = "default"
    summary = f"IMDS {endpoint} ({origin}), identity {identity.describe()}"
    details = {"imds_endpoint": endpoint, "imds_endpoint_from": origin, "identity": identity.describe()}
    return Check("configuration", OK, summary, details=details), endpoint, identity


def _backends(choice: str | None, environ: Mapping[str, str]) -> tuple[Check, KeyBackend | None]:
    infos = available_backends(environ)
    listed = [asdict(info) for info in infos]
    installed = "; ".join(info.describe() for info in infos) or "none"
    try:
        backend = get_backend(choice, environ)
    except MsiV2Error as exc:
        fix = (
            "install a key backend for this host (on a Windows VM with VBS: msiv2-async-keyguard), or pick a "
            "viable one with --backend / $MSIV2_ASYNC_BACKEND"
        )
        return Check("backends", FAIL, str(exc), fix, {"installed": listed}), None
    details = {"installed": listed, "selected": backend.name, "binding_strength": backend.binding_strength}
    summary = f"using {backend.name} (strength {backend.binding_strength}); installed: {installed}"
    broken = [info for info in infos if info.reason and info.reason.startswith("could not be loaded")]
    if broken:
        fix = "reinstall or uninstall the broken backend distribution(s): " + ", ".join(
            f"{info.name} ({info.distribution or info.entry_point})" for info in broken
        )
        return Check("backends", WARN, summary, fix, details), backend
    return Check("backends", OK, summary, details=details), backend


def _attestation_library(
    infos: Sequence[BackendInfo], selected: KeyBackend | None, environ: Mapping[str, str]
) -> Check:
    name = "attestation_library"
    try:
        from ._native import _loader
        from ._native import attestation as native_attestation
    except Exception as exc:
        return Check(name, SKIP, f"not checked: the native layer is not available ({type(exc).__name__})")
    locate = getattr(native_attestation, "locate", None)
    if not callable(locate):
        return Check(name, SKIP, "not checked: this build has no AttestationClientLib locator")
    selected_attests = bool(selected is not None and selected.supports_attestation)
    keyguard = "keyguard"  # a KeyGuard key can be attested; without the library it is not
    wanted = (
        selected_attests
        or (selected is not None and selected.binding_strength == keyguard)
        or any(info.viable and (info.supports_attestation or info.name == keyguard) for info in infos)
    )
    if _loader.mode(environ) is None and not wanted:
        return Check(
            name,
            OK,
            f"not needed: no installed backend attests keys (AttestationClientLib serves KeyGuard keys on "
            f"Windows; this is {sys.platform})",
        )
    try:
        path = str(locate(environ=environ))
    except Exception as exc:
        status = FAIL if selected_attests else (WARN if wanted else OK)
        summary = f"not found: {exc}" + (
            "; KeyGuard keys will not be attested, and IMDS may refuse unattested keys"
            if wanted
            else " (no installed backend needs it)"
        )
        searched = list(getattr(exc, "searched", []) or [])
        fix = (
            "get AttestationClientLib.dll from the NuGet package "
            "Microsoft.Azure.Security.KeyGuardAttestation and set MSIV2_ASYNC_ATTESTATION_LIB to it, "
            "or request tokens with attestation=False"
        )
        return Check(name, status, summary, fix, {"searched": searched})
    missing_runtime = getattr(native_attestation, "missing_vc_runtime", None)
    missing: list[str] = []
    if callable(missing_runtime) and _loader.is_windows():
        missing = list(missing_runtime(path, environ=environ))
    if missing:
        fix = "install the Microsoft Visual C++ 2015-2022 Redistributable (x64)"
        return Check(name, WARN, f"found at {path}, but {', '.join(missing)} missing", fix, {"path": path})
    return Check(name, OK, f"found at {path}", details={"path": path})


def _tls(ca_bundle: str | None) -> Check:
    if not ca_bundle:
        return Check("tls", OK, "STS and resources verified against the system trust store (TLS 1.2+)")
    try:
        server_verifying_context(TlsSettings(ca_bundle=ca_bundle))
    except ConfigurationError as exc:
        fix = f"point --ca-bundle / ${CA_BUNDLE_ENV} at a readable PEM file of CA certificates"
        return Check("tls", FAIL, str(exc), fix, {"ca_bundle": ca_bundle})
    summary = f"system trust store plus CA bundle {ca_bundle} (TLS 1.2+)"
    return Check("tls", OK, summary, details={"ca_bundle": ca_bundle})


def _too_broad(pattern: str) -> bool:
    host = pattern.rsplit(":", 1)[0] if pattern.count(":") == 1 else pattern
    if "*" not in host:
        return False
    return host[host.rfind("*") + 1 :].count(".") < 2


def _token_hosts(extra: Sequence[str], environ: Mapping[str, str]) -> Check:
    try:
        patterns = _sts.allowed_token_hosts(extra, environ)
    except ConfigurationError as exc:
        fix = (
            "use host, *.domain, host:port or host:* patterns in --allowed-token-host / "
            f"${_sts.ALLOWED_TOKEN_HOSTS_ENV}"
        )
        return Check("token_hosts", FAIL, str(exc), fix)
    added = [p for p in patterns if p not in _sts.DEFAULT_ALLOWED_TOKEN_HOSTS]
    summary = "the mTLS certificate and tokens go only to " + ", ".join(patterns)
    if added:
        summary += f" ({len(added)} added by --allowed-token-host / ${_sts.ALLOWED_TOKEN_HOSTS_ENV})"
    details = {"patterns": list(patterns), "added": added}
    broad = [p for p in added if _too_broad(p)]
    if broad:
        fix = "allow only the STS hosts you expect, e.g. *.mtlsauth.microsoft.com or one host:port"
        return Check("token_hosts", WARN, f"{summary}; too broad: {', '.join(broad)}", fix, details)
    return Check("token_hosts", OK, summary, details=details)


def _without_credentials(url: str) -> str:
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable>"


def _no_proxy_covers(host: str, no_proxy: str) -> bool:
    """Whether a NO_PROXY value (names, .domains, ``*``, IP networks) exempts ``host``."""
    host = host.lower().strip("[]")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        name = entry.lstrip(".").rsplit(":", 1)[0] if entry.count(":") == 1 else entry.lstrip(".")
        if entry == "*" or (name and (host == name or host.endswith("." + name))):
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def _proxy(imds_endpoint: str | None, environ: Mapping[str, str]) -> Check:
    found = {k: v.strip() for k, v in environ.items() if k.lower() in PROXY_VARIABLES and v.strip()}
    shown = {k: (v if k.lower() == "no_proxy" else _without_credentials(v)) for k, v in sorted(found.items())}
    proxies = {k: v for k, v in shown.items() if k.lower() != "no_proxy"}
    if not proxies:
        summary = "no proxy variables set" if not found else "only NO_PROXY is set; no proxy configured"
        return Check("proxy", OK, summary, details={"variables": shown})
    scheme = urlsplit(imds_endpoint).scheme if imds_endpoint else "http"
    host = urlsplit(imds_endpoint).hostname if imds_endpoint else "169.254.169.254"
    applies = [k for k in proxies if k.lower() in (f"{scheme}_proxy", "all_proxy")]
    no_proxy = next((v for k, v in found.items() if k.lower() == "no_proxy"), "")
    bypassed = _no_proxy_covers(host or "", no_proxy)
    names = ", ".join(f"{k}={v}" for k, v in proxies.items())
    if applies and not bypassed:
        effect = (
            f"{'/'.join(applies)} would route IMDS ({imds_endpoint}) through a proxy in tools that honour it"
        )
    else:
        effect = "they do not apply to IMDS"
    summary = (
        f"{names} set; {effect}. msiv2_async never sends IMDS traffic through a proxy, and STS/resource "
        "calls use these only with proxy_from_environment=True"
    )
    fix = (
        f"nothing to change for msiv2_async's IMDS calls; for other tools add {host} to NO_PROXY. If "
        "the STS must be reached through the proxy, pass proxy_from_environment=True and make sure the proxy "
        "does not inspect TLS (it would drop the client certificate: AADSTS392200)"
    )
    return Check(
        "proxy", WARN, summary, fix, {"variables": shown, "applies_to_imds": applies and not bypassed}
    )


# -- checks against IMDS -----------------------------------------------------------------------------


def _probe_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment for the probing client: no persistent cache, no allowlist parsing."""
    dropped = (CACHE_DIR_ENV, _sts.ALLOWED_TOKEN_HOSTS_ENV)
    return {k: v for k, v in environ.items() if k not in dropped}


async def _capabilities(
    endpoint: str,
    identity: ManagedIdentity,
    backend: KeyBackend | None,
    ca_bundle: str | None,
    environ: Mapping[str, str],
    timeout: float,
) -> Capabilities | MsiV2Error:
    def chosen(selector: str) -> str | None:
        return identity.value if identity.selector == selector else None

    try:
        async with MsiV2Client(
            client_id=chosen("client_id"),
            object_id=chosen("object_id"),
            resource_id=chosen("resource_id"),
            imds_endpoint=endpoint,
            backend=backend or SoftwareBackend(),
            ca_bundle=ca_bundle,
            retry=DOCTOR_RETRY,
            environ=_probe_environment(environ),
        ) as client:
            return await client.get_capabilities(timeout=max(timeout, 0.1))
    except MsiV2Error as exc:
        return exc


def _imds_checks(
    endpoint: str, found: Capabilities | MsiV2Error, backend: KeyBackend | None
) -> tuple[Check, Check]:
    if isinstance(found, MsiV2TimeoutError):
        return Check("imds", FAIL, f"no answer from IMDS at {endpoint} in time", _IMDS_FIX), Check(
            "mtls_pop", SKIP, "not checked: IMDS did not answer"
        )
    if isinstance(found, MsiV2Error):
        return Check("imds", FAIL, f"probing IMDS at {endpoint} failed: {found}", _IMDS_FIX), Check(
            "mtls_pop", SKIP, "not checked: IMDS did not answer"
        )
    details = {"source": found.source.value, "reason": found.reason}
    if found.source is ManagedIdentitySource.UNAVAILABLE:
        reason = (found.reason or "").replace(_CORE_IMDS_HINT, "")
        return Check("imds", FAIL, f"no IMDS at {endpoint}: {reason}", _IMDS_FIX, details), Check(
            "mtls_pop", SKIP, "not checked: IMDS did not answer"
        )
    if found.source is ManagedIdentitySource.IMDS_V1_ONLY:
        imds = Check(
            "imds",
            WARN,
            f"IMDS at {endpoint} offers MSI v1 only ({found.reason}): bearer tokens work, MSI v2 does not",
            "use token_type='bearer' here, or run on a VM size/region where IMDS offers Managed Identity v2",
            details,
        )
        pop = Check(
            "mtls_pop",
            FAIL,
            "mtls_pop tokens are not possible: IMDS has no getplatformmetadata/issuecredential (v1 only)",
            "Managed Identity v2 must be enabled for this VM; until then only bearer tokens can be issued",
            details,
        )
        return imds, pop
    imds = Check(
        "imds", OK, f"IMDS v2 at {endpoint} (getplatformmetadata answered the probe)", details=details
    )
    if backend is None:
        pop = Check("mtls_pop", FAIL, "IMDS v2 is here but no key backend is usable", "see the backends line")
        return imds, pop
    summary = (
        f"mtls_pop tokens possible: binding strength {backend.binding_strength} (backend {backend.name})"
    )
    return imds, Check("mtls_pop", OK, summary, details={"max_binding_strength": backend.binding_strength})


def _imds_tls(url: str, ca_bundle: str | None) -> ssl.SSLContext:
    if url.startswith("https:"):
        return server_verifying_context(TlsSettings(ca_bundle=ca_bundle))
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # plain http: never used, costs nothing


async def _timed_send(
    request: HttpRequest, ca_bundle: str | None, timeout: float
) -> tuple[HttpResponse | TransportFailure, float]:
    """Send one IMDS request (no proxy, no redirect); the result and the local time in the middle of it."""
    client = await anyio.to_thread.run_sync(
        _http.imds_client, lambda: _imds_tls(request.url, ca_bundle), None
    )
    try:
        with anyio.fail_after(max(timeout, 0.1)):
            started = time.time()
            result = await _http.send(client, request, request.headers.get("x-ms-client-request-id", ""))
            return result, (started + time.time()) / 2
    finally:
        await client.aclose()


def _identity_check(
    result: HttpResponse | TransportFailure, identity: ManagedIdentity, correlation_id: str
) -> Check:
    fix = (
        "assign the identity to this VM (az vm identity assign) and check the --client-id/--object-id/"
        "--resource-id value; a new assignment can take a few minutes to reach IMDS"
    )
    if isinstance(result, TransportFailure):
        return Check("identity", FAIL, f"getplatformmetadata failed: {result.error}", _IMDS_FIX)
    try:
        _imds.check_response(result, endpoint=_imds.METADATA, correlation_id=correlation_id)
        metadata = _imds.parse_metadata(result)
    except MsiV2Error as exc:
        return Check("identity", FAIL, f"getplatformmetadata for {identity.describe()}: {exc}", fix)
    details = {
        "client_id": metadata.client_id,
        "tenant_id": metadata.tenant_id,
        "vm_id": metadata.cu_id.vm_id,
        "vmss_id": metadata.cu_id.vmss_id,
        "attestation_endpoint": metadata.attestation_endpoint,
    }
    summary = f"{identity.describe()}: client id {metadata.client_id}, tenant {metadata.tenant_id}"
    return Check("identity", OK, summary, details=details)


def _clock_check(result: HttpResponse | TransportFailure, local_time: float) -> Check:
    if isinstance(result, TransportFailure) or "date" not in result.headers:
        return Check("clock", SKIP, "not checked: no Date header from IMDS")
    try:
        server = email.utils.parsedate_to_datetime(result.headers["date"]).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return Check("clock", SKIP, "not checked: IMDS's Date header does not parse")
    skew = local_time - (server + 0.5)  # Date has 1 s resolution: the server's time is within [d, d+1)
    details = {"skew_seconds": round(skew, 1), "imds_date": result.headers["date"]}
    summary = f"local clock {skew:+.1f} s against IMDS's Date header"
    fix = (
        "synchronise the system clock (chronyd or systemd-timesyncd on Linux, w32time on Windows): "
        "certificate and token lifetimes are checked against it"
    )
    if abs(skew) <= SKEW_OK_SECONDS:
        return Check("clock", OK, summary, details=details)
    status = WARN if abs(skew) <= SKEW_FAIL_SECONDS else FAIL
    return Check("clock", status, summary, fix, details)


async def _identity_and_clock(
    endpoint: str,
    identity: ManagedIdentity,
    source: ManagedIdentitySource | None,
    ca_bundle: str | None,
    timeout: float,
) -> tuple[Check, Check]:
    correlation_id = str(uuid.uuid4())
    if source is ManagedIdentitySource.IMDS_V2:
        request = _imds.metadata_request(endpoint, identity, correlation_id)
    elif source is ManagedIdentitySource.IMDS_V1_ONLY:
        request = _imds_v1.probe_requests(endpoint, identity, correlation_id)[1]
    else:
        return Check("identity", SKIP, "not checked: IMDS did not answer"), Check(
            "clock", SKIP, "not checked: IMDS did not answer"
        )
    try:
        result, local_time = await _timed_send(request, ca_bundle, timeout)
    except TimeoutError:
        return Check("identity", FAIL, "getplatformmetadata did not answer in time", _IMDS_FIX), Check(
            "clock", SKIP, "not checked: IMDS did not answer in time"
        )
    if source is ManagedIdentitySource.IMDS_V2:
        identity_check = _identity_check(result, identity, correlation_id)
    else:
        identity_check = Check("identity", SKIP, "not checked: getplatformmetadata needs IMDS v2")
    return identity_check, _clock_check(result, local_time)


# -- the whole run -----------------------------------------------------------------------------------


def _skipped(name: str, why: str) -> Check:
    return Check(name, SKIP, f"not checked: {why}")


async def diagnose(options: DoctorOptions, environ: Mapping[str, str] = os.environ) -> Report:
    """Run every check within ``options.timeout`` seconds."""
    started = time.perf_counter()
    deadline = anyio.current_time() + options.timeout
    configuration, endpoint, identity = _configuration(options, environ)
    backends, backend = _backends(options.backend, environ)
    ca_bundle = options.ca_bundle or environ.get(CA_BUNDLE_ENV) or None
    checks = {
        "configuration": configuration,
        "backends": backends,
        "attestation_library": _attestation_library(available_backends(environ), backend, environ),
        "tls": await anyio.to_thread.run_sync(_tls, ca_bundle),
        "token_hosts": _token_hosts(options.allowed_token_hosts, environ),
        "proxy": _proxy(endpoint, environ),
    }
    if endpoint is None or identity is None:
        for name in ("imds", "mtls_pop", "identity", "clock"):
            checks[name] = _skipped(name, "the configuration is invalid")
    else:
        usable_ca = ca_bundle if checks["tls"].status == OK else None
        remaining = deadline - anyio.current_time()
        found = await _capabilities(endpoint, identity, backend, usable_ca, environ, remaining)
        checks["imds"], checks["mtls_pop"] = _imds_checks(endpoint, found, backend)
        source = found.source if isinstance(found, Capabilities) else None
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            for name in ("identity", "clock"):
                checks[name] = _skipped(name, f"--timeout {options.timeout:g} s reached")
        else:
            checks["identity"], checks["clock"] = await _identity_and_clock(
                endpoint, identity, source, usable_ca, remaining
            )
    return Report(
        checks=[checks[name] for name in ORDER],
        imds_endpoint=endpoint,
        identity=identity.describe() if identity is not None else None,
        elapsed_ms=(time.perf_counter() - started) * 1000,
    )


# -- CLI ---------------------------------------------------------------------------------------------


def add_parser(commands: Any) -> None:
    """Register ``doctor`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "doctor",
        help="check whether Managed Identity v2 works here, and why not",
        description="Check IMDS, the identity, the clock, key backends, AttestationClientLib, the TLS "
        "settings, the token-host allowlist and proxy variables; each line OK/WARN/FAIL with a fix. "
        "Exit status 0 without FAIL, else 1.",
        allow_abbrev=False,
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="bound on the whole run in seconds (%(default)s)",
    )
    add_endpoint_options(parser)
    add_identity_options(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="DEBUG logs of msiv2_async on stderr")


def options_from(namespace: argparse.Namespace) -> DoctorOptions:
    """:class:`DoctorOptions` from the parsed command line."""
    return DoctorOptions(
        imds_endpoint=namespace.imds_endpoint,
        client_id=namespace.client_id,
        object_id=namespace.object_id,
        resource_id=namespace.resource_id,
        backend=namespace.backend,
        allowed_token_hosts=tuple(namespace.allowed_token_host),
        ca_bundle=namespace.ca_bundle,
        timeout=namespace.timeout,
    )


def main(namespace: argparse.Namespace) -> int:
    """Run ``doctor``: the report on stdout, exit status 0 without FAIL."""
    options = options_from(namespace)
    if not options.timeout > 0:
        print("msiv2-async: error: --timeout must be positive", file=sys.stderr)
        return 2
    report = anyio.run(diagnose, options)
    print(json.dumps(report.as_json(), indent=2) if namespace.json else report.as_text())
    return 0 if report.ok else 1
