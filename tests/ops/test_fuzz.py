"""Fuzzing the parsers that read what others wrote: images, sync envelopes, signed acks, the configuration file.

Each target may only ever raise its documented one-line error — ImageLoadError, EnvelopeError, AckError,
ConfigError — never any other exception, warning or multi-line message; what it accepts must be well formed.

Engine: atheris (coverage-guided libFuzzer, our modules instrumented) when it is installed, run as a
subprocess of this file because libFuzzer ends its process; without it (e.g. on a Pi, where atheris has no
wheel) a seeded mutation loop in-process. Both start from a seed corpus of valid inputs and a dictionary of
format tokens, and bound every input's size (and, under atheris, its time). ALLSCOPE_FUZZ_ITERATIONS sets the
iterations per target (default 2000; e.g. 200000 for a long run on demand); ALLSCOPE_FUZZ_ENGINE=builtin
forces the mutation loop.

    python tests/ops/test_fuzz.py envelope /tmp/fuzz-envelope 100000    # one target by hand

The targets (structure-aware inputs, seeds, dictionaries) are in ``tests/fuzz_targets.py``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as the atheris child: make the repository and tests/ importable
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests")]

ITERATIONS = int(os.environ.get("ALLSCOPE_FUZZ_ITERATIONS", "2000"))
INSTRUMENTED = ["device.core.imageio", "device.core.pixels", "device.errors", "sync.wire.envelope", "sync.wire.acks",
                "sync.wire.topics", "device.config.schema", "device.config.errors"]

from fuzz_targets import DEVICE_ID, MAX_LEN, TARGETS, fixed_keys  # noqa: E402  (after the sys.path line above, for the atheris child)

# --- engines ---------------------------------------------------------------------------------------------------

def _dictionary_line(word: bytes) -> str:
    escaped = "".join(chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\x{b:02x}" for b in word)
    return f'"{escaped}"'


def run_atheris(target: str, workdir: Path, runs: int) -> None:
    """The atheris child: ends the process (libFuzzer's exit code: 0 done, non-zero on a finding)."""
    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        one_input, seeds, words = TARGETS[target](workdir)
    corpus = workdir / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for number, seed in enumerate(seeds):
        (corpus / f"seed-{number:03d}").write_bytes(seed)
    dictionary = workdir / "dictionary"
    dictionary.write_text("\n".join(_dictionary_line(w) for w in words) + "\n")
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-max_len={MAX_LEN[target]}", "-timeout=60", "-rss_limit_mb=3072",
                   "-seed=20261122", f"-dict={dictionary}", f"-artifact_prefix={workdir}/", "-print_final_stats=1",
                   str(corpus)], one_input)
    atheris.Fuzz()


