"""The id a chat has outside Telegram: an HMAC-SHA256 of its chat id under the bot's secret key.

The gateway sees it as `X-Client-Id` (its A/B split, its per-client rate limit, its access log) and the chat
store is keyed by it, so neither holds a Telegram chat id. A keyed hash, because chat ids are small integers:
a plain hash with a public prefix (what the bot used before, `legacy_client_id`) is reversed by hashing every
candidate id; without the key an HMAC cannot be.

The key: $WOOF_BOT_SECRET, else a random one (`secrets.token_bytes(32)`, kept as hex) made on the first start
and kept in `bot-secret` beside the chat store (mode 0600, written atomically). It is never logged. Changing
it gives every chat a new id: their /model choices are forgotten and the gateway's A/B split reshuffles them.

A/B arms at the upgrade from the plain hash: the gateway buckets a client by a hash of whatever id it receives,
so a new id means a new bucket. Every chat gets a one-time reshuffle, on purpose. The stable alternatives are
worse: sending the old id on (stored per chat) keeps the reversible id in the gateway's logs for good, and most
chats have no stored entry anyway (only chats with a /model choice do, and those bypass the split while the
choice stands); picking a keyed id that lands in the old id's bucket would tie the bot to the gateway's bucket
hash and publish ~13 bits of every chat id (the old bucket is a public function of it) to anyone reading the
gateway's logs. So: deploy the upgrade between experiments, or restart the A/B measurement at it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from woof.errors import WoofError
from woof.files import PRIVATE, atomic_write_text

SECRET_ENV = "WOOF_BOT_SECRET"
SECRET_FILE = "bot-secret"  # beside the chat store
MIN_SECRET_CHARS = 32
ID_CHARS = 24  # 96 bits of the HMAC, as hex: the length the ids always had


def _message(chat_id: int) -> bytes:
    return f"woof-telegram-chat:{int(chat_id)}".encode()


def legacy_client_id(chat_id: int) -> str:
    """The id before the HMAC (a public-prefix SHA-256), only to find chat-store entries written under it."""
    return hashlib.sha256(_message(chat_id)).hexdigest()[:ID_CHARS]


class ClientIds:
    """client_ids(chat_id) -> the chat's keyed id (24 hex characters)."""

    __slots__ = ("_key",)

    def __init__(self, secret: str):
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"the client-id secret needs at least {MIN_SECRET_CHARS} characters")
        self._key = secret.encode()

    def __call__(self, chat_id: int) -> str:
        return hmac.new(self._key, _message(chat_id), hashlib.sha256).hexdigest()[:ID_CHARS]

    def __repr__(self) -> str:
        return "ClientIds(<secret>)"


def secret_path(state: str | os.PathLike) -> Path:
    """Where the generated secret lives: beside the chat store `state`."""
    return Path(state).parent / SECRET_FILE


def load_secret(state: str | os.PathLike, environ=os.environ) -> tuple[str, str]:
    """(secret, where it came from): $WOOF_BOT_SECRET, else the file beside the chat store, made if missing."""
    value = environ.get(SECRET_ENV, "").strip()
    if value:
        if len(value) < MIN_SECRET_CHARS:
            raise WoofError(f"{SECRET_ENV} is too short: use at least {MIN_SECRET_CHARS} random characters, e.g. "
                            "python -c 'import secrets; print(secrets.token_hex(32))'")
        return value, f"${SECRET_ENV}"
    path = secret_path(state)
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        text = secrets.token_bytes(32).hex()
        try:
            atomic_write_text(path, text + "\n", PRIVATE)
        except OSError as e:
            raise WoofError(f"cannot write the bot's secret {path}: {e.strerror or e}") from None
        return text, f"{path} (new)"
    except OSError as e:
        raise WoofError(f"cannot read the bot's secret {path}: {e.strerror or e}") from None
    if len(text) < MIN_SECRET_CHARS:
        raise WoofError(f"{path} holds no usable secret (under {MIN_SECRET_CHARS} characters); delete it to make a "
                        "new one (every chat then gets a new id, and /model choices are forgotten)")
    source = str(path)
    if path.stat().st_mode & 0o077:  # readable by others: tighten it, the key is what keeps ids unguessable
        os.chmod(path, PRIVATE)
        source += " (permissions were too open: now 0600)"
    return text, source
