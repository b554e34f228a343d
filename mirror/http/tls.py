"""The daemon's TLS server context, from `[server] tls_cert` and `tls_key`.

Built once at start, before any component opens, so a bad certificate or key stops the
daemon with one line and a non-zero exit instead of a half-started service. TLS 1.2 is
the floor; OpenSSL negotiates the highest version both sides speak, so TLS 1.3 is what
current clients get. Python's server defaults already exclude weak ciphers and
compression; renegotiation is turned off as well.

The key file is refused when its mode gives the group or others any access, as the node
key is (keys.py, threat-model A4). The certificate and key are parsed with
`cryptography` first, because OpenSSL's own errors ("PEM lib") do not say which file is
wrong or why. A passphrase-protected key is refused rather than prompting on a terminal
a service does not have.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from mirror.errors import ConfigError

log = logging.getLogger("mirror")


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """An SSLContext serving `cert` (a PEM chain, leaf first) with `key`; ConfigError
    with a one-line reason when either cannot be used."""
    cert_path, key_path = Path(cert).expanduser(), Path(key).expanduser()
    _check_key(key_path)
    chain = _read_chain(cert_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.set_alpn_protocols(["http/1.1"])
    try:
        ctx.load_cert_chain(cert_path, key_path, password=_no_passphrase)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"{key_path}: TLS key does not match the certificate {cert_path}") from None
        raise ConfigError(f"{cert_path}: cannot load the TLS certificate and key ({exc.reason or exc})") from None
    except OSError as exc:  # the files changed between the checks and the load
        raise ConfigError(f"{exc.filename or cert_path}: cannot read ({exc.strerror or exc})") from None
    _warn_if_expiring(cert_path, chain[0])
    return ctx


def _check_key(path: Path) -> None:
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path}: TLS key is readable by others (mode {mode:o}); run chmod 600")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the TLS key ({exc.strerror or exc})") from None
    try:
        serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{path}: TLS key is passphrase-protected; give an unencrypted key (mode 0600)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{path}: not a PEM private key") from None


def _read_chain(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the TLS certificate ({exc.strerror or exc})") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"{path}: not a PEM certificate") from None


def _no_passphrase() -> bytes:
    raise ConfigError("TLS key is passphrase-protected; give an unencrypted key (mode 0600)")


def _warn_if_expiring(path: Path, leaf: x509.Certificate) -> None:
    """A certificate that has expired or soon will is served anyway (the operator may be
    replacing it), but said so at start: clients will refuse it."""
    left = leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    if left < dt.timedelta(0):
        log.warning("%s: TLS certificate expired on %s; clients will refuse it", path, leaf.not_valid_after_utc.date())
    elif left < dt.timedelta(days=14):
        log.warning("%s: TLS certificate expires on %s", path, leaf.not_valid_after_utc.date())
