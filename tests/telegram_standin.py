"""A local stand-in for the Telegram Bot API: a real HTTP server on 127.0.0.1 for the bot tests.

It speaks the Bot API's wire format (POST /bot<token>/<method> with form or JSON parameters,
{"ok": true, "result": ...} answers, GET /file/bot<token>/<path> downloads), implements what the
woof bot uses (getMe, getUpdates with long polling, getFile, sendMessage, sendChatAction,
setMyCommands, setWebhook, deleteWebhook, getWebhookInfo) and records every call, so a test can
enqueue updates as Telegram would deliver them and read what the bot sent. Like Telegram, it
refuses a wrong token (401), getFile of files over 20 MB (400 "file is too big"), getUpdates while
a webhook is set (409), and can answer a call with a flood-control 429 (retry_after).
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlparse

DOWNLOAD_LIMIT = 20 * 1024 * 1024
BOT_USER = {"id": 700000001, "is_bot": True, "first_name": "woof test", "username": "woof_test_bot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
RAW_STRING_PARAMS = {"text", "caption", "url", "secret_token", "file_id", "action"}


class ApiError(Exception):
    def __init__(self, code: int, description: str, parameters: dict | None = None):
        super().__init__(description)
        self.code, self.description, self.parameters = code, description, parameters


class TelegramStandIn:
    def __init__(self, token: str):
        self.token = token
        self.cond = threading.Condition()
        self.pending: list[dict] = []  # updates not yet confirmed by getUpdates' offset
        self.calls: list[dict] = []  # {"method", "params", "time"} of every API call
        self.files: dict[str, dict] = {}
        self.webhook: dict | None = None
        self.faults: list[dict] = []  # {"method", "match", "error": ApiError, "times"}
        self._ids = itertools.count(1)
        self._update_ids = itertools.count(1000)
        self._sent_ids = itertools.count(500000)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="telegram-standin", daemon=True)

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        with self.cond:
            self.cond.notify_all()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------ files and updates (the "user" side)
    def add_file(self, data: bytes, file_size: int | None = None, suffix: str = "jpg") -> dict:
        n = next(self._ids)
        entry = {"file_id": f"FILE{n:06d}" + "x" * 20, "file_unique_id": f"U{n:06d}", "data": data,
                 "file_size": len(data) if file_size is None else file_size, "file_path": f"files/file_{n}.{suffix}"}
        with self.cond:  # the server's threads read the files while a test adds more
            self.files[entry["file_id"]] = entry
        return entry

    def message(self, chat_id: int, user_id: int | None = None, **fields) -> dict:
        user_id = chat_id if user_id is None else user_id
        chat = {"id": chat_id, "type": "private", "first_name": "Tester"} if chat_id > 0 else \
            {"id": chat_id, "type": "group", "title": "dog lovers"}
        return {"message_id": next(self._ids), "date": int(time.time()), "chat": chat,
                "from": {"id": user_id, "is_bot": False, "first_name": "Tester", "language_code": "en"}, **fields}

    def text(self, chat_id: int, text: str, **kw) -> dict:
        fields = {"text": text}
        if text.startswith("/"):
            fields["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
        return self.message(chat_id, **fields, **kw)

    def photo(self, chat_id: int, data: bytes, width: int = 160, height: int = 160, **kw) -> dict:
        thumb, full = self.add_file(data), self.add_file(data)
        sizes = [{"file_id": f["file_id"], "file_unique_id": f["file_unique_id"], "file_size": f["file_size"],
                  "width": w, "height": h} for f, (w, h) in ((thumb, (90, 90)), (full, (width, height)))]
        return self.message(chat_id, photo=sizes, **kw)

    def document(self, chat_id: int, data: bytes, file_name: str, mime_type: str | None,
                 file_size: int | None = None, declared_size: bool = True, **kw) -> dict:
        f = self.add_file(data, file_size, suffix=file_name.rsplit(".", 1)[-1])
        doc = {"file_id": f["file_id"], "file_unique_id": f["file_unique_id"], "file_name": file_name}
        if mime_type:
            doc["mime_type"] = mime_type
        if declared_size:
            doc["file_size"] = f["file_size"]
        return self.message(chat_id, document=doc, **kw)

    def sticker(self, chat_id: int, **kw) -> dict:
        f = self.add_file(b"RIFF0000WEBPVP8 ", suffix="webp")
        return self.message(chat_id, sticker={"file_id": f["file_id"], "file_unique_id": f["file_unique_id"],
                                              "type": "regular", "width": 512, "height": 512, "is_animated": False,
                                              "is_video": False, "emoji": "🐶"}, **kw)

    def voice(self, chat_id: int, **kw) -> dict:
        f = self.add_file(b"OggS" + bytes(100), suffix="oga")
        return self.message(chat_id, voice={"file_id": f["file_id"], "file_unique_id": f["file_unique_id"],
                                            "duration": 2, "mime_type": "audio/ogg"}, **kw)

    def update(self, message: dict) -> dict:
        return {"update_id": next(self._update_ids), "message": message}

    def push(self, *messages: dict) -> list[dict]:
        """Queue messages as updates for getUpdates (long polling); returns the messages."""
        with self.cond:
            self.pending += [self.update(m) for m in messages]
            self.cond.notify_all()
        return list(messages)

    def fail(self, method: str, error: ApiError, times: int = 1, **match) -> None:
        """Answer the next `times` calls of `method` whose parameters include `match` with `error`."""
        with self.cond:
            self.faults.append({"method": method.lower(), "match": match, "error": error, "times": times})

    # ------------------------------------------------------------ what the bot did
    def sent(self, method: str = "sendMessage", **match) -> list[dict]:
        with self.cond:
            return [c["params"] for c in self.calls if c["method"].lower() == method.lower()
                    and all(c["params"].get(k) == v for k, v in match.items())]

    def replies(self, chat_id: int) -> list[dict]:
        return self.sent("sendMessage", chat_id=chat_id)

    def reply_to(self, message: dict) -> list[dict]:
        """sendMessage calls that reply to (quote) `message`."""
        return [p for p in self.replies(message["chat"]["id"])
                if (p.get("reply_parameters") or {}).get("message_id") == message["message_id"]
                or p.get("reply_to_message_id") == message["message_id"]]

    def wait(self, predicate, timeout: float = 20.0, what: str = "the bot's answer"):
        """Wait until predicate() is truthy; return its value (AssertionError on timeout, saying what the bot
        did: its last calls other than getUpdates, which an idle bot repeats every few seconds and which would
        otherwise hide everything it did before)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            first = len(self.calls)
            while True:
                value = predicate()  # the condition's lock is re-entrant
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    polls = sum(c["method"].lower() == "getupdates" for c in self.calls[first:])
                    seen = [(c["method"], c["params"].get("chat_id"), str(c["params"].get("text", ""))[:60])
                            for c in self.calls if c["method"].lower() != "getupdates"][-12:]
                    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({polls} getUpdates "
                                         f"meanwhile); last other calls (method, chat, text): {seen}")
                self.cond.wait(min(left, 0.2))

    def wait_reply(self, message: dict, timeout: float = 30.0) -> str:
        return self.wait(lambda: self.reply_to(message), timeout, f"a reply to message {message['message_id']}")[0][
            "text"]

    def wait_polling(self, timeout: float = 60.0) -> None:
        self.wait(lambda: self.sent("getUpdates"), timeout, "the bot to start polling")

    # ------------------------------------------------------------ the API (server side)
    def handle(self, method: str, params: dict):
        lower = method.lower()
        with self.cond:
            self.calls.append({"method": method, "params": params, "time": time.monotonic()})
            self.cond.notify_all()
            for fault in self.faults:
                if fault["times"] > 0 and fault["method"] == lower and all(
                        params.get(k) == v for k, v in fault["match"].items()):
                    fault["times"] -= 1
                    raise fault["error"]
        if lower == "getupdates":
            return self._get_updates(params)
        handler = getattr(self, f"api_{lower}", None)
        if handler is None:
            raise ApiError(404, "Not Found")
        return handler(params)

    def _get_updates(self, params: dict) -> list[dict]:
        if self.webhook:
            raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active; "
                                "use deleteWebhook to delete the webhook first")
        offset, limit = int(params.get("offset") or 0), int(params.get("limit") or 100)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 5.0)  # short polls keep tests brisk
        with self.cond:
            self.pending = [u for u in self.pending if u["update_id"] >= offset]  # offset confirms the rest
            while not self.pending and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            return self.pending[:limit]

    def api_getme(self, params):
        return BOT_USER

    def api_getfile(self, params):
        with self.cond:
            f = self.files.get(params.get("file_id"))
        if f is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if f["file_size"] > DOWNLOAD_LIMIT:
            raise ApiError(400, "Bad Request: file is too big")
        return {k: f[k] for k in ("file_id", "file_unique_id", "file_size", "file_path")}

    def api_sendmessage(self, params):
        if not str(params.get("text", "")).strip():
            raise ApiError(400, "Bad Request: message text is empty")
        chat_id = int(params["chat_id"])
        message = {"message_id": next(self._sent_ids), "date": int(time.time()), "from": BOT_USER,
                   "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group", "first_name": "Tester"},
                   "text": params["text"]}
        return message

    def api_sendchataction(self, params):
        return True

    def api_setmycommands(self, params):
        return True

    def api_deletewebhook(self, params):
        self.webhook = None
        return True

    def api_setwebhook(self, params):
        self.webhook = {"url": params["url"], "secret_token": params.get("secret_token"),
                        "allowed_updates": params.get("allowed_updates")}
        return True

    def api_getwebhookinfo(self, params):
        return {"url": (self.webhook or {}).get("url", ""), "has_custom_certificate": False,
                "pending_update_count": 0}

    def download(self, file_path: str) -> bytes | None:
        with self.cond:
            return next((f["data"] for f in self.files.values() if f["file_path"] == file_path), None)


