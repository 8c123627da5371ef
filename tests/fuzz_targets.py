"""Fuzz targets for ``tests/ops/test_fuzz.py``: for each parser, (one_input, seeds, dictionary).

``one_input`` may only raise the parser's documented one-line error; the modules under test are imported
inside each target so that atheris instruments them (``atheris.instrument_imports``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import re
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_LEN = {"image": 64 * 1024, "envelope": 16 * 1024, "ack": 8 * 1024, "config": 8 * 1024}
MAX_PIXELS = 1 << 20  # a mutated header may claim anything up to this: decoding stays fast and small
MAX_MESSAGE = 1000    # characters of one error line
DEVICE_ID = "clinic-a-01"


def _one_line(message: str) -> None:
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) <= MAX_MESSAGE, message[:200]


# --- keys (fixed, so that a crash found by one run reproduces in the next) -------------------------------------

def fixed_keys():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    return (Ed25519PrivateKey.from_private_bytes(bytes(range(32))),       # device signing key
            X25519PrivateKey.from_private_bytes(bytes(range(32, 64))),    # central encryption key
            Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96))))   # central signing key


# --- structure-aware inputs: the fuzz bytes edit the fields of a valid message --------------------------------

class _Bytes:
    """Consumes fuzz bytes as small decisions (libFuzzer's mutations then explore the decisions)."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1] if self.at <= len(self.data) else 0

    def take(self, count: int) -> bytes:
        chunk = self.data[self.at:self.at + count]
        self.at += count
        return chunk


def _value(source: _Bytes, depth: int = 0):
    kind = source.byte() % 14
    if kind == 0:
        return int.from_bytes(source.take(8), "big", signed=True)
    if kind == 1:
        return 2 ** 63 + source.byte()  # just past the largest entry/version
    if kind == 2:
        return [float("inf"), float("nan"), "__1e400__", "__-1e999__"][source.byte() % 4]  # see edited_message
    if kind == 3:
        return source.byte() / 7.0
    if kind == 4:
        return source.take(source.byte() % 48).decode("utf-8", "surrogateescape" if source.byte() % 2 else "replace")
    if kind == 5:
        return base64.b64encode(source.take(source.byte() % 80)).decode("ascii")
    if kind == 6:
        return bool(source.byte() % 2)
    if kind == 7:
        return None
    if kind == 8 and depth < 3:
        return [_value(source, depth + 1) for _ in range(source.byte() % 4)]
    if kind == 9 and depth < 3:
        return {f"k{source.byte() % 8}": _value(source, depth + 1) for _ in range(source.byte() % 4)}
    if kind == 10:
        return "2026-11-22T10:00:00" + ("Z" if source.byte() % 2 else "+25:00")
    if kind == 11:
        return "x" * (source.byte() * 40)
    if kind == 12:
        return ["patient:12", "file:" + "ab" * 32, "hello", "chunk", "record", "none", "stored", "rejected",
                "clinic-a-01", "", "../x", "a" * 200][source.byte() % 12]
    return source.byte()


def edited_message(fields: dict, data: bytes, sign=None, nested: str | None = None) -> bytes:
    """A valid message's fields with a few set, replaced or deleted as the fuzz bytes decide, then serialised
    (NaN and Infinity as JavaScript writes them). ``sign(fields) -> str``, when given and chosen, re-signs;
    ``nested`` names an object (the envelope's extra) or a list of objects (the acks) edited too."""
    source = _Bytes(data)
    fields = json.loads(json.dumps(fields))
    keys = sorted(fields) + ["unknown", "Format", "sig "]
    for _ in range(1 + source.byte() % 4):
        target, inner = fields, fields.get(nested) if nested else None
        if inner and source.byte() % 2:
            item = inner[source.byte() % len(inner)] if isinstance(inner, list) else inner
            target = item if isinstance(item, dict) else fields
        names = sorted(target) + ["unknown", "index"] if target is not fields else keys
        name = names[source.byte() % len(names)]
        if source.byte() % 6 == 0:
            target.pop(name, None)
        else:
            target[name] = _value(source)
    if sign is not None and source.byte() % 2:
        try:
            fields["sig"] = sign(fields)
        except (ValueError, TypeError, RecursionError):
            pass  # not canonicalisable: no sender signs it
    text = json.dumps(fields, allow_nan=True)  # inf and nan as Infinity and NaN; numbers too big for a double:
    text = re.sub(r'"__(-?1e\d+)__"', r"\1", text)
    return text.encode("utf-8", "surrogatepass")


# --- targets: (one_input, seeds, dictionary) ------------------------------------------------------------------

def image_target(workdir: Path):
    import numpy as np

    from device.core.imageio import MIN_SIDE, load_image_bytes
    from device.errors import ImageLoadError

    def one_input(data: bytes) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                rgb = load_image_bytes(data, "fuzz.img", max_pixels=MAX_PIXELS)
            except ImageLoadError as error:
                _one_line(str(error))
                assert str(error).startswith("fuzz.img: ")
            else:
                assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, (rgb.dtype, rgb.shape)
                assert rgb.flags.c_contiguous and rgb.flags.writeable
                assert min(rgb.shape[:2]) >= MIN_SIDE and rgb.shape[0] * rgb.shape[1] <= MAX_PIXELS
        assert not caught, [f"{w.category.__name__}: {w.message}" for w in caught]

    return one_input, _image_seeds(), [b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"eXIf", b"iCCP", b"\xff\xd8",
                                       b"\xff\xc0", b"\xff\xc2", b"\xff\xc4", b"\xff\xda", b"\xff\xdb", b"\xff\xd9",
                                       b"\xff\xe1Exif\x00\x00", b"II*\x00", b"MM\x00*", b"\x01\x12", b"RIFF",
                                       b"WEBP", b"VP8L", b"VP8 ", b"VP8X", b"BM", b"\xff\xff\xff\x7f"]


def _image_seeds() -> list[bytes]:
    import cv2
    import numpy as np
    from hostile_corpus import base_rgb, bmp_claiming, encode, png_claiming, tiff_claiming, webp_claiming
    from PIL import Image

    frame = Image.fromarray(base_rgb()).resize((32, 24))
    rgb = np.asarray(frame)
    alpha = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1)))
    rgba = frame.copy()
    rgba.putalpha(alpha)
    gray16 = Image.fromarray(np.asarray(frame.convert("L")).astype(np.uint16) * 16)
    exif = Image.Exif()
    exif[0x0112] = 6
    pages = io.BytesIO()
    frame.save(pages, "TIFF", save_all=True, append_images=[frame.convert("L")])
    palette = frame.quantize(16)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    seeds = [
        encode(frame, "PNG"), encode(palette, "PNG"), encode(transparent, "PNG"), encode(rgba, "PNG"),
        encode(frame.convert("LA"), "PNG"), encode(frame.convert("L"), "PNG"), encode(frame.convert("1"), "PNG"),
        encode(gray16, "PNG"), cv2.imencode(".png", rgb[..., ::-1].astype(np.uint16) * 257)[1].tobytes(),
        encode(frame, "JPEG", quality=80), encode(frame.convert("L"), "JPEG"), encode(frame.convert("CMYK"), "JPEG"),
        encode(frame, "JPEG", progressive=True), encode(frame, "JPEG", exif=exif.tobytes()),
        encode(frame, "TIFF"), encode(frame, "TIFF", compression="tiff_lzw"),
        encode(frame, "TIFF", compression="tiff_deflate"), encode(frame, "TIFF", compression="packbits"),
        encode(gray16, "TIFF"), encode(Image.fromarray(np.asarray(frame.convert("L"), np.float32) / 255, "F"), "TIFF"),
        encode(frame.convert("CMYK"), "TIFF"), pages.getvalue(),
        cv2.imencode(".tiff", rgb[..., ::-1].astype(np.uint16) * 16)[1].tobytes(),
        encode(frame, "BMP"), encode(palette, "BMP"), encode(frame, "WEBP", quality=70),
        encode(frame, "WEBP", lossless=True), encode(rgba, "WEBP", lossless=True),
        png_claiming(60_000, 60_000), tiff_claiming(60_000, 60_000), bmp_claiming(60_000, 60_000),
        webp_claiming(16_383, 16_383), encode(frame, "GIF"), b"<!DOCTYPE html><html>502</html>",
    ]
    return [s for s in seeds if len(s) <= MAX_LEN["image"]]


