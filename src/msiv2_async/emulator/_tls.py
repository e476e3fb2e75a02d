"""TLS server contexts of the STS and the resource, switchable per connection.

Each HTTPS listener gets a :class:`SwitchingContext`: asyncio calls its ``wrap_bio`` once per accepted
connection, and it hands the connection to one of several pre-built contexts:

* ``normal``: the emulator CA's server certificate (SAN 127.0.0.1 and localhost), TLS ≥ 1.2, a client
  certificate requested (optional) and trusted only if it chains to the emulator CA;
* ``unknown_ca``: the same but with a server certificate from a foreign CA that no client trusts;
* ``wrong_hostname``: a server certificate from the emulator CA naming only ``wrong-hostname.invalid``
  and 127.0.0.2;
* ``tls11_only``: TLS 1.0/1.1 only (security level 0 so OpenSSL 3 really speaks TLS 1.1);
* rejection (:meth:`State.take_rejection`): a client certificate is required and only the foreign CA is
  trusted, so the emulator's own certificates fail the handshake with an ``unknown ca`` alert.

The choice is made when the connection is accepted, so a mode change affects new connections only.

asyncio closes a connection whose server-side handshake fails without sending what OpenSSL wrote for the
peer, so the client would only see an EOF. :class:`AlertingSSLObject` reports such a failure once as "want
read", which makes asyncio flush the alert first; the client then sees the real TLS alert (``unknown ca``,
``protocol version``, ``certificate required``...) and the failure is raised on the next handshake step.
"""

from __future__ import annotations

import os
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509

from ._ca import Authority, new_ec_key
from ._state import State

WRONG_HOSTS = ("wrong-hostname.invalid", "127.0.0.2")
"""The names on the ``wrong_hostname`` server certificate."""


class AlertingSSLObject(ssl.SSLObject):
    """An SSLObject that lets asyncio send the TLS alert of a failed server handshake before closing."""

    alert_bio: ssl.MemoryBIO | None = None
    failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        """Run the handshake; the first failure with an alert pending is deferred to the next call."""
        if self.failure is not None:
            raise self.failure
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            if self.alert_bio is None or not self.alert_bio.pending:
                raise
            self.failure = exc
            raise ssl.SSLWantReadError(ssl.SSL_ERROR_WANT_READ, "flush the TLS alert first") from exc


class SwitchingContext(ssl.SSLContext):
    """An SSLContext whose ``wrap_bio`` delegates to the context ``choose()`` returns at that moment."""

    choose: Callable[[], ssl.SSLContext]

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        """Create the connection's SSLObject from the context chosen for it."""
        sslobject = self.choose().wrap_bio(incoming, outgoing, server_side, server_hostname, session)
        if isinstance(sslobject, AlertingSSLObject):
            sslobject.alert_bio = outgoing
        return sslobject


def _context(
    directory: str,
    authority: Authority,
    certificate: x509.Certificate,
    *,
    trust_pem: bytes,
    require_client_certificate: bool = False,
    legacy: bool = False,
) -> ssl.SSLContext:
    """A server context presenting ``certificate`` (key: ``authority.server_key``)."""
    certificate_pem, key_pem = authority.server_chain_pem(certificate)
    certificate_path = os.path.join(directory, "server.pem")
    key_path = os.path.join(directory, "server.key")
    with open(certificate_path, "wb") as handle:
        handle.write(certificate_pem)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_pem)
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.sslobject_class = AlertingSSLObject
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if legacy:
                context.minimum_version = ssl.TLSVersion.TLSv1
                context.maximum_version = ssl.TLSVersion.TLSv1_1
                context.set_ciphers("DEFAULT:@SECLEVEL=0")
            else:
                context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(certificate_path, key_path)
    finally:
        os.remove(key_path)
        os.remove(certificate_path)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    context.load_verify_locations(cadata=trust_pem.decode("ascii"))
    return context


@dataclass
class ServerContexts:
    """The pre-built contexts of one emulator run, shared by the STS and the resource listeners."""

    modes: dict[str, ssl.SSLContext]
    reject: ssl.SSLContext

    @classmethod
    def build(cls, directory: str, authority: Authority, hosts: tuple[str, ...]) -> ServerContexts:
        """Create the foreign CA and every context (the server key is shared)."""
        foreign = Authority(
            hosts, ca_key=new_ec_key(), server_key=authority.server_key, common_name="msiv2_async foreign CA"
        )
        wrong_hosts = tuple(host for host in WRONG_HOSTS if host not in hosts)
        wrong = authority.issue_server_certificate(wrong_hosts)
        own = authority.ca_pem
        modes = {
            "normal": _context(directory, authority, authority.server_certificate, trust_pem=own),
            "unknown_ca": _context(directory, authority, foreign.server_certificate, trust_pem=own),
            "wrong_hostname": _context(directory, authority, wrong, trust_pem=own),
            "tls11_only": _context(
                directory, authority, authority.server_certificate, trust_pem=own, legacy=True
            ),
        }
        reject = _context(
            directory,
            authority,
            authority.server_certificate,
            trust_pem=foreign.ca_pem,
            require_client_certificate=True,
        )
        return cls(modes, reject)

    def listener(self, state: State, endpoint: str) -> SwitchingContext:
        """The context for the listener of ``endpoint`` ("token" or "resource")."""
        context = SwitchingContext(ssl.PROTOCOL_TLS_SERVER)

        def choose() -> ssl.SSLContext:
            if state.take_rejection(endpoint):
                return self.reject
            return self.modes[state.tls_mode(endpoint)]

        context.choose = choose
        return context