def _parse_params(handler: BaseHTTPRequestHandler) -> dict:
    url = urlparse(handler.path)
    params: dict = dict(parse_qsl(url.query))
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    ctype = handler.headers.get("Content-Type", "")
    if body and ctype.startswith("application/json"):
        params.update(json.loads(body))
    elif body and ctype.startswith("application/x-www-form-urlencoded"):
        for key, value in parse_qsl(body.decode(), keep_blank_values=True):
            if key in RAW_STRING_PARAMS:
                params[key] = value
                continue
            try:
                params[key] = json.loads(value)
            except ValueError:
                params[key] = value
    elif body:
        raise ApiError(400, f"Bad Request: unsupported content type {ctype}")
    return params


def _make_handler(api: TelegramStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the bot hung up (e.g. a long poll cancelled at shutdown)
                pass

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode())

        def _route(self):
            path = unquote(urlparse(self.path).path)  # PTB quotes file URLs (the token's colon)
            prefix = f"/bot{api.token}/"
            file_prefix = f"/file/bot{api.token}/"
            if path.startswith(file_prefix) and self.command == "GET":
                data = api.download(path[len(file_prefix):])
                if data is None:
                    self._json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                else:
                    self._send(200, data, "application/octet-stream")
                return
            if not path.startswith(prefix):
                self._json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                return
            try:
                result = api.handle(path[len(prefix):], _parse_params(self))
            except ApiError as e:
                payload = {"ok": False, "error_code": e.code, "description": e.description}
                if e.parameters:
                    payload["parameters"] = e.parameters
                self._json(e.code, payload)
                return
            self._json(200, {"ok": True, "result": result})

        do_GET = do_POST = _route

    return Handler