def envelope_target(workdir: Path):
    from sync.wire import envelope as env
    from sync.wire.envelope import Envelope, EnvelopeError

    device, server, _central = fixed_keys()
    device_public = device.public_key()

    def check(error: EnvelopeError) -> None:
        _one_line(str(error))
        assert error.reason in (env.MALFORMED, env.UNSUPPORTED_VERSION, env.BAD_SIGNATURE, env.DECRYPT_FAILED,
                                env.HASH_MISMATCH, env.PLAINTEXT_REFUSED), error.reason

    def open_(envelope: Envelope, must_verify: bool) -> None:
        try:
            env.verify(envelope, device_public)
        except EnvelopeError as error:
            assert not must_verify, str(error)
            check(error)
            return
        for require in (False, True):
            try:
                plaintext = env.decrypt(envelope, server, require_encryption=require)
            except EnvelopeError as error:
                check(error)
            else:
                assert hashlib.sha256(plaintext).hexdigest() == envelope.content_sha256
        if envelope.kind == "hello":
            try:
                env.hello_key(envelope)
            except EnvelopeError as error:
                check(error)

    def sign(fields: dict) -> str:
        unsigned = env.canonical({k: v for k, v in fields.items() if k != "sig"})
        return base64.b64encode(device.sign(unsigned)).decode("ascii")

    def one_input(data: bytes) -> None:
        if data[:1] == b"~":  # structure-aware: edit the fields of a valid envelope
            data = edited_message(templates[data[1] % len(templates) if len(data) > 1 else 0], data[2:], sign,
                                  nested="extra")
        try:
            envelope = env.parse(data)
        except EnvelopeError as error:
            check(error)
            return
        assert isinstance(envelope.fields, dict) and envelope.entity and isinstance(envelope.record_key, str)
        open_(envelope, must_verify=False)
        # As if the device itself had signed these fields: the signature passes, decryption is reached.
        fields = dict(envelope.fields)
        signature = device.sign(env.canonical({k: v for k, v in fields.items() if k != "sig"}))
        fields["sig"] = base64.b64encode(signature).decode("ascii")
        open_(Envelope(fields=fields, epk=envelope.epk, nonce=envelope.nonce, ct=envelope.ct, sig=signature),
              must_verify=True)

    common = dict(device_id=DEVICE_ID, version=3, entry=41, created="2026-11-22T10:00:00.123Z", signing_key=device)
    record = json.dumps({"id": 12, "identifier": "P-0012", "name": "Zoë Example", "wbc": 48.2}).encode()
    seeds = [
        env.seal(record, kind="record", record="patient:12", server_public=server.public_key(), **common),
        env.seal(record, kind="record", record="patient:12", server_public=None, **common),
        env.seal(b"\x89PNG" + bytes(200), kind="chunk", record="file:" + "ab" * 32, server_public=server.public_key(),
                 extra={"index": 0, "count": 2, "size": 204, "name": "images/ab/x.png"}, **common),
        env.make_hello(device_id=DEVICE_ID, signing_key=device, server_public=server.public_key(),
                       created="2026-11-22T10:00:00.123Z", info={"software": "1.0", "backlog": 3}),
        env.seal(record, kind="record", record="capture:7", server_public=server.public_key(),
                 extra={"scale": 0.25, "tags": ["a", 1, None, True], "nested": {"x": -1.5e3}}, **common),
    ]
    templates = [json.loads(seed) for seed in seeds]
    seeds += [b"~" + bytes([n]) + random.Random(n).randbytes(40) for n in range(8)]
    words = [b'"format"', b'"allscope-envelope"', b'"v"', b'"kind"', b'"record"', b'"chunk"', b'"hello"',
             b'"device"', b'"version"', b'"entry"', b'"created"', b'"content_sha256"', b'"enc"', b'"none"',
             b'"x25519-hkdf-sha256-aes256gcm"', b'"epk"', b'"nonce"', b'"ct"', b'"extra"', b'"sig"',
             b'"signing_key"', b"1e400", b"-1e400", b"NaN", b"Infinity", b"-0", b"9223372036854775808", b"true",
             b"null", b"{}", b"[]", b"\\u0000", b"\\ud800", b'"patient:12"', b'"2026-11-22T10:00:00"', b"=="]
    return one_input, seeds, words