def mutate(rng: random.Random, data: bytes, seeds: list[bytes], words: list[bytes], max_len: int) -> bytes:
    """A few random byte-level edits: flips, random bytes, inserted dictionary words, cuts, copies, splices."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(8)
        at = rng.randint(0, len(out))
        if choice == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:
            out[min(at, len(out) - 1)] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        elif choice == 2:
            out[at:at] = rng.choice(words)
        elif choice == 3:
            del out[at:at + rng.randint(1, 64)]
        elif choice == 4:
            start = rng.randint(0, len(out))
            out[at:at] = out[start:start + rng.randint(1, 128)]
        elif choice == 5:
            out = out[:at]
        elif choice == 6:
            other = rng.choice(seeds)
            out = out[:at] + other[rng.randint(0, len(other)):]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 16))
    return bytes(out[:max_len])


def run_builtin(target: str, workdir: Path, runs: int) -> int:
    """The mutation loop (no atheris); raises with the failing input saved in ``workdir``."""
    one_input, seeds, words = TARGETS[target](workdir)
    rng = random.Random(f"allscope-{target}")
    done = 0
    for number in range(runs):
        data = seeds[number] if number < len(seeds) else \
            mutate(rng, rng.choice(seeds), seeds, words, MAX_LEN[target])
        try:
            one_input(data)
        except BaseException:
            (workdir / f"crash-{target}-{number}").write_bytes(data)
            raise
        done += 1
    return done


# --- the tests -------------------------------------------------------------------------------------------------

def _engine() -> str:
    if os.environ.get("ALLSCOPE_FUZZ_ENGINE") == "builtin":
        return "builtin"
    try:
        import atheris  # noqa: F401
    except ImportError:
        return "builtin"
    return "atheris"


def _fuzz(target: str, tmp_path: Path) -> tuple[str, int]:
    engine = _engine()
    if engine == "builtin":
        return engine, run_builtin(target, tmp_path, ITERATIONS)
    result = subprocess.run([sys.executable, __file__, target, str(tmp_path), str(ITERATIONS)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=max(600, ITERATIONS // 2))
    output = result.stdout + result.stderr
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-")))
    assert result.returncode == 0 and not crashes, f"{target}: {crashes}\n{output[-6000:]}"
    done = re.search(r"Done (\d+) runs", output)
    assert done, output[-3000:]
    return engine, int(done.group(1))


def _run_and_report(target: str, what: str, tmp_path: Path) -> None:
    from figures import report

    engine, runs = _fuzz(target, tmp_path)
    assert runs >= ITERATIONS
    report(f"fuzz iterations: {what} ({engine})", runs)


def test_fuzz_image_loader_raises_only_one_line_image_load_errors(tmp_path):
    _run_and_report("image", "device.core.imageio.load_image_bytes", tmp_path)


def test_fuzz_envelope_parse_verify_decrypt_raise_only_envelope_errors(tmp_path):
    _run_and_report("envelope", "sync.wire.envelope.parse + verify/decrypt", tmp_path)


def test_fuzz_ack_parser_raises_only_ack_errors(tmp_path):
    _run_and_report("ack", "sync.wire.acks.parse_ack", tmp_path)


def test_fuzz_config_loader_raises_only_config_errors_one_line_per_problem(tmp_path):
    _run_and_report("config", "device.config.schema.load_config", tmp_path)


def test_builtin_engine_finds_a_planted_bug(tmp_path, monkeypatch):
    """The fallback loop is a real fuzzer: it reaches a crash planted two mutations deep in the envelope target."""
    import sync.wire.envelope as env

    real_parse = env.parse

    def planted(data, *args, **kwargs):
        if b"NaN" in data and b"allscope-envelope" in data:
            raise KeyError("planted")
        return real_parse(data, *args, **kwargs)

    monkeypatch.setattr(env, "parse", planted)
    try:
        run_builtin("envelope", tmp_path, 5000)
    except KeyError:
        assert list(tmp_path.glob("crash-envelope-*"))
    else:
        raise AssertionError("the mutation loop did not reach the planted crash in 5000 inputs")


def test_out_of_range_numbers_in_an_envelope_are_malformed_not_a_crash():
    """Found by this fuzzer: 1e400 parsed to inf, and verify() then died in canonical() with a ValueError."""
    from sync.wire import envelope as env

    device, server, _central = fixed_keys()
    sealed = json.loads(env.seal(b"{}", kind="record", device_id=DEVICE_ID, record="patient:1", version=1, entry=1,
                                 created="2026-11-22T10:00:00.123Z", signing_key=device,
                                 server_public=server.public_key()))
    sealed["extra"] = {"x": 12345}
    data = json.dumps(sealed).replace("12345", "1e400").encode()
    try:
        env.parse(data)
    except env.EnvelopeError as error:
        assert error.reason == env.MALFORMED and "out-of-range number 1e400" in str(error)
    else:
        raise AssertionError("an envelope holding 1e400 was accepted")


def test_a_tiff_tag_longer_than_the_file_loads_without_a_warning():
    """Found by this fuzzer: Pillow re-reads a TIFF's tags in load() (for EXIF) and warned there, outside the
    loader's warning guard; a damaged tag is cosmetic, the frame loads and nothing is printed."""
    import struct

    import numpy as np
    from hostile_corpus import base_rgb, encode
    from PIL import Image

    from device.core.imageio import load_image_bytes

    frame = np.ascontiguousarray(base_rgb()[:24, :32])
    tiff = bytearray(encode(Image.fromarray(frame), "TIFF"))
    ifd = struct.unpack("<I", tiff[4:8])[0]
    for number in range(struct.unpack("<H", tiff[ifd:ifd + 2])[0]):
        entry = ifd + 2 + 12 * number
        if struct.unpack("<H", tiff[entry:entry + 2])[0] == 284:  # PlanarConfiguration: claim a million values
            tiff[entry + 4:entry + 8] = struct.pack("<I", 10 ** 6)
            break
    else:
        raise AssertionError("Pillow wrote no PlanarConfiguration tag")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb = load_image_bytes(bytes(tiff), "tag.tif")
    assert np.array_equal(rgb, frame) and not caught, [str(w.message) for w in caught]


if __name__ == "__main__":
    name, folder, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    sys.argv = sys.argv[:1]
    run_atheris(name, folder, count)
