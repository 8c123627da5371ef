"""Envelope v1 and signed acks: round trips, every header field bound, strict parsing, forged acks refused."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from sync.wire import acks, envelope, keys
from sync.wire.envelope import EnvelopeError, canonical, decrypt, parse, seal, verify

PLAINTEXT = json.dumps({"id": 12, "identifier": "P-0012", "name": "Zoë Example", "wbc": 48.2}).encode()
HEADER = dict(kind="record", device_id="clinic-a-01", record="patient:12", version=3, entry=41,
              created="2026-11-22T10:00:00.123Z")


@pytest.fixture(scope="module")
def device_key():
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def server_key():
    return X25519PrivateKey.generate()


def _sealed(device_key, server_key, plaintext=PLAINTEXT, **changes):
    return seal(plaintext, signing_key=device_key, server_public=server_key.public_key(), **{**HEADER, **changes})


def _fields(data: bytes) -> dict:
    return json.loads(data)


def _resign(fields: dict, key: Ed25519PrivateKey) -> bytes:
    fields = dict(fields)
    fields.pop("sig", None)
    fields["sig"] = base64.b64encode(key.sign(canonical(fields))).decode()
    return canonical(fields)


def _reason(call) -> str:
    with pytest.raises(EnvelopeError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return caught.value.reason


# --- round trips -----------------------------------------------------------------------------------------

def test_seal_parse_verify_decrypt_round_trip(device_key, server_key):
    data = _sealed(device_key, server_key, extra={"note": "x"})
    env = parse(data)
    assert (env.kind, env.device, env.record, env.version, env.entry, env.created) == (
        "record", "clinic-a-01", "patient:12", 3, 41, "2026-11-22T10:00:00.123Z")
    assert (env.entity, env.record_key, env.extra, env.encrypted) == ("patient", "12", {"note": "x"}, True)
    verify(env, device_key.public_key())
    assert decrypt(env, server_key) == PLAINTEXT
    # the broker sees no record content (markers long enough not to occur by chance in base64)
    assert "Zoë Example".encode() not in data and b"P-0012" not in data and b'"wbc"' not in data


def test_each_seal_uses_a_fresh_ephemeral_key_and_nonce(device_key, server_key):
    first, second = parse(_sealed(device_key, server_key)), parse(_sealed(device_key, server_key))
    assert first.epk != second.epk and first.nonce != second.nonce and first.ct != second.ct
    assert first.content_sha256 == second.content_sha256


def test_plaintext_mode_round_trips_and_can_be_refused(device_key):
    env = parse(seal(PLAINTEXT, signing_key=device_key, server_public=None, **HEADER))
    assert (env.enc, env.epk, env.nonce, env.encrypted) == ("none", b"", b"", False)
    verify(env, device_key.public_key())
    assert decrypt(env, None) == PLAINTEXT
    assert _reason(lambda: decrypt(env, None, require_encryption=True)) == "plaintext_refused"


def test_empty_plaintext_and_chunk_kind(device_key, server_key):
    env = parse(_sealed(device_key, server_key, plaintext=b"", kind="chunk", record="file:" + "ab" * 32,
                        extra={"index": 0, "count": 1, "size": 0, "name": "crops/1/a.png"}))
    verify(env, device_key.public_key())
    assert decrypt(env, server_key) == b"" and env.entity == "file"


def test_hello_announces_the_signing_key(device_key, server_key):
    env = parse(envelope.make_hello(device_id="clinic-a-01", signing_key=device_key,
                                    server_public=server_key.public_key(), info={"software": "1.0"}))
    announced = envelope.hello_key(env)
    assert keys.raw_public(announced) == keys.raw_public(device_key)
    verify(env, announced)
    assert json.loads(decrypt(env, server_key)) == {"software": "1.0"}
    record_env = parse(_sealed(device_key, server_key))
    assert _reason(lambda: envelope.hello_key(record_env)) == "malformed"


# --- every header field is bound -------------------------------------------------------------------------

@pytest.mark.parametrize("name, value", [
    ("device", "clinic-b-02"), ("record", "patient:13"), ("version", 4), ("entry", 40),
    ("created", "2026-11-22T10:00:01.123Z"), ("kind", "chunk"), ("extra", {"index": 1}),
    ("content_sha256", "0" * 64), ("enc", "none"), ("epk", base64.b64encode(os.urandom(32)).decode()),
    ("nonce", base64.b64encode(os.urandom(12)).decode()),
])
def test_changing_any_header_field_breaks_the_signature(device_key, server_key, name, value):
    fields = _fields(_sealed(device_key, server_key))
    fields[name] = value
    if name == "enc":  # a consistent "none" envelope (no epk/nonce), still with the old signature
        fields.update(epk="", nonce="")
    env = parse(canonical(fields))
    assert _reason(lambda: verify(env, device_key.public_key())) == "bad_signature"


@pytest.mark.parametrize("name, value", [
    ("device", "clinic-b-02"), ("record", "patient:13"), ("version", 4), ("entry", 40),
    ("created", "2026-11-22T10:00:01.123Z"), ("kind", "chunk"), ("extra", {"index": 1}),
])
def test_a_header_re_signed_by_the_right_key_still_fails_decryption(device_key, server_key, name, value):
    """The associated data: even the device's own key cannot move a ciphertext to another record/version."""
    fields = _fields(_sealed(device_key, server_key))
    fields[name] = value
    env = parse(_resign(fields, device_key))
    verify(env, device_key.public_key())
    assert _reason(lambda: decrypt(env, server_key)) == "decrypt_failed"