def ack_target(workdir: Path):
    from sync.wire import acks

    _device, _server, central = fixed_keys()
    central_public = central.public_key()

    def check(error: acks.AckError) -> None:
        _one_line(str(error))
        assert error.reason in ("malformed", "bad_signature", "device_mismatch"), error.reason

    def parse(data: bytes, signed: bool) -> None:
        try:
            ack = acks.parse_ack(data, central_public, device_id=DEVICE_ID)
        except acks.AckError as error:
            check(error)
            assert not (signed and error.reason == "bad_signature"), str(error)
        else:
            assert ack.device == DEVICE_ID and isinstance(ack.acks, list)
            assert all(item["status"] in acks.STATUSES and isinstance(item["entry"], int) for item in ack.acks)

    def sign(fields: dict) -> str:
        unsigned = acks.canonical({k: v for k, v in fields.items() if k != "sig"})
        return base64.b64encode(central.sign(unsigned)).decode("ascii")

    def one_input(data: bytes) -> None:
        if data[:1] == b"~":  # structure-aware: edit the fields and items of a valid ack
            data = edited_message(templates[data[1] % len(templates) if len(data) > 1 else 0], data[2:], sign,
                                  nested="acks")
        parse(data, signed=False)
        # As if the central had signed these fields: everything after the signature check is reached.
        try:
            fields = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return
        if not isinstance(fields, dict):
            return
        unsigned = {k: v for k, v in fields.items() if k != "sig"}
        try:
            signature = central.sign(acks.canonical(unsigned))
        except (ValueError, TypeError, RecursionError):
            return  # not canonicalisable (NaN, ...): the central never signs such a thing
        parse(acks.canonical({**unsigned, "sig": base64.b64encode(signature).decode("ascii")}), signed=True)

    items = [{"entry": 7, "record": "patient:3", "version": 2, "status": "stored", "reason": ""},
             {"entry": 8, "record": "file:" + "cd" * 32, "version": 1, "status": "duplicate", "reason": "", "index": 1},
             {"entry": 9, "record": "capture:4", "version": 5, "status": "rejected", "reason": "bad_signature"}]
    seeds = [acks.make_ack(device_id=DEVICE_ID, acks=items, signing_key=central, created="2026-11-22T10:00:01.000Z"),
             acks.make_ack(device_id="other-device", acks=items[:1], signing_key=central),
             acks.make_ack(device_id=DEVICE_ID, acks=[], signing_key=central)]
    templates = [json.loads(seed) for seed in seeds]
    seeds += [b"~" + bytes([n]) + random.Random(n).randbytes(40) for n in range(8)]
    words = [b'"allscope-ack"', b'"acks"', b'"entry"', b'"record"', b'"status"', b'"stored"', b'"duplicate"',
             b'"rejected"', b'"reason"', b'"index"', b'"device"', b'"sig"', b"1e400", b"NaN", b"true", b"null",
             b"[]", b"{}", b"-1", b"1.5", b"\\ud800"]
    return one_input, seeds, words


