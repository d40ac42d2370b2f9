"""TLS on the listener: the server's SSL context and the client certificate it verified.

:func:`server_ssl_context` builds the context from ``server.tls`` (TLS ≥ 1.2, the server's
certificate, client certificates for mTLS when a client CA is configured), checking each file on
its own first so that a bad one is refused with a :class:`~receiver.errors.ConfigError` naming its
key. :func:`peer_certificate` reads back, per request, the client certificate that context
verified, as a :class:`PeerCertificate` (subject and common name only); whether that subject may
call an endpoint is for :mod:`receiver.auth` to decide.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from receiver.errors import ConfigError
from receiver.settings import TLSSettings

__all__ = ["PeerCertificate", "peer_certificate", "server_ssl_context"]


@dataclass(frozen=True, slots=True)
class PeerCertificate:
    """A client certificate the TLS layer verified against ``server.tls.client_ca_file``."""

    common_name: str | None
    subject: str  # RFC 4514, most specific attribute first

    @classmethod
    def from_der(cls, der: bytes) -> PeerCertificate:
        name = x509.load_der_x509_certificate(der).subject
        cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if cns else None
        return cls(common_name=cn if isinstance(cn, str) else None, subject=name.rfc4514_string())


def peer_certificate(request: web.BaseRequest) -> PeerCertificate | None:
    """The client certificate of ``request``, when the TLS layer asked for one and verified it."""
    transport = request.transport
    if transport is None or not transport.get_extra_info("peercert"):  # empty unless verified
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return PeerCertificate.from_der(der) if der else None


def server_ssl_context(tls: TLSSettings) -> ssl.SSLContext:
    """The listener's TLS context: TLS ≥ 1.2, the server's certificate, client certificates if configured.

    Each file is checked on its own first, so a bad one gives a :class:`ConfigError` naming its key.
    """
    _check_certificates(tls.cert_file, "server.tls.cert_file")
    _check_private_key(tls.key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"config: server.tls.key_file: {tls.key_file} does not fit the certificate in "
                          f"server.tls.cert_file ({exc.reason or 'cannot load'})") from None
    if tls.client_ca_file is not None and tls.client_auth != "none":
        _check_certificates(tls.client_ca_file, "server.tls.client_ca_file")
        try:
            ctx.load_verify_locations(cafile=tls.client_ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"config: server.tls.client_ca_file: cannot load {tls.client_ca_file} "
                              f"({exc.reason or 'invalid'})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.client_auth == "require" else ssl.CERT_OPTIONAL
    return ctx


def _read(path: Path, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"config: {key}: cannot read {path}: {exc.strerror}") from None


def _check_certificates(path: Path, key: str) -> None:
    try:
        x509.load_pem_x509_certificates(_read(path, key))
    except ValueError:
        raise ConfigError(f"config: {key}: {path} holds no PEM certificate") from None


def _check_private_key(path: Path) -> None:
    key = "server.tls.key_file"
    try:
        serialization.load_pem_private_key(_read(path, key), password=None)
    except TypeError:
        raise ConfigError(f"config: {key}: {path} is encrypted; give an unencrypted private key") from None
    except ValueError:
        raise ConfigError(f"config: {key}: {path} holds no PEM private key") from None
