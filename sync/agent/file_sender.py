"""Sending the files a capture carries (frames, crops) in chunks, and ticking them off as the central acks them.

Part of the agent's one thread (``sync/agent/service.py``): :meth:`FileSender.ready` is asked
for each capture before its record may go (head of line) and sends the missing chunks while
there is room in the chunk window; :meth:`FileSender.acked` applies the central's chunk acks.
Progress lives in the device database (``sync_file``), so a restart or a dropped link resends
only the chunks not yet acknowledged.
"""

from __future__ import annotations

import logging

from sync.agent import outbox
from sync.agent.media import FileIndex, MediaFile, file_names
from sync.wire import acks as acks_mod

log = logging.getLogger("allscope.sync")

CHUNK_WINDOW = 32  # file chunks in flight (each up to max_message_bytes)


class FileSender:
    def __init__(self, agent):
        self.agent = agent                            # the SyncAgent: its window, sealer, publish and clock
        self.files = FileIndex(agent.config.data_dir)
        self.sending: dict[str, MediaFile] = {}       # sha256 -> file with chunks in flight

    def ready(self, entry) -> bool:
        """True when every file of this capture is complete at the central; else sends missing chunks."""
        if self.agent.config.media == "none":
            return True
        ready = True
        for name in file_names(entry.data(), self.agent.config.media):
            media = self.files.describe(name)
            if media is None:
                log.warning("capture %s: file %s is missing; the record goes without it", entry.record_id, name)
                continue
            if outbox.file_complete(media.sha256):
                continue
            ready = False
            progress = outbox.file_progress(media.sha256, name=media.name, size=media.size,
                                            chunks=media.count(self.agent.sealer.chunk))
            self.sending[media.sha256] = media
            for index in progress.missing():
                key = (media.sha256, index)
                if self.agent.window.chunk_in_flight(key):
                    continue
                if not self.agent.window.chunk_room():
                    return False
                self.agent.unconfirmed[key] = self.agent._publish(self.agent.sealer.file_chunk(media, index, entry))
                self.agent.window.chunk_sent(key, self.agent.clock())
                self.agent.counts["chunks"] += 1
        return ready

    def acked(self, item: dict) -> None:
        sha, index = item["record"][5:], item.get("index")
        if not isinstance(index, int):
            return
        if item["status"] in acks_mod.DONE:
            self.agent.window.chunk_acked((sha, index))
            if outbox.mark_chunk_acked(sha, index):
                self.sending.pop(sha, None)
                log.info("file %s complete at the central", sha[:12])
        else:
            self.agent.window.chunk_sent((sha, index), self.agent.clock())  # offered again after ack_timeout_s
            if item["reason"] == "file_hash_mismatch":  # the central dropped its chunks: start the file over
                media = self.sending.get(sha)
                if media is not None:
                    outbox.file_progress(sha, name=media.name, size=media.size, chunks=0)
            self.agent._error(f"central refused chunk {index} of file {sha[:12]}: {item['reason']}")
