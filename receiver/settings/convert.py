"""From one key of the file to its settings value: the conversions and checks the schema names.

Every function takes what :class:`~receiver.settings.read.Reader` read for one key (typed
already) and that key, and returns the settings value (``From``) or nothing (``Check``); an
unacceptable value is a ConfigError naming the key. Checks that need more than one section
are in :mod:`receiver.settings.checks`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from receiver.errors import ConfigError
from receiver.limiter import RateLimit
from receiver.secret import KeyFormatError, Secret, decode_keys
from receiver.settings.model import BasicCredential, JWTSettings, TLSSettings

if TYPE_CHECKING:
    from receiver.settings.schema import BasicFile, JWTFile, RateLimitFile, TLSFile

__all__ = [
    "basic_credential",
    "empty_section",
    "encryption_keys",
    "host_port",
    "jwt_settings",
    "long_enough",
    "module_prefixes",
    "not_blank",
    "not_supported",
    "rate_limit",
    "redis_key_prefix",
    "redis_url",
    "routing_key_names",
    "tls_settings",
    "token_file",
]

MIN_TOKEN_CHARS = 16
SYMMETRIC = ("HS256", "HS384", "HS512")
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA")
_ES_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_ROUTING_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §3.3 scope-token: no space, quote, backslash
_REDIS_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # no braces: the prefix is the keys' hash tag
_MODULE_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def host_port(listen: str, key: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) → ``(host, port)``."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"config: {key}: expected HOST:PORT, got {listen!r}")
    return host, int(port)


def tls_settings(tls: TLSFile, key: str) -> TLSSettings:
    """Client certificates are required by default when a client CA is given."""
    ca = tls.get("client_ca_file")
    client_auth = tls.get("client_auth", "require" if ca else "none")
    if client_auth != "none" and ca is None:
        raise ConfigError(f"config: {key}.client_auth: needs {key}.client_ca_file to check certificates")
    return TLSSettings(cert_file=tls["cert_file"], key_file=tls["key_file"], client_ca_file=ca,
                       client_auth=client_auth)


def rate_limit(limits: RateLimitFile, key: str) -> RateLimit:
    """Overrides and the global limit take what they leave out from the per-key limit."""
    default = RateLimit()
    per_key = limits.get("per_key", default.per_key)
    window = limits.get("window_seconds", default.window_seconds)
    overrides = {name: (o.get("per_key", per_key), o.get("window_seconds", window))
                 for name, o in limits.get("overrides", {}).items()}
    glob = limits.get("global")
    return RateLimit(per_key=per_key, window_seconds=window, overrides=overrides,
                     global_limit=None if glob is None else (glob["per_key"], glob.get("window_seconds", window)))


def routing_key_names(keys: dict[str, Secret], key: str) -> None:
    for name in keys:
        if not _ROUTING_KEY_NAME.fullmatch(name):
            raise ConfigError(f"config: {key}.{name}: names use letters, digits, _ . -")


def module_prefixes(prefixes: tuple[str, ...], key: str) -> None:
    """Dotted module names (``acme_pdrelay`` allows ``acme_pdrelay`` and ``acme_pdrelay.*``)."""
    for prefix in prefixes:
        if not _MODULE_PREFIX.fullmatch(prefix):
            raise ConfigError(f"config: {key}: expected a dotted module name such as acme_pdrelay, got {prefix!r}")


def long_enough(token: Secret, key: str) -> None:
    if len(token.reveal()) < MIN_TOKEN_CHARS:
        raise ConfigError(f"config: {key}: a token needs at least {MIN_TOKEN_CHARS} characters")


def token_file(path: Path, key: str) -> tuple[Secret, ...]:
    """One token a line; blank lines and ``#`` comments are skipped."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    tokens = [(n, Secret(line)) for n, line in enumerate(lines, 1) if line and not line.startswith("#")]
    if not tokens:
        raise ConfigError(f"config: {key}: {path} holds no token")
    for n, token in tokens:
        long_enough(token, f"{key}: line {n}")
    return tuple(token for _, token in tokens)


def basic_credential(basic: BasicFile, key: str) -> BasicCredential:
    if ("password" in basic) == ("password_file" in basic):
        raise ConfigError(f"config: {key}: give exactly one of password or password_file")
    if "password_file" in basic:
        path = basic["password_file"]
        password = Secret(path.read_text(encoding="utf-8").strip())
        if not password.reveal():
            raise ConfigError(f"config: {key}.password_file: {path} is empty")
    else:
        password = basic["password"]
    username = basic["username"]
    if not username or ":" in username:
        raise ConfigError(f"config: {key}.username: must be non-empty and contain no ':'")
    return BasicCredential(username, password)


