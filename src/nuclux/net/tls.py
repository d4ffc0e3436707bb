"""A node's TLS identity, pinned by the SHA-256 of its certificate instead of a CA.

Theory of operation
-------------------
Each node has an ECDSA P-256 key and a self-signed certificate whose subject CN is its
provider's Ethereum address. Nobody vouches for the certificate: the provider's Ethereum key
records ``fingerprint = sha256(certificate DER)`` in ``ProviderRegistry``, and a client that
read the fingerprint from the chain refuses a server presenting any other certificate.
Validity dates and names are therefore never checked; the pin is the whole trust decision.

Both sides speak TLS 1.3 only. The server asks for no client certificate: clients prove
their Ethereum identity per request (``nuclux.core.auth``), bound to this fingerprint. A
client pins in one of two ways:

* ``client_ssl_context(fingerprint)``: the context's SSL objects check the peer certificate
  the moment the handshake completes and fail it otherwise, so no application byte is ever
  sent to an impostor. Works for aiohttp (``TCPConnector(ssl=ctx)``) and asyncio streams.
* ``pinned(fingerprint)``: aiohttp's own ``Fingerprint`` (``session.get(url, ssl=...)``).
  aiohttp then uses its own unverified context, which would also offer TLS 1.2; our
  servers accept only 1.3 and TLS 1.3's downgrade protection holds, so the pin still binds.

``peer_errors()`` turns either kind of mismatch into ``PeerIdentityMismatch``;
``check_peer`` does the same check by hand on an established stream.

Files: the certificate (0644) and the unencrypted key (0600, refused if group- or
world-readable, as ssh does) are written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import os
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from nuclux.core.auth import address_bytes, to_address
from nuclux.errors import IntegrityError, PeerIdentityMismatch, UsageError

DEFAULT_VALIDITY_DAYS: Final = 3650
ALPN: Final = ("http/1.1",)


def certificate_fingerprint(der: bytes) -> bytes:
    """The pin: SHA-256 of a certificate's DER encoding (32 bytes)."""
    return hashlib.sha256(der).digest()


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """A P-256 key and its self-signed certificate; ``repr`` never shows the key."""

    certificate_pem: bytes
    key_pem: bytes = field(repr=False)
    address: str = field(init=False)
    fingerprint: bytes = field(init=False)

    def __post_init__(self) -> None:
        try:
            cert = x509.load_pem_x509_certificate(self.certificate_pem)
            key = serialization.load_pem_private_key(self.key_pem, password=None)
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            address = to_address(address_bytes(str(names[0].value) if names else ""))
        except (ValueError, TypeError, UsageError) as err:
            raise UsageError(
                f"not a Nuclux TLS identity (PEM key and certificate): {err}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise UsageError("the TLS key must be ECDSA P-256")
        if key.public_key() != cert.public_key():
            raise IntegrityError("the TLS key does not belong to the certificate")
        object.__setattr__(self, "address", address)
        der = cert.public_bytes(serialization.Encoding.DER)
        object.__setattr__(self, "fingerprint", certificate_fingerprint(der))

    @classmethod
    def generate(cls, address: str, *, validity_days: int = DEFAULT_VALIDITY_DAYS) -> NodeIdentity:
        """A fresh key and certificate with subject CN = ``address`` (checksummed)."""
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, to_address(address_bytes(address)))]
        )
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=validity_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key_pem)

    def save(self, cert_path: Path, key_path: Path) -> None:
        """Write both files atomically (the key 0600). A crash between the two leaves a pair
        that ``load`` refuses with ``IntegrityError``, never a silently different identity."""
        _write_atomic(key_path, self.key_pem, 0o600)
        _write_atomic(cert_path, self.certificate_pem, 0o644)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> NodeIdentity:
        try:
            if os.stat(key_path).st_mode & 0o077:
                raise UsageError(f"{key_path} is readable by others: chmod 600 {key_path}")
            return cls(cert_path.read_bytes(), key_path.read_bytes())
        except OSError as err:
            raise UsageError(
                f"cannot read the TLS identity: {err}; run `nuclux node init`"
            ) from None


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _tls13(purpose: int) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(list(ALPN))
    return ctx


