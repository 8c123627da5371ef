"""The device's data directory: database, images by content hash, and secrets.

Layout (default ``./var``, or ``--data-dir`` / ``$ALLSCOPE_DATA_DIR``)::

    allscope.db            SQLite records (WAL)
    images/ab/abcdef….jpg  captured and uploaded frames, named by the SHA-256 of the file: an upload as received
                           (.jpg/.png/.tif/.webp), a camera still as WebP lossless (device/services/frame_files.py)
    crops/<capture>/…jpg   cell crops cut from a frame after analysis (older ones .png)
    thumbs/<capture>.jpg   a small picture of each analysed frame, kept when the frame is pruned
    secret_key             Flask session key, generated, mode 0600
    at-rest.json           present when the database and files are encrypted (device/store/atrest.py)

Every file is written to a temporary name in the same directory, flushed and
renamed, so a crash leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from device.store.atomic import fsync_dir, private_dir, write_atomic  # noqa: F401  (fsync_dir: for callers)

DEFAULT_DATA_DIR = Path("var")


@dataclass(frozen=True)
class DataDir:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> "DataDir":
        chosen = Path(path or os.environ.get("ALLSCOPE_DATA_DIR") or DEFAULT_DATA_DIR).expanduser().resolve()
        private_dir(chosen)  # 0700 when created here (outside systemd the umask would make it 0755)
        return cls(chosen)

    @classmethod
    def configured(cls, path: str | Path | None, config_path: str | Path | None) -> "DataDir":
        """For a CLI command: ``--data-dir``, else ``device.data_dir`` of the configuration, else as ``resolve``.

        Also applies the configuration's at-rest storage settings to this process, so a command opens the
        same (possibly encrypted) database the service does.
        """
        from device.config.schema import load_config
        from device.store import atrest

        config = load_config(config_path)
        atrest.configure(config.storage)
        return cls.resolve(path or config.device.data_dir)

    @property
    def database(self) -> Path:
        return self.root / "allscope.db"

    def absolute(self, relative: str) -> Path:
        """Absolute path of a stored relative path; refuses anything that would leave the data directory."""
        target = (self.root / relative).resolve()
        if self.root not in target.parents:
            raise ValueError(f"path outside the data directory: {relative}")
        return target

    def store_image(self, blob: bytes, suffix: str = ".png") -> tuple[str, str]:
        """Store an encoded image by content hash; returns (relative path, sha256). Idempotent.

        The hash is of the image file itself, also when the file on disk is encrypted.
        """
        digest = hashlib.sha256(blob).hexdigest()
        relative = f"images/{digest[:2]}/{digest}{suffix}"
        target = self.root / relative
        if not target.exists():
            write_atomic(target, self._sealed(blob, relative))
        return relative, digest

    def store_crop(self, capture_id: int, index: int, blob: bytes, suffix: str = ".png") -> str:
        relative = f"crops/{capture_id}/{index:04d}{suffix}"
        write_atomic(self.root / relative, self._sealed(blob, relative))
        return relative

    def store_thumb(self, capture_id: int, jpeg: bytes) -> str:
        relative = f"thumbs/{capture_id}.jpg"
        write_atomic(self.root / relative, self._sealed(jpeg, relative))
        return relative

    def exists(self, relative: str) -> bool:
        """Whether a stored file is there (False for an empty path or one outside the data directory)."""
        try:
            return bool(relative) and self.absolute(relative).is_file()
        except ValueError:
            return False

    def stored_size(self, relative: str) -> int:
        """Bytes on disk of a stored file, 0 when it is missing."""
        try:
            return self.absolute(relative).stat().st_size if relative else 0
        except (OSError, ValueError):
            return 0

    def read_bytes(self, relative: str) -> bytes:
        """The bytes of a stored image or crop (decrypted when the data is encrypted at rest).

        ValueError for a path outside the data directory, FileNotFoundError for a missing file,
        device.store.atrest.AtRestError for a file that does not decrypt. Every reader of stored files uses this.
        """
        from device.store import atrest

        path = self.absolute(relative)
        blob = path.read_bytes()
        keys = atrest.keys_for(self.root)
        return keys.decrypt(blob, relative) if keys is not None else blob

    def _sealed(self, data: bytes, relative: str) -> bytes:
        from device.store import atrest

        keys = atrest.keys_for(self.root)
        return keys.encrypt(data, relative) if keys is not None else data

    def secret_key(self) -> bytes:
        """The session signing key: generated once, kept with mode 0600, never a default."""
        path = self.root / "secret_key"
        if not path.exists():
            write_atomic(path, secrets.token_hex(32).encode(), mode=0o600)
        os.chmod(path, 0o600)
        return path.read_bytes().strip()