def jwt_settings(jwt: JWTFile, key: str) -> JWTSettings:
    """Algorithms of one family; RS*/ES* read the public key file (HS* use ``security.jwt_secret``);
    ``audience`` and ``issuer`` are required, so that no token issued for another app opens pdrelay."""
    default = JWTSettings()
    algorithms = jwt.get("algorithms", default.algorithms)
    for alg in algorithms:
        if alg not in SYMMETRIC + ASYMMETRIC:
            raise ConfigError(f"config: {key}.algorithms: unsupported algorithm {alg!r} ('none' is never accepted)")
    if any(a in SYMMETRIC for a in algorithms) and any(a in ASYMMETRIC for a in algorithms):
        raise ConfigError(f"config: {key}.algorithms: do not mix HS* with RS*/ES* algorithms")
    public_key = None
    if any(a in ASYMMETRIC for a in algorithms):
        if "public_key_file" not in jwt:
            raise ConfigError(f"config: {key}.public_key_file: required for {', '.join(algorithms)}")
        public_key = _public_key(jwt["public_key_file"], algorithms, f"{key}.public_key_file")
    elif "public_key_file" in jwt:
        raise ConfigError(f"config: {key}.public_key_file: not used by HS* algorithms (they use "
                          "security.jwt_secret); list RS*/ES* algorithms to verify with a public key")
    scopes = {**default.scopes, **cast("dict[str, str]", jwt.get("scopes", {}))}  # every value read as a str
    for group, scope in scopes.items():
        if not _SCOPE_TOKEN.fullmatch(scope):
            raise ConfigError(f"config: {key}.scopes.{group}: expected one scope word, got {scope!r}")
    settings = JWTSettings(algorithms=algorithms, audience=jwt.get("audience"), issuer=jwt.get("issuer"),
                           public_key=public_key, leeway=jwt.get("leeway", default.leeway),
                           scope_claim=jwt.get("scope_claim", default.scope_claim), scopes=scopes)
    if (unbound := settings.unbound()) is not None:
        raise ConfigError(f"config: {key}.{unbound}")
    return settings


def _public_key(path: Path, algorithms: tuple[str, ...], key: str) -> str:
    """The PEM public key (from a public key or a certificate) that every one of ``algorithms`` can use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    data = path.read_bytes()
    try:
        public = x509.load_pem_x509_certificate(data).public_key() if b"CERTIFICATE" in data \
            else serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError(f"config: {key}: {path} holds no PEM public key") from None
    for alg in algorithms:
        if alg[:2] in ("RS", "PS"):
            fits = isinstance(public, rsa.RSAPublicKey)
        elif alg[:2] == "ES":
            fits = isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == _ES_CURVES[alg]
        else:
            fits = isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
        if not fits:
            raise ConfigError(f"config: {key}: {path} holds a key {alg} cannot use")
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < 2048:
        raise ConfigError(f"config: {key}: {path} holds a {public.key_size}-bit RSA key; at least 2048 bits are needed")
    pem: bytes = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def encryption_keys(keys: tuple[Secret, ...], key: str) -> None:
    """Each key is base64 of 32 bytes, and no key is given twice; messages name positions, never values."""
    try:
        decode_keys(keys, key)
    except KeyFormatError as exc:
        raise ConfigError(f"config: {exc}") from None


def redis_url(url: str, key: str) -> None:
    """``redis://HOST[:PORT][/DB]``, ``rediss://`` (TLS) or ``unix:///PATH``; never with a password in it (a
    URL is printed in errors and logs: the password goes in ``outbox.redis.password``, a secret). The
    message never repeats the URL, which might hold one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"config: {key}: not a valid URL ({exc})") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"config: {key}: expected a redis://, rediss:// or unix:// URL")
    if parts.password is not None or "password=" in parts.query:
        raise ConfigError(f"config: {key}: holds a password; give it as outbox.redis.password (a secret) instead")
    if parts.scheme == "unix":
        if not parts.path:
            raise ConfigError(f"config: {key}: a unix:// URL needs the socket's path (unix:///run/redis.sock)")
        return
    if not parts.hostname:
        raise ConfigError(f"config: {key}: the URL names no host")
    if port == 0:
        raise ConfigError(f"config: {key}: port 0 is not a port to connect to")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(f"config: {key}: the path must be a database number (/0), got {parts.path[:40]!r}")


def redis_key_prefix(prefix: str, key: str) -> None:
    if not _REDIS_PREFIX.fullmatch(prefix):
        raise ConfigError(f"config: {key}: 1 to 64 letters, digits, _ . : - (no braces), got {prefix[:80]!r}")


def not_blank(value: str, key: str) -> None:
    if not value.strip():
        raise ConfigError(f"config: {key}: is empty")


def not_supported(_value: Any, key: str) -> None:
    raise ConfigError(f"config: {key}: not supported by this version of pdrelay")


def empty_section(value: Any, key: str) -> None:
    if value != {}:
        raise ConfigError(f"config: {key}: this section is not supported by this version of pdrelay")
