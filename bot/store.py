"""A small JSON file that remembers each chat's `/model` choice across restarts.

Plain JSON (never a pickle), written atomically (temporary file + rename), so a crash mid-write
cannot leave a half-written store. Chats are keyed by the same hash the gateway sees as
`X-Client-Id`, so the file holds no Telegram chat ids.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from woof.files import PRIVATE, atomic_write_json

log = logging.getLogger(__name__)


def default_state_path() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "woof" / "bot-chats.json"


class ChatStore:
    """{client id: {"model": name}}; loaded once, saved on every change."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._chats: dict[str, dict] = {}
        try:
            data = json.loads(self.path.read_text())
            if isinstance(data, dict) and isinstance(data.get("chats"), dict):
                self._chats = {str(k): v for k, v in data["chats"].items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable chat store %s: %s", self.path, e)

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
        atomic_write_json(self.path, {"version": 1, "chats": self._chats}, PRIVATE, indent=1, sort_keys=True)
