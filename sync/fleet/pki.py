"""The fleet PKI: a CA, the broker's server certificate, client certificates, the CRL, central's envelope keys.

Layout of a PKI directory (``allscope central pki init --dir PKI``)::

    ca.crt / ca.key                         ECDSA P-256 fleet CA (10 years)
    broker.crt / broker.key                 mosquitto's server certificate (SAN: the broker's names and IPs)
    central.crt / central.key               the central server's client certificate (CN "central")
    issued/<device>.crt                     device client certificates (CN = device id); the key goes into the
                                            enrolment bundle only (``write_bundle`` deletes issued/<device>.key)
    crl.pem                                 revoked client certificates (mosquitto ``crlfile``)
    central_enc_x25519.key / .pub           central's envelope decryption key (devices encrypt to it)
    central_sign_ed25519.key / .pub         central's acknowledgement signing key (devices verify with it)

Private keys are PKCS#8 PEM, mode 0600, written atomically; public keys are
SubjectPublicKeyInfo PEM. Client certificates carry only the clientAuth usage
and the broker's only serverAuth, so OpenSSL refuses one in the other's place.
The receivers need only ``central.*``, ``central_*`` and ``ca.crt``. ``ca.key`` signs enrolments and
revocations: on the central host (0600, the service user's) for web enrolment, or kept offline and brought
to the CLI for each enrolment and revocation (README, "Keys and certificates").
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device.errors import AllscopeError
from device.store.atomic import write_atomic

DEFAULT_PKI_DIR = Path("var-central/pki")
DEFAULT_BROKER_HOSTS = ("localhost", "127.0.0.1")
CA_DAYS = 3650
LEAF_DAYS = 1825  # appliances may sit offline for long stretches: five years, renewed by re-enrolment
CRL_DAYS = 3650   # an expired CRL would lock every client out, so it is long-lived and rewritten on revocation
ORGANISATION = "allscope fleet"
SPECIAL_NAMES = ("central", "broker")  # top-level certificates; never device ids


def pki_dir(path: str | os.PathLike | None) -> Path:
    """The PKI directory: the given one, else $ALLSCOPE_PKI, else var-central/pki."""
    return Path(path or os.environ.get("ALLSCOPE_PKI") or DEFAULT_PKI_DIR).expanduser()


@dataclass(frozen=True)
class Pki:
    root: Path

    ca_cert = property(lambda self: self.root / "ca.crt")
    ca_key = property(lambda self: self.root / "ca.key")
    crl = property(lambda self: self.root / "crl.pem")
    enc_key = property(lambda self: self.root / "central_enc_x25519.key")
    enc_pub = property(lambda self: self.root / "central_enc_x25519.pub")
    sign_key = property(lambda self: self.root / "central_sign_ed25519.key")
    sign_pub = property(lambda self: self.root / "central_sign_ed25519.pub")

    def cert_path(self, name: str) -> Path:
        return self.root / f"{name}.crt" if name in SPECIAL_NAMES else self.root / "issued" / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        return self.cert_path(name).with_suffix(".key")

    def load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        return load_certificate(self.ca_cert), load_private_key(self.ca_key)


@dataclass(frozen=True)
class Issued:
    name: str
    cert: Path
    key: Path
    serial: int
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex (as `openssl x509 -fingerprint`)


# --- small helpers shared by enrolment, the agent and the central server ---------------------------------

def fingerprint(data: bytes) -> str:
    """SHA-256 of ``data`` as upper-case colon-separated hex (95 characters)."""
    return ":".join(f"{b:02X}" for b in hashlib.sha256(data).digest())


def cert_fingerprint(cert: x509.Certificate) -> str:
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def private_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise AllscopeError(f"{what} {path}: {error.strerror or error}") from None


def load_certificate(path: str | os.PathLike) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(Path(path), "certificate"))
    except ValueError:
        raise AllscopeError(f"certificate {path}: not a PEM certificate") from None


def load_private_key(path: str | os.PathLike):
    try:
        return serialization.load_pem_private_key(_read(Path(path), "private key"), password=None)
    except (ValueError, TypeError):
        raise AllscopeError(f"private key {path}: not an unencrypted PEM private key") from None


def load_public_key(path: str | os.PathLike):
    try:
        return serialization.load_pem_public_key(_read(Path(path), "public key"))
    except ValueError:
        raise AllscopeError(f"public key {path}: not a PEM public key") from None


def load_central_keys(pki: Pki) -> tuple[x25519.X25519PrivateKey, ed25519.Ed25519PrivateKey]:
    """Central's envelope decryption key and acknowledgement signing key."""
    return load_private_key(pki.enc_key), load_private_key(pki.sign_key)


# --- building certificates --------------------------------------------------------------------------------

def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts) -> x509.SubjectAlternativeName:
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _make_ca(common_name: str = "allscope fleet CA"):
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert, key


