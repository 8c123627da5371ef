"""Fleet PKI: files and modes, chains checked by OpenSSL and by cryptography, SANs, usages, CRL."""

from __future__ import annotations

import ipaddress
import shutil
import stat
import subprocess
import sys

import pytest
from conftest import REPO_ROOT
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device.errors import AllscopeError
from sync.fleet.pki import (
    cert_fingerprint,
    init_pki,
    issue,
    load_central_keys,
    load_certificate,
    load_public_key,
    open_pki,
    revoke,
    revoked_serials,
    verify_client_certificate,
)

OPENSSL = shutil.which("openssl")


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def openssl_verify(pki, cert, purpose, crl=False):
    if OPENSSL is None:
        pytest.skip("openssl is not installed (Debian: apt-get install openssl)")
    args = [OPENSSL, "verify", "-CAfile", str(pki.ca_cert), "-purpose", purpose]
    if crl:
        args += ["-crl_check", "-CRLfile", str(pki.crl)]
    return subprocess.run(args + [str(cert)], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    pki = init_pki(tmp_path_factory.mktemp("fleet") / "pki", broker_hosts=["mqtt.clinic.example", "10.0.0.5",
                                                                           "localhost"])
    issue(pki, "dev-a")
    return pki


def test_init_writes_every_file_with_private_keys_0600(fleet):
    for name in ("ca.key", "broker.key", "central.key", "central_enc_x25519.key", "central_sign_ed25519.key",
                 "issued/dev-a.key"):
        path = fleet.root / name
        assert mode(path) == 0o600 and b"PRIVATE KEY" in path.read_bytes(), name
    for name in ("ca.crt", "broker.crt", "central.crt", "crl.pem", "central_enc_x25519.pub",
                 "central_sign_ed25519.pub", "issued/dev-a.crt"):
        path = fleet.root / name
        assert mode(path) == 0o644 and b"PRIVATE" not in path.read_bytes(), name
    assert mode(fleet.root) == 0o700
    assert not list(fleet.root.rglob("*.tmp")) and not list(fleet.root.rglob(".*"))


def test_init_refuses_to_overwrite_a_pki(fleet):
    before = fleet.ca_cert.read_bytes()
    with pytest.raises(AllscopeError, match="already exists"):
        init_pki(fleet.root)
    assert fleet.ca_cert.read_bytes() == before


def test_chains_and_usages_verify_with_openssl(fleet):
    for cert in (fleet.cert_path("dev-a"), fleet.cert_path("central")):
        result = openssl_verify(fleet, cert, "sslclient", crl=True)
        assert result.returncode == 0 and result.stdout.strip().endswith(": OK"), result.stderr
        assert openssl_verify(fleet, cert, "sslserver").returncode != 0  # a client certificate only
    assert openssl_verify(fleet, fleet.cert_path("broker"), "sslserver").returncode == 0
    assert openssl_verify(fleet, fleet.cert_path("broker"), "sslclient").returncode != 0


def test_chains_verify_with_cryptography_and_a_foreign_ca_does_not(fleet, tmp_path):
    ca = load_certificate(fleet.ca_cert)
    verify_client_certificate(ca, load_certificate(fleet.cert_path("dev-a")))
    rogue = init_pki(tmp_path / "rogue")
    with pytest.raises(AllscopeError, match="does not verify"):
        verify_client_certificate(ca, load_certificate(issue(rogue, "dev-a").cert))
    with pytest.raises(AllscopeError, match="does not verify"):
        verify_client_certificate(ca, load_certificate(fleet.cert_path("broker")))  # server usage only


def test_broker_certificate_names_its_hosts(fleet):
    from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

    broker = load_certificate(fleet.cert_path("broker"))
    san = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["mqtt.clinic.example", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    assert broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    store = Store([load_certificate(fleet.ca_cert)])
    PolicyBuilder().store(store).build_server_verifier(DNSName("mqtt.clinic.example")).verify(broker, [])
    PolicyBuilder().store(store).build_server_verifier(IPAddress(ipaddress.ip_address("10.0.0.5"))).verify(broker, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("evil.example")).verify(broker, [])


def test_identities_keys_and_validity(fleet):
    ca = load_certificate(fleet.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey) and ca.public_key().curve.name == "secp256r1"
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3649
    device = load_certificate(fleet.cert_path("dev-a"))
    assert device.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-a"
    assert device.not_valid_after_utc <= ca.not_valid_after_utc
    assert not device.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    central = load_certificate(fleet.cert_path("central"))
    assert central.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "central"
    enc, sign = load_central_keys(fleet)
    assert isinstance(enc, x25519.X25519PrivateKey) and isinstance(sign, ed25519.Ed25519PrivateKey)
    assert load_public_key(fleet.enc_pub).public_bytes_raw() == enc.public_key().public_bytes_raw()
    assert load_public_key(fleet.sign_pub).public_bytes_raw() == sign.public_key().public_bytes_raw()
    fingerprint = cert_fingerprint(device)
    assert len(fingerprint) == 95 and fingerprint.count(":") == 31


def test_issue_refuses_a_second_certificate_and_replace_revokes_the_old_one(tmp_path):
    pki = init_pki(tmp_path / "pki")
    first = issue(pki, "dev-b")
    with pytest.raises(AllscopeError, match="already has a certificate"):
        issue(pki, "dev-b")
    second = issue(pki, "dev-b", replace=True)
    assert second.serial != first.serial and second.fingerprint != first.fingerprint
    revoked = revoked_serials(pki)
    assert first.serial in revoked and second.serial not in revoked
    assert revoked[first.serial].extensions.get_extension_for_class(x509.CRLReason).value.reason == \
        x509.ReasonFlags.superseded
    crl = x509.load_pem_x509_crl(pki.crl.read_bytes())
    assert crl.is_signature_valid(load_certificate(pki.ca_cert).public_key())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 2
    assert crl.next_update_utc > crl.last_update_utc


def test_revoke_puts_the_certificate_on_the_crl_openssl_agrees(tmp_path):
    pki = init_pki(tmp_path / "pki")
    issued = issue(pki, "dev-c")
    assert openssl_verify(pki, issued.cert, "sslclient", crl=True).returncode == 0
    assert revoke(pki, "dev-c") == [issued.serial]
    assert revoke(pki, "dev-c") == []  # idempotent
    result = openssl_verify(pki, issued.cert, "sslclient", crl=True)
    assert result.returncode != 0 and "revoked" in (result.stdout + result.stderr)
    with pytest.raises(AllscopeError, match="no certificate for dev-zz"):
        revoke(pki, "dev-zz")


@pytest.mark.parametrize("name", ["Dev-A", "ab", "dev_a", "-dev", "a" * 65, "../etc"])
def test_bad_names_are_refused(tmp_path, name):
    pki = init_pki(tmp_path / "pki")
    with pytest.raises(AllscopeError, match="device id"):
        issue(pki, name)
    assert list((pki.root / "issued").iterdir()) == []


def test_open_pki_explains_a_missing_pki(tmp_path):
    with pytest.raises(AllscopeError, match="allscope central pki init"):
        open_pki(tmp_path / "nothing")


def allscope(*args):
    return subprocess.run([sys.executable, "-m", "device.cli", *args], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=120)


def test_pki_cli(tmp_path):
    root = tmp_path / "pki"
    made = allscope("central", "pki", "init", "--dir", str(root), "--broker-host", "broker.lan")
    assert made.returncode == 0, made.stderr
    assert "CA certificate" in made.stdout and (root / "ca.crt").exists()
    again = allscope("central", "pki", "init", "--dir", str(root))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "already exists" in again.stderr
    issued = allscope("central", "pki", "issue", "dev-x", "--dir", str(root))
    assert issued.returncode == 0 and "SHA-256" in issued.stdout and (root / "issued" / "dev-x.crt").exists()
    twice = allscope("central", "pki", "issue", "dev-x", "--dir", str(root))
    assert twice.returncode == 2 and "--replace" in twice.stderr and "Traceback" not in twice.stderr
    server = allscope("central", "pki", "issue", "broker", "--dir", str(root), "--server-host", "mqtt2.lan",
                      "--replace")
    assert server.returncode == 0, server.stderr
    san = load_certificate(root / "broker.crt").extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["mqtt2.lan"]
    missing = allscope("central", "pki", "issue", "dev-y", "--dir", str(tmp_path / "none"))
    assert missing.returncode == 2 and "pki init" in missing.stderr
