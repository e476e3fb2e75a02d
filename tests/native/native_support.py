"""Helpers of the native tests: stand-in controls, a test PKI and a local mTLS echo server."""

from __future__ import annotations

import json
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cffi
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

CONTROLS_CDEF = """
void StandinNCryptReboot(void); void StandinNCryptSetVbs(int); void StandinNCryptReset(void);
void StandinNCryptFailNext(const char *api, int32_t status, int count);
long StandinNCryptLiveHandles(void); long StandinNCryptLiveBuffers(void); long StandinNCryptSignCount(void);
long StandinNCryptBorrowCount(void); long StandinNCryptKeyCount(void);
long StandinCrypt32OutstandingRefs(void); long StandinCrypt32LiveStores(void);
long StandinCrypt32StoreCount(const wchar_t *name); void StandinCrypt32Reset(void);
long StandinWinHttpLiveHandles(void); long StandinWinHttpRequestsSent(void);
void StandinWinHttpReset(void); uint32_t StandinWinHttpLastDisabledFeatures(void);
uint32_t StandinWinHttpLastSecurityFlags(void);
long StandinAttestCalls(void); int StandinAttestMaxConcurrency(void); long StandinAttestLiveTokens(void);
long StandinAttestForeignThreadLogs(void); int StandinAttestLoggerRegistered(void);
void StandinAttestSetResult(int result); void StandinAttestSetLifetime(long seconds);
void StandinAttestReset(void);
"""


class Controls:
    """The stand-ins' test-only exports (same loaded libraries as the bindings use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ffi = cffi.FFI()
        self.ffi.cdef(CONTROLS_CDEF)
        self.ncrypt: Any = self.ffi.dlopen(str(directory / "libncrypt.so"))
        self.crypt32: Any = self.ffi.dlopen(str(directory / "libcrypt32.so"))
        self.winhttp: Any = self.ffi.dlopen(str(directory / "libwinhttp.so"))
        self.attest: Any = self.ffi.dlopen(str(directory / "libAttestationClientLib.so"))

    def reset(self) -> None:
        """Forget every key, certificate, fault and counter."""
        self.ncrypt.StandinNCryptReset()
        self.crypt32.StandinCrypt32Reset()
        self.attest.StandinAttestReset()
        self.winhttp.StandinWinHttpReset()

    def fail_next(self, api: str, status: int, count: int = 1) -> None:
        """The next ``count`` calls of the NCrypt function ``api`` return ``status``."""
        self.ncrypt.StandinNCryptFailNext(
            api.encode(), status - (1 << 32) if status >= 1 << 31 else status, count
        )

    def leaks(self) -> dict[str, int]:
        """Handles, references, buffers and tokens still held by the caller (all 0 when none leaked)."""
        return {
            "ncrypt handles": self.ncrypt.StandinNCryptLiveHandles(),
            "ncrypt buffers": self.ncrypt.StandinNCryptLiveBuffers(),
            "crypt32 context references": self.crypt32.StandinCrypt32OutstandingRefs(),
            "crypt32 stores": self.crypt32.StandinCrypt32LiveStores(),
            "winhttp handles": self.winhttp.StandinWinHttpLiveHandles(),
            "attestation tokens": self.attest.StandinAttestLiveTokens(),
        }

    def store_count(self, name: str = "My") -> int:
        """Certificates in the stand-in's CurrentUser store ``name``."""
        return int(self.crypt32.StandinCrypt32StoreCount(name))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


class Pki:
    """A test CA with a server certificate for 127.0.0.1/localhost; issues client certificates."""

    def __init__(self, directory: Path) -> None:
        now = datetime.now(timezone.utc)
        self.ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca = (
            x509.CertificateBuilder()
            .subject_name(_name("msiv2 native test CA"))
            .issuer_name(_name("msiv2 native test CA"))
            .public_key(self.ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.ca_key.public_key()), critical=False
            )
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self.ca.public_bytes(serialization.Encoding.PEM))
        server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.server_cert = self.issue(server_key.public_key(), "127.0.0.1", server=True)
        self.server_chain = directory / "server.pem"
        self.server_chain.write_bytes(
            self.server_cert.public_bytes(serialization.Encoding.PEM)
            + server_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def issue(
        self, public_key: rsa.RSAPublicKey, common_name: str, *, server: bool = False, days: int = 1
    ) -> x509.Certificate:
        """A certificate for ``public_key`` signed by the CA."""
        now = datetime.now(timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.ca.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False
            )
        )
        if server:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self.ca_key, hashes.SHA256())


class _EchoHandler(BaseHTTPRequestHandler):
    server: EchoServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/slow"):
            time.sleep(3)
        peer = self.connection.getpeercert()  # type: ignore[attr-defined]
        subject = dict(item[0] for item in peer["subject"]) if peer else {}
        payload = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode("latin-1"),
                "client_cn": subject.get("commonName"),
            }
        ).encode()
        if self.path.startswith("/redirect"):
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(201 if self.command == "POST" else 200, "Fine")
        self.send_header("Content-Type", "application/json")
        if self.path.startswith("/chunked"):
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(payload), 7):
                piece = payload[start : start + 7]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _answer
    do_POST = _answer


class EchoServer(ThreadingHTTPServer):
    """HTTPS on 127.0.0.1 that answers with what it saw (incl. the client certificate's CN)."""

    daemon_threads = True

    def __init__(self, pki: Pki, *, require_client_certificate: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _EchoHandler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(pki.server_chain))
        context.load_verify_locations(cafile=str(pki.ca_path))
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that abort on purpose (cancellation, rejected certificates) are not errors here."""

    @property
    def url(self) -> str:
        """``https://127.0.0.1:PORT``."""
        return f"https://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> EchoServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
