"""The tree's own certificate authority and one certificate per kind of actor.

    python -m tools.pki ensure DIR    make what is missing (what `make run` does)
    python -m tools.pki rotate DIR    a new CA and new certificates; the old CA stays
                                      trusted until the next rotation
    python -m tools.pki stage DIR     a new CA in the bundle, certificates unchanged
    python -m tools.pki reissue DIR   new certificates from the newest CA
    python -m tools.pki show DIR      each certificate: kind, expiry, fingerprint

Keys are Ed25519, written 0600 in a 0700 directory and never committed. Each
certificate names its kind in a ``userhub:kind:<kind>`` URI (actors.wire.identity),
which is what a peer checks. ``ca.crt`` is the bundle every process trusts: after a
rotation it holds the new CA and the one before it. A process reads the bundle when
it starts, so one still running from before a rotation trusts only the old CA and
refuses a peer restarted with a certificate of the new one. ``rotate`` is therefore
for a tree restarted whole; under a running tree ``stage``, a restart of every
program (now all trust both CAs), ``reissue`` and a second restart change the
certificates with no refused link: tools.rotate does exactly that. The CA's key
(``ca.key``) is needed only here; a host that runs actors needs ``ca.crt`` and the
certificates of the kinds it runs, nothing else.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from actors.wire.identity import CA_FILE, KIND_URI_PREFIX, cert_file, key_file
from actors.wire.roles import KINDS

CA_KEY = "ca.key"
CA_CERT = "ca-current.crt"
CA_VALID_DAYS = 3650
CERT_VALID_DAYS = 825


_CA_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the start: no moment of wider permissions."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _pem_key(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _load_key(path: Path) -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def make_ca(directory: Path) -> None:
    """A new CA key and certificate (the previous CA, if any, stays in the bundle)."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "userhub"),
            # Unique even for two CAs made within one second: TLS finds a certificate's
            # issuer in the bundle by name, and the first of two alike would be taken.
            x509.NameAttribute(
                NameOID.COMMON_NAME,
                f"userhub tree CA {_now():%Y-%m-%d %H:%M:%S} {os.urandom(4).hex()}",
            ),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CA_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, None)
    )
    previous = _current_ca(directory)
    _write(directory / CA_KEY, _pem_key(key), 0o600)
    _write(directory / CA_CERT, _pem(cert), 0o644)
    bundle = _pem(cert) + (_pem(previous) if previous is not None else b"")
    _write(directory / CA_FILE, bundle, 0o644)


def _current_ca(directory: Path) -> x509.Certificate | None:
    path = directory / CA_CERT
    return x509.load_pem_x509_certificate(path.read_bytes()) if path.is_file() else None


def make_cert(directory: Path, kind: str) -> None:
    """A certificate for ``kind`` signed by the current CA, and its key."""
    ca_cert = _current_ca(directory)
    if ca_cert is None:
        raise FileNotFoundError(f"no CA in {directory}")
    ca_key = _load_key(directory / CA_KEY)
    key = ed25519.Ed25519PrivateKey.generate()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "userhub"),
                    x509.NameAttribute(NameOID.COMMON_NAME, kind),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(minutes=5))
        .not_valid_after(_now() + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(KIND_URI_PREFIX + kind)]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, None)
    )
    _write(directory / key_file(kind), _pem_key(key), 0o600)
    _write(directory / cert_file(kind), _pem(cert), 0o644)


def ensure(directory: Path, kinds: Iterable[str] = KINDS) -> list[str]:
    """Make the CA and any missing certificate; existing ones are kept. What was made."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    made: list[str] = []
    if _current_ca(directory) is None:
        make_ca(directory)
        made.append("ca")
    for kind in kinds:
        if (
            not (directory / cert_file(kind)).is_file()
            or not (directory / key_file(kind)).is_file()
        ):
            make_cert(directory, kind)
            made.append(kind)
    return made


def stage(directory: Path) -> None:
    """A new CA, trusted beside the current one; certificates stay as they are."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    make_ca(directory)


def staged(directory: Path, kinds: Iterable[str] = KINDS) -> bool:
    """Whether a CA was staged and some certificate is not yet issued by it."""
    ca = _current_ca(directory)
    if ca is None:
        return False
    for kind in kinds:
        path = directory / cert_file(kind)
        if not path.is_file():
            continue
        try:  # by signature: two CAs made within one second have the same name
            x509.load_pem_x509_certificate(path.read_bytes()).verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            return True
    return False


def reissue(directory: Path, kinds: Iterable[str] = KINDS) -> None:
    """A new certificate for every kind, signed by the newest CA."""
    for kind in kinds:
        make_cert(directory, kind)


def rotate(directory: Path, kinds: Iterable[str] = KINDS) -> None:
    """A new CA and a new certificate for every kind; the old CA stays trusted once."""
    stage(directory)
    reissue(directory, kinds)


def show(directory: Path) -> list[str]:
    lines = []
    for kind in KINDS:
        path = directory / cert_file(kind)
        if not path.is_file():
            lines.append(f"{kind:13} missing")
            continue
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        fingerprint = cert.fingerprint(hashes.SHA256()).hex()[:16]
        until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
        lines.append(f"{kind:13} valid until {until}  sha256 {fingerprint}...")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pki", description=__doc__)
    parser.add_argument("command", choices=("ensure", "rotate", "stage", "reissue", "show"))
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.command == "ensure":
        made = ensure(args.directory)
        if made:
            print(f"made {', '.join(made)} in {args.directory}")
    elif args.command == "rotate":
        rotate(args.directory)
        print(f"new CA and certificates in {args.directory}; restart the tree to use them")
    elif args.command == "stage":
        stage(args.directory)
        print(f"new CA staged in {args.directory}; restart every program, then reissue")
    elif args.command == "reissue":
        reissue(args.directory)
        print(f"new certificates in {args.directory}; restart every program to use them")
    else:
        print("\n".join(show(args.directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