def config_target(workdir: Path):
    from device.config.schema import AllscopeConfig, ConfigError, load_config

    path = workdir / "allscope.toml"

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        try:
            config = load_config(path)
        except ConfigError as error:
            assert error.problems, "ConfigError without a problem"
            for problem in error.problems:
                _one_line(problem)
                assert problem.startswith(f"{path}:"), problem
        else:
            assert isinstance(config, AllscopeConfig)
            config.model_dump()

    example = (REPO_ROOT / "firmware_config" / "allscope.example.toml").read_bytes()
    seeds = [example, b"", b'[camera]\nbackend = "replay"\n', b"[analysis]\nthreshold = 0.5\n",
             b'[storage]\nencrypt_at_rest = true\nkey_file = "/etc/allscope/db.key"\n',
             b'[sync]\nenabled = true\nbroker = "mqtts://central.example:8883"\n',
             b'[ui]\nidle_minutes = 10\n[device]\ndata_dir = "/var/lib/allscope"\n']
    words = [b"[", b"]", b"[[", b"=", b'"', b"'''", b'"""', b"\n", b"true", b"false", b"inf", b"nan", b"-0",
             b"1979-05-27T07:32:00Z", b"0x7f", b"1_000", b"{ }", b"[ ]", b"#"]
    for section, field in AllscopeConfig.model_fields.items():
        words.append(section.encode())
        annotation = field.annotation
        for key in getattr(annotation, "model_fields", {}):
            words.append(key.encode())
    return one_input, seeds, words


TARGETS = {"image": image_target, "envelope": envelope_target, "ack": ack_target, "config": config_target}
