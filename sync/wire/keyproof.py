"""Binding a device's Ed25519 signing key to its enrolment: a proof made with its TLS certificate's key.

The device's signing key is generated on the device, so the central first learns it
from a ``hello``. A self-signed hello only shows that the sender holds *some* key; to
show that the key belongs to the enrolled appliance, the hello's ``extra`` carries::

    "proof": {"v": 1, "cert": base64 DER of the device's TLS certificate (from its bundle),
              "created": ISO 8601 UTC, "sig": base64 signature by the certificate's private key}

over the canonical JSON of ``{"purpose": PURPOSE, "device": <device id>,
"signing_key": <base64 raw Ed25519 key>, "created": <created>}``. The central pins
the key only when the certificate's SHA-256 equals the one it recorded at enrolment
(``Device.cert_fingerprint``: re-enrolment issues a new certificate, so an old bundle
no longer proves anything) and the signature verifies (:func:`check_proof`).

Older devices send no proof; older centrals ignore it (``extra`` is open), so the
envelope format stays at version 1. The signature algorithm follows the certificate's
key: ECDSA P-256 with SHA-256 (what the fleet PKI issues), Ed25519, or RSA PKCS#1 v1.5.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from sync.wire.envelope import EnvelopeError, canonical
from sync.wire.keys import raw_public

PURPOSE = "allscope-signing-key-proof-v1"
PROOF_VERSION = 1
MAX_CERT_BYTES = 8 * 1024

# Refusal reasons (IngestError.reason, at most 32 characters)
NO_KEY_PROOF = "no_key_proof"
BAD_KEY_PROOF = "bad_key_proof"


def normal_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint in any usual spelling (colons or not, any case) as 64 lower-case hex digits, or ""."""
    digits = "".join(ch for ch in str(text or "").lower() if ch not in ": \t")
    return digits if len(digits) == 64 and all(ch in "0123456789abcdef" for ch in digits) else ""


def _message(device_id: str, signing_public, created: str) -> bytes:
    key = base64.b64encode(raw_public(signing_public)).decode("ascii")
    return canonical({"purpose": PURPOSE, "device": device_id, "signing_key": key, "created": created})


def make_proof(*, device_id: str, signing_public, cert_pem_or_der: bytes, tls_private_key, created: str) -> dict:
    """The proof for ``hello`` extra: the TLS key vouches for ``signing_public`` (the Ed25519 key) for ``device_id``."""
    data = bytes(cert_pem_or_der)
    cert = x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----") else \
        x509.load_der_x509_certificate(data)
    message = _message(device_id, signing_public, created)
    if isinstance(tls_private_key, ec.EllipticCurvePrivateKey):
        sig = tls_private_key.sign(message, ec.ECDSA(hashes.SHA256()))
    elif isinstance(tls_private_key, ed25519.Ed25519PrivateKey):
        sig = tls_private_key.sign(message)
    elif isinstance(tls_private_key, rsa.RSAPrivateKey):
        sig = tls_private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError(f"cannot sign a key proof with a {type(tls_private_key).__name__}")
    der = cert.public_bytes(serialization.Encoding.DER)
    return {"v": PROOF_VERSION, "cert": base64.b64encode(der).decode("ascii"), "created": created,
            "sig": base64.b64encode(sig).decode("ascii")}


def check_proof(proof, *, device_id: str, signing_public, enrolled_cert_fingerprint: str) -> str:
    """Check a hello's proof against the certificate recorded at enrolment; returns that certificate's fingerprint.

    Raises ``EnvelopeError`` with reason ``no_key_proof`` (none sent) or ``bad_key_proof`` (anything else),
    each one line.
    """
    where = f"hello from {device_id}"
    if proof is None:
        raise EnvelopeError(NO_KEY_PROOF, f"{where} carries no proof from its enrolment certificate (update the "
                                          f"device's software, or register its key: allscope central register-key)")

    def bad(message: str):
        raise EnvelopeError(BAD_KEY_PROOF, f"{where}: {message}")

    if not isinstance(proof, dict) or proof.get("v") != PROOF_VERSION or isinstance(proof.get("v"), bool):
        bad(f"key proof of an unknown version (this central reads version {PROOF_VERSION})")
    fields = {name: proof.get(name) for name in ("cert", "created", "sig")}
    if not all(isinstance(value, str) for value in fields.values()) or len(fields["created"]) > 40:
        bad("key proof needs cert, created and sig strings")
    try:
        der = base64.b64decode(fields["cert"].encode("ascii"), validate=True)
        sig = base64.b64decode(fields["sig"].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        bad("key proof is not base64")
    if len(der) > MAX_CERT_BYTES:
        bad("key proof certificate is too large")
    expected = normal_fingerprint(enrolled_cert_fingerprint)
    if not expected:
        bad("no certificate fingerprint was recorded at enrolment (enrol the device again)")
    if hashlib.sha256(der).hexdigest() != expected:
        bad("the certificate is not the one issued at the device's current enrolment (an old or foreign bundle)")
    try:
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        public = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        bad("key proof certificate is not readable")
    if not names or names[0].value != device_id:
        bad("key proof certificate is issued to another name")
    message = _message(device_id, signing_public, fields["created"])
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public, ed25519.Ed25519PublicKey):
            public.verify(sig, message)
        elif isinstance(public, rsa.RSAPublicKey):
            public.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            bad(f"key proof certificate has an unsupported key ({type(public).__name__})")
    except InvalidSignature:
        bad("the key proof's signature does not verify with the enrolment certificate")
    return expected
