"""A small JSON file that remembers each chat's `/model` choice across restarts.

Plain JSON (never a pickle), written atomically (temporary file + rename, mode 0600), so a crash mid-write
cannot leave a half-written store. Chats are keyed by the keyed id the gateway sees as `X-Client-Id`
(bot/identity.py), so the file holds no Telegram chat ids.

Version 1 files were keyed by the old unkeyed hash. Their entries are kept under "legacy" and move to the
chat's keyed id the first time the bot sees that chat again (`adopt`, called for every chat it sees), so a
choice made before the upgrade survives it; an entry whose chat never comes back stays under "legacy".
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from woof.files import PRIVATE, atomic_write_json

log = logging.getLogger(__name__)
VERSION = 2


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "woof" / "bot-chats.json"


def _entries(value) -> dict[str, dict]:
    return {str(k): v for k, v in value.items() if isinstance(v, dict)} if isinstance(value, dict) else {}


class ChatStore:
    """{client id: {"model": name}}; loaded once, saved on every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._chats: dict[str, dict] = {}
        self._legacy: dict[str, dict] = {}  # old-hash key -> entry, until its chat is seen again
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict):
                if data.get("version", 1) == 1:
                    self._legacy = _entries(data.get("chats"))
                else:
                    self._chats, self._legacy = _entries(data.get("chats")), _entries(data.get("legacy"))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable chat store %s: %s", self.path, e)

    def adopt(self, legacy_id: str, client_id: str) -> bool:
        """Move the entry written under a chat's old key to its keyed id; True when there was one."""
        if not self._legacy or legacy_id not in self._legacy:
            return False
        entry = self._legacy.pop(legacy_id)
        self._chats.setdefault(client_id, entry)  # a choice made under the new id wins
        self._save()
        return True

    def model(self, client_id: str) -> str | None:
        value = self._chats.get(client_id, {}).get("model")
        return value if isinstance(value, str) else None

    def set_model(self, client_id: str, model: str | None) -> None:
        if model is None:
            self._chats.pop(client_id, None)
        else:
            self._chats[client_id] = {"model": model}
        self._save()

    def _save(self) -> None:
        data = {"version": VERSION, "chats": self._chats}
        if self._legacy:
            data["legacy"] = self._legacy
        atomic_write_json(self.path, data, PRIVATE, indent=1, sort_keys=True)