def _make_leaf(ca_cert, ca_key, common_name: str, server_hosts=None):
    """A client certificate (clientAuth), or a server certificate (serverAuth) when ``server_hosts`` is given."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=True, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    # A client certificate names its holder in the SAN too (RFC 5280 verifiers such as cryptography's want one).
    san = _san(server_hosts) if server_hosts else x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(f"urn:allscope:{common_name}")])
    builder = builder.add_extension(san, critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the PKI directory ------------------------------------------------------------------------------------

def init_pki(root: str | os.PathLike, broker_hosts=DEFAULT_BROKER_HOSTS, force: bool = False) -> Pki:
    """Create the CA, broker and central certificates, an empty CRL and central's envelope keys.

    Everything is generated in memory first and ``ca.crt`` is written last, so
    an interrupted run leaves no PKI that looks complete.
    """
    pki = Pki(Path(root))
    if pki.ca_cert.exists() and not force:
        raise AllscopeError(f"a fleet PKI already exists in {pki.root} (--force replaces it and every certificate)")
    hosts = tuple(dict.fromkeys(h.strip() for h in broker_hosts if h.strip())) or DEFAULT_BROKER_HOSTS
    ca_cert, ca_key = _make_ca()
    broker_cert, broker_key = _make_leaf(ca_cert, ca_key, "broker", server_hosts=hosts)
    central_cert, central_key = _make_leaf(ca_cert, ca_key, "central")
    enc = x25519.X25519PrivateKey.generate()
    sign = ed25519.Ed25519PrivateKey.generate()
    (pki.root / "issued").mkdir(parents=True, exist_ok=True)
    os.chmod(pki.root, 0o700)
    for name, cert, key in (("broker", broker_cert, broker_key), ("central", central_cert, central_key)):
        write_atomic(pki.key_path(name), private_pem(key), mode=0o600)
        write_atomic(pki.cert_path(name), _pem(cert), mode=0o644)
    write_atomic(pki.enc_key, private_pem(enc), mode=0o600)
    write_atomic(pki.enc_pub, public_pem(enc.public_key()), mode=0o644)
    write_atomic(pki.sign_key, private_pem(sign), mode=0o600)
    write_atomic(pki.sign_pub, public_pem(sign.public_key()), mode=0o644)
    write_atomic(pki.ca_key, private_pem(ca_key), mode=0o600)
    _write_crl(pki, ca_cert, ca_key, [], number=1)
    write_atomic(pki.ca_cert, _pem(ca_cert), mode=0o644)
    return pki


def open_pki(root: str | os.PathLike | None) -> Pki:
    pki = Pki(pki_dir(root))
    if not pki.ca_cert.exists():
        raise AllscopeError(f"no fleet PKI in {pki.root}: run `allscope central pki init --dir {pki.root}` first")
    return pki


def check_name(name: str) -> str:
    from sync.wire.topics import check_device_id

    try:
        return check_device_id(name)
    except ValueError as error:
        raise AllscopeError(str(error)) from None


def issue(pki: Pki, name: str, server_hosts=None, replace: bool = False) -> Issued:
    """Issue a client certificate for ``name`` (or a server certificate for ``server_hosts``).

    A name that already has a certificate is refused unless ``replace``; the
    replaced certificate is then revoked (reason: superseded), so a lost or
    copied bundle stops working once the broker has reloaded the CRL.
    """
    check_name(name)
    cert_path, key_path = pki.cert_path(name), pki.key_path(name)
    old = load_certificate(cert_path) if cert_path.exists() else None
    if old is not None and not replace:
        raise AllscopeError(f"{name} already has a certificate ({cert_path}); use --replace to issue a new one")
    ca_cert, ca_key = pki.load_ca()
    cert, key = _make_leaf(ca_cert, ca_key, name, server_hosts=list(server_hosts or ()) or None)
    write_atomic(key_path, private_pem(key), mode=0o600)
    write_atomic(cert_path, _pem(cert), mode=0o644)
    if old is not None and not is_server_certificate(old):
        revoke_serials(pki, [old.serial_number], reason=x509.ReasonFlags.superseded)
    return Issued(name, cert_path, key_path, cert.serial_number, cert_fingerprint(cert))


def is_server_certificate(cert: x509.Certificate) -> bool:
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.SERVER_AUTH in usages


def revoked_serials(pki: Pki) -> dict[int, x509.RevokedCertificate]:
    if not pki.crl.exists():
        return {}
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    return {entry.serial_number: entry for entry in crl}


def revoke(pki: Pki, name: str) -> list[int]:
    """Put the current certificate of ``name`` on the CRL; returns the serials newly revoked."""
    check_name(name)
    path = pki.cert_path(name)
    if not path.exists():
        raise AllscopeError(f"no certificate for {name} in {pki.root}")
    return revoke_serials(pki, [load_certificate(path).serial_number])


def revoke_serials(pki: Pki, serials, reason=x509.ReasonFlags.key_compromise) -> list[int]:
    existing = revoked_serials(pki)
    new = [serial for serial in serials if serial not in existing]
    if not new:
        return []
    now = _now()
    entries = list(existing.values())
    for serial in new:
        entries.append(x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
                       .add_extension(x509.CRLReason(reason), critical=False).build())
    number = 1
    if pki.crl.exists():
        try:
            crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
        except (ValueError, x509.ExtensionNotFound):
            pass
    ca_cert, ca_key = pki.load_ca()
    _write_crl(pki, ca_cert, ca_key, entries, number)
    return new


def _write_crl(pki: Pki, ca_cert, ca_key, entries, number: int) -> None:
    now = _now()
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now - dt.timedelta(minutes=5)).next_update(now + dt.timedelta(days=CRL_DAYS))
               .add_extension(x509.CRLNumber(number), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    write_atomic(pki.crl, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM),
                 mode=0o644)


def verify_client_certificate(ca_cert: x509.Certificate, cert: x509.Certificate) -> None:
    """Check that ``cert`` is a client certificate issued by ``ca_cert`` and valid now (one-line error if not)."""
    from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

    try:
        PolicyBuilder().store(Store([ca_cert])).build_client_verifier().verify(cert, [])
    except VerificationError as error:
        raise AllscopeError(f"the certificate does not verify against the fleet CA: {error}") from None


def common_name(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""
