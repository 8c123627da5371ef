"""Sealing what the device sends: outbox entries, file chunks and the hello, the same way online and on USB.

The agent (MQTT) and ``allscope sync export`` (USB) both go through here, so an
exported envelope is byte-for-byte the kind of message the central would have
received online, and the central's replay check can tell a later online resend
of the same version for a duplicate.
"""

from __future__ import annotations

from dataclasses import dataclass

from sync.agent.config import SIGNING_KEY, AgentConfig
from sync.agent.media import MediaFile, chunk_bytes
from sync.wire import envelope as env_mod
from sync.wire import keyproof, keys


@dataclass(frozen=True)
class Sealer:
    device_id: str
    signing_key: object       # Ed25519PrivateKey: the device's own, generated at enrolment
    server_public: object     # X25519PublicKey of the central
    chunk: int                # plaintext bytes per file chunk (from max_message_bytes)
    tls_cert: bytes = b""     # the bundle's device.crt (PEM) and ...
    tls_key: object = None    # ... its private key: they sign the hello's key proof (sync.wire.keyproof)

    @classmethod
    def from_config(cls, config: AgentConfig) -> "Sealer":
        from cryptography.hazmat.primitives import serialization

        from device.errors import ConfigError

        try:
            tls_key = serialization.load_pem_private_key(config.path("device.key").read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError(f"{config.path('device.key')}: not a readable PEM private key ({error}); "
                              f"re-run allscope device enrol") from None
        return cls(config.device_id, keys.load_ed25519_private(config.path(SIGNING_KEY)),
                   keys.load_x25519_public(config.path("central_enc_x25519.pub")),
                   chunk_bytes(config.max_message_bytes), config.path("device.crt").read_bytes(), tls_key)

    @property
    def fingerprint(self) -> str:
        return keys.fingerprint(self.signing_key)

    def entry(self, entry) -> bytes:
        """An outbox entry (sync.agent.outbox.OutboxEntry) as a record envelope."""
        return env_mod.seal(entry.plaintext, kind="record", device_id=self.device_id, record=entry.record,
                            version=entry.version, entry=entry.id, created=entry.created_at,
                            signing_key=self.signing_key, server_public=self.server_public)

    def file_chunk(self, media: MediaFile, index: int, entry) -> bytes:
        """Chunk ``index`` of a file that travels with the capture of outbox ``entry``."""
        return env_mod.seal(media.read_chunk(index, self.chunk), kind="chunk", device_id=self.device_id,
                            record=f"file:{media.sha256}", version=1, entry=entry.id, created=entry.created_at,
                            signing_key=self.signing_key, server_public=self.server_public,
                            extra=media.extra(index, self.chunk))

    def hello(self, info: dict | None = None) -> bytes:
        """The hello, with the proof that this signing key belongs to the enrolled device (when the TLS key is known)."""
        created = env_mod.utc_timestamp()
        proof = None
        if self.tls_key is not None and self.tls_cert:
            proof = keyproof.make_proof(device_id=self.device_id, signing_public=self.signing_key,
                                        cert_pem_or_der=self.tls_cert, tls_private_key=self.tls_key, created=created)
        return env_mod.make_hello(device_id=self.device_id, signing_key=self.signing_key,
                                  server_public=self.server_public, info=info, created=created, proof=proof)