def server_ssl_context(identity: NodeIdentity) -> ssl.SSLContext:
    """TLS 1.3 only, serving ``identity``'s certificate, no client certificates."""
    ctx = _tls13(ssl.PROTOCOL_TLS_SERVER)
    ctx.verify_mode = ssl.CERT_NONE
    # ssl loads keys only from files: write the key encrypted under a one-time password
    # to a private temporary directory, so the plaintext key never lands there.
    password = os.urandom(32)
    key = serialization.load_pem_private_key(identity.key_pem, password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    with tempfile.TemporaryDirectory(prefix="nuclux-tls-") as tmp:
        cert_file, key_file = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        cert_file.write_bytes(identity.certificate_pem)
        key_file.write_bytes(encrypted)
        ctx.load_cert_chain(cert_file, key_file, password=password)
    return ctx


class PinMismatchError(ssl.SSLCertVerificationError):
    """Raised inside the handshake (so asyncio and aiohttp fail the connection cleanly)."""


def client_ssl_context(expected_fingerprint: bytes | None = None) -> ssl.SSLContext:
    """TLS 1.3 only, no CA verification; pinned to ``expected_fingerprint`` when given."""
    ctx = _tls13(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if expected_fingerprint is not None:
        expected = _check_fingerprint(expected_fingerprint)

        class PinnedSSLObject(ssl.SSLObject):
            def do_handshake(self) -> None:
                super().do_handshake()  # raises SSLWantReadError until the handshake is done
                got = peer_fingerprint(self)
                if not hmac.compare_digest(got, expected):
                    raise PinMismatchError(_mismatch(expected, got))

        ctx.sslobject_class = PinnedSSLObject
    return ctx


def pinned(fingerprint: bytes) -> aiohttp.Fingerprint:
    """aiohttp's SHA-256 certificate pin, for ``ssl=`` on a session or request."""
    return aiohttp.Fingerprint(_check_fingerprint(fingerprint))


def peer_fingerprint(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> bytes:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise PeerIdentityMismatch("the peer presented no TLS certificate")
    return certificate_fingerprint(der)


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, expected: bytes) -> None:
    """``PeerIdentityMismatch`` unless the peer's certificate has ``expected`` as its pin
    (``ssl_object`` is e.g. ``writer.get_extra_info("ssl_object")``)."""
    if ssl_object is None:
        raise PeerIdentityMismatch("the connection is not TLS: refusing to talk to the peer")
    got = peer_fingerprint(ssl_object)
    if not hmac.compare_digest(got, _check_fingerprint(expected)):
        raise PeerIdentityMismatch(_mismatch(expected, got))


@contextlib.contextmanager
def peer_errors() -> Iterator[None]:
    """Map aiohttp's and the pinned context's mismatch errors to ``PeerIdentityMismatch``."""
    try:
        yield
    except aiohttp.ServerFingerprintMismatch as err:
        raise PeerIdentityMismatch(
            f"{err.host}:{err.port} {_mismatch(err.expected, err.got)}"
        ) from err
    except aiohttp.ClientConnectorCertificateError as err:
        if isinstance(err.certificate_error, PinMismatchError):
            raise PeerIdentityMismatch(f"{err.host}:{err.port} {err.certificate_error}") from err
        raise
    except PinMismatchError as err:
        raise PeerIdentityMismatch(str(err)) from err


def _check_fingerprint(fingerprint: bytes) -> bytes:
    if not isinstance(fingerprint, bytes) or len(fingerprint) != 32:
        raise UsageError("a certificate fingerprint is the 32-byte SHA-256 of its DER encoding")
    return fingerprint


def _mismatch(expected: bytes, got: bytes) -> str:
    return (
        f"presented certificate sha256 {got.hex()}, but its registry entry says"
        f" {expected.hex()}: refusing the peer"
    )