def test_a_forged_signature_by_another_key_is_refused(device_key, server_key):
    env = parse(_resign(_fields(_sealed(device_key, server_key)), Ed25519PrivateKey.generate()))
    assert _reason(lambda: verify(env, device_key.public_key())) == "bad_signature"


def test_a_flipped_ciphertext_byte_is_caught_by_gcm(device_key, server_key):
    fields = _fields(_sealed(device_key, server_key))
    ct = bytearray(base64.b64decode(fields["ct"]))
    ct[5] ^= 0x01
    fields["ct"] = base64.b64encode(bytes(ct)).decode()
    env = parse(_resign(fields, device_key))
    verify(env, device_key.public_key())
    assert _reason(lambda: decrypt(env, server_key)) == "decrypt_failed"
    unsigned = parse(canonical({**fields, "sig": _fields(_sealed(device_key, server_key))["sig"]}))
    assert _reason(lambda: verify(unsigned, device_key.public_key())) == "bad_signature"


def test_the_wrong_server_key_cannot_decrypt(device_key, server_key):
    env = parse(_sealed(device_key, server_key))
    assert _reason(lambda: decrypt(env, X25519PrivateKey.generate())) == "decrypt_failed"
    assert _reason(lambda: decrypt(env, None)) == "decrypt_failed"


def test_a_wrong_content_hash_is_caught_after_decryption(device_key):
    fields = _fields(seal(PLAINTEXT, signing_key=device_key, server_public=None, **HEADER))
    fields["ct"] = base64.b64encode(PLAINTEXT + b" ").decode()
    env = parse(_resign(fields, device_key))
    verify(env, device_key.public_key())
    assert _reason(lambda: decrypt(env, None)) == "hash_mismatch"


# --- strict parsing --------------------------------------------------------------------------------------

def _mutations(good: dict):
    yield "not json", b"{not json"
    yield "not utf-8", b"\xff\xfe{}"
    yield "an array", b"[1, 2]"
    yield "other format", canonical({**good, "format": "something-else"})
    yield "missing key", canonical({k: v for k, v in good.items() if k != "nonce"})
    yield "extra key", canonical({**good, "debug": True})
    yield "duplicate key", canonical(good)[:-1] + b',"entry":1}'
    yield "version as string", canonical({**good, "version": "3"})
    yield "entry as bool", canonical({**good, "entry": True})
    yield "negative version", canonical({**good, "version": -1})
    yield "extra as list", canonical({**good, "extra": []})
    yield "bad device id", canonical({**good, "device": "../../etc"})
    yield "bad record", canonical({**good, "record": "patient 12; drop"})
    yield "bad created", canonical({**good, "created": "yesterday"})
    yield "naive created", canonical({**good, "created": "2026-11-22T10:00:00"})
    yield "bad hash", canonical({**good, "content_sha256": "XYZ"})
    yield "unknown kind", canonical({**good, "kind": "command"})
    yield "bad base64 ct", canonical({**good, "ct": "***"})
    yield "bad base64 sig", canonical({**good, "sig": "not base64!"})
    yield "short sig", canonical({**good, "sig": base64.b64encode(b"x" * 10).decode()})
    yield "short epk", canonical({**good, "epk": base64.b64encode(b"x" * 31).decode()})
    yield "short nonce", canonical({**good, "nonce": base64.b64encode(b"x" * 8).decode()})
    yield "plaintext with epk", canonical({**good, "enc": "none"})
    yield "NaN", canonical(good)[:-1] + b',"x":NaN}'
    yield "ct as number", canonical({**good, "ct": 5})


def test_parse_refuses_malformed_input_with_one_line(device_key, server_key):
    good = _fields(_sealed(device_key, server_key))
    parse(canonical(good))  # the baseline parses
    for label, data in _mutations(good):
        assert _reason(lambda: parse(data)) == "malformed", label


def test_parse_refuses_unknown_versions_and_ciphers(device_key, server_key):
    good = _fields(_sealed(device_key, server_key))
    assert _reason(lambda: parse(canonical({**good, "v": 3}))) == "unsupported_version"
    assert _reason(lambda: parse(canonical({"format": "allscope-envelope", "v": 3, "whatever": 1}))) \
        == "unsupported_version"
    assert _reason(lambda: parse(canonical({**good, "enc": "rot13"}))) == "unsupported_version"


def test_parse_refuses_oversize_input_before_decoding(device_key, server_key):
    data = _sealed(device_key, server_key)
    assert _reason(lambda: parse(data, max_bytes=len(data) - 1)) == "malformed"
    assert _reason(lambda: parse(b" " * (envelope.MAX_ENVELOPE_BYTES + 1))) == "malformed"


def test_seal_refuses_what_parse_would_refuse(device_key, server_key):
    assert _reason(lambda: _sealed(device_key, server_key, device_id="Bad Id")) == "malformed"
    assert _reason(lambda: _sealed(device_key, server_key, created="2026-11-22 10:00")) == "malformed"


def test_max_plaintext_bytes_keeps_chunks_within_the_message_limit(device_key, server_key):
    limit = 16 * 1024
    extra = {"index": 10 ** 6, "count": 10 ** 6, "size": 10 ** 12, "name": "crops/123456/" + "c" * 200 + ".png"}
    size = envelope.max_plaintext_bytes(limit, extra)
    data = _sealed(device_key, server_key, plaintext=os.urandom(size), kind="chunk", device_id="d" * 64,
                   record="file:" + "f" * 64, version=2 ** 62, entry=2 ** 62, extra=extra)
    assert limit - 1200 < len(data) <= limit
    with pytest.raises(ValueError):
        envelope.max_plaintext_bytes(1000)


# --- keys ------------------------------------------------------------------------------------------------

def test_keys_saved_0600_reloaded_and_fingerprinted(tmp_path):
    signing = keys.generate_ed25519(tmp_path / "sign.key")
    sealing = keys.generate_x25519(tmp_path / "enc.key")
    keys.save_public(signing, tmp_path / "sign.pub")
    for name in ("sign.key", "enc.key"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert keys.raw_public(keys.load_ed25519_private(tmp_path / "sign.key")) == keys.raw_public(signing)
    assert keys.raw_public(keys.load_x25519_private(tmp_path / "enc.key")) == keys.raw_public(sealing)
    public = keys.load_ed25519_public(tmp_path / "sign.pub")
    assert keys.fingerprint(public) == keys.fingerprint(signing) and len(keys.fingerprint(public)) == 95
    assert keys.fingerprint(keys.ed25519_public_from_pem(keys.public_pem(signing).decode())) == keys.fingerprint(signing)
    with pytest.raises(keys.KeyFileError, match="already exists"):
        keys.generate_ed25519(tmp_path / "sign.key")
    with pytest.raises(keys.KeyFileError, match="not an Ed25519"):
        keys.load_ed25519_private(tmp_path / "enc.key")
    with pytest.raises(keys.KeyFileError, match="not found"):
        keys.load_x25519_public(tmp_path / "missing.pub")


# --- acks ------------------------------------------------------------------------------------------------

ITEMS = [{"entry": 41, "record": "patient:12", "version": 3, "status": "stored", "reason": ""},
         {"entry": 42, "record": "sample:7", "version": 1, "status": "rejected", "reason": "replay_conflict"}]


def test_acks_signed_and_verified(device_key, server_key):
    central = Ed25519PrivateKey.generate()
    ack = acks.parse_ack(acks.make_ack(device_id="clinic-a-01", acks=ITEMS, signing_key=central),
                         central.public_key(), device_id="clinic-a-01")
    assert ack.acks == ITEMS and ack.device == "clinic-a-01"
    chunk = parse(_sealed(device_key, server_key, kind="chunk", record="file:" + "ab" * 32,
                          extra={"index": 4, "count": 9, "size": 1, "name": "a"}))
    assert acks.ack_item(chunk, "duplicate") == {"entry": 41, "record": "file:" + "ab" * 32, "version": 3,
                                                 "status": "duplicate", "reason": "", "index": 4}


def test_forged_or_misdirected_acks_are_refused():
    central, forger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    forged = acks.make_ack(device_id="clinic-a-01", acks=ITEMS, signing_key=forger)
    with pytest.raises(acks.AckError) as caught:
        acks.parse_ack(forged, central.public_key())
    assert caught.value.reason == "bad_signature"
    genuine = json.loads(acks.make_ack(device_id="clinic-a-01", acks=ITEMS[:1], signing_key=central))
    genuine["acks"][0]["status"] = "duplicate"  # altered after signing
    with pytest.raises(acks.AckError) as caught:
        acks.parse_ack(canonical(genuine), central.public_key())
    assert caught.value.reason == "bad_signature"
    unsigned = {k: v for k, v in genuine.items() if k != "sig"}
    for data in (canonical(unsigned), b"[]", b"nope", canonical({**genuine, "acks": [{"entry": "1"}]})):
        with pytest.raises(acks.AckError) as caught:
            acks.parse_ack(data, central.public_key())
        assert caught.value.reason == "malformed"
    other = acks.make_ack(device_id="clinic-b-02", acks=ITEMS, signing_key=central)
    with pytest.raises(acks.AckError) as caught:
        acks.parse_ack(other, central.public_key(), device_id="clinic-a-01")
    assert caught.value.reason == "device_mismatch"
