"""The Telegram bot end to end: the real `woof bot` process, a local Bot API stand-in, the real gateway.

No Telegram and no mocks: `woof bot` runs as a subprocess with WOOF_TELEGRAM_API_URL pointing at
tests/telegram_standin.py (a real HTTP server speaking the Bot API wire format) and WOOF_GATEWAY_URL
at the session's gateway + TorchServe (conftest `gateway`), or at a dead port for the gateway-down
cases. The accuracy cases use the committed lite0-int8 archive, registered for this module.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from scripts.bench import free_ports
from tests.conftest import ROOT, val_images
from tests.telegram_standin import ApiError, TelegramStandIn
from woof.breeds import BREEDS, WNIDS

TOKEN = "7000000001:AAHtest-Secret_token-0123456789abcdefg"
WOOF = Path(sys.executable).parent / "woof"
LITE0 = "lite0-int8"
RATE = (6, 3.0)  # per-user limit of the bots under test: 6 messages per 3 s

DOWN = "not reachable right now"
BUSY = "very busy right now"
BAD_IMAGE = "couldn't open that image"
TOO_BIG = "only files up to 20 MB"
APOLOGY = "Sorry, something went wrong"
NOT_A_BREED = "not one of the 10 breeds I know"
SECRET_A, SECRET_B = "a" * 16 + "-first-secret-0123", "b" * 16 + "-other-secret-4567"


# ---------------------------------------------------------------- helpers
class BotProcess:
    """`woof bot` as a subprocess; its log (stderr and stdout) goes to a file."""

    def __init__(self, tmp: Path, api: TelegramStandIn, gateway_url: str, state: Path | None = None,
                 args: tuple[str, ...] = (), env: dict | None = None, token: str = TOKEN):
        self.log_path = tmp / f"bot-{time.monotonic_ns()}.log"
        self.state = Path(state or tmp / "chats.json")
        self.secret_file = self.state.parent / "bot-secret"  # the generated client-id key, beside the store
        self.env = {**os.environ, "WOOF_TELEGRAM_TOKEN": token, "WOOF_TELEGRAM_API_URL": api.url,
                    "WOOF_GATEWAY_URL": gateway_url, "WOOF_BOT_STATE": str(self.state),
                    "WOOF_BOT_RATE_LIMIT": f"{RATE[0]}/{RATE[1]:g}", "OMP_NUM_THREADS": "1", **(env or {})}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([str(WOOF), "bot", "--gateway-attempts", "2", *args], env=self.env,
                                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def jpeg(path: Path) -> bytes:
    return path.read_bytes()


def legacy_id(chat: int) -> str:
    """The client id of a chat before it was keyed: a SHA-256 anyone can recompute for every chat id."""
    return hashlib.sha256(f"woof-telegram-chat:{chat}".encode()).hexdigest()[:24]


def keyed_id(secret: str, chat: int) -> str:
    return hmac.new(secret.encode(), f"woof-telegram-chat:{chat}".encode(), hashlib.sha256).hexdigest()[:24]


def gateway_clients(gateway) -> str:
    """The X-Client-Id values in the gateway's access log (`client=...`), space-separated."""
    path = Path(gateway.logs) / "gateway_access.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    return " ".join(re.findall(r"client=(\S+)", text))


def headline_breed(reply: str) -> str | None:
    """The breed the reply's first line names (bold), None when it says 'not one of the breeds'."""
    first = reply.splitlines()[0]
    if NOT_A_BREED in first:
        return None
    match = re.search(r"<b>(.+?)</b>", first)
    return match.group(1) if match else None


def guesses(reply: str) -> list[tuple[str, str]]:
    """The numbered top-3 lines: [(breed, percent), ...]."""
    return re.findall(r"^\d\. (.+?) — (<?\d+%)$", reply, flags=re.M)


def ask_gateway(url: str, image: bytes, model: str) -> dict:
    r = httpx.post(f"{url}/predict", params={"model": model}, files={"file": ("x.jpg", image, "image/jpeg")},
                   timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def ask(api: TelegramStandIn, chat: int, text: str, timeout: float = 60) -> str:
    """Send a text message (or command) and return the bot's next message in that chat."""
    before = len(api.replies(chat))
    api.push(api.text(chat, text))
    return api.wait(lambda: api.replies(chat)[before:], timeout, f"the answer to {text!r}")[0]["text"]


def use_model(api: TelegramStandIn, chat: int, model: str) -> str:
    answer = ask(api, chat, f"/model {model}")
    assert answer.startswith("OK: this chat"), answer
    return answer


def big_png(image: bytes, side: int = 2600, seed: int = 0) -> bytes:
    """A real photo upscaled to side x side px with mild noise: a PNG over the gateway's 10 MB limit."""
    img = Image.open(io.BytesIO(image)).convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
    noise = np.random.default_rng(seed).integers(-6, 7, (side, side, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, "PNG", compress_level=1)
    return out.getvalue()


def chelsea_jpeg() -> bytes:
    from skimage import data

    out = io.BytesIO()
    Image.fromarray(data.chelsea()).save(out, "JPEG", quality=92)
    return out.getvalue()


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def dead_gateway() -> str:
    (port,) = free_ports(1)  # nothing listens there
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def offline(tmp_path_factory, dead_gateway):
    """A bot whose gateway is down, logging at debug level (the token must still never appear)."""
    tmp = tmp_path_factory.mktemp("bot-offline")
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp, api, dead_gateway, args=("--log-level", "debug"))
        api.wait_polling()
        yield api, bot
        assert bot.stop() == 0, bot.log[-3000:]


@pytest.fixture(scope="module")
def lite0(gateway):
    """The committed lite0-int8 archive, registered in the session's TorchServe for this module."""
    headers = {"Authorization": f"Bearer {gateway.admin_token}"}
    listed = httpx.get(f"{gateway.url}/models", timeout=30).json()["models"]
    if any(m["name"] == LITE0 for m in listed):
        yield LITE0
        return
    shutil.copy(ROOT / "model_store" / f"{LITE0}.mar", Path(gateway.store) / f"{LITE0}.mar")
    r = httpx.post(f"{gateway.url}/admin/register", json={"archive": f"{LITE0}.mar"}, headers=headers, timeout=300)
    assert r.status_code == 201, r.text
    try:
        yield LITE0
    finally:
        httpx.post(f"{gateway.url}/admin/unregister", json={"model": LITE0}, headers=headers, timeout=120)


@pytest.fixture(scope="module")
def online(tmp_path_factory, gateway, lite0):
    tmp = tmp_path_factory.mktemp("bot-online")
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp, api, gateway.url)
        api.wait_polling()
        yield api, bot
        assert bot.stop() == 0, bot.log[-3000:]


@pytest.fixture(scope="module")
def photos(data_root) -> dict[str, bytes]:
    """One real ImageNet-val photo per breed (wnid -> JPEG bytes)."""
    return {wnid: jpeg(path) for path, wnid in val_images(data_root, per_class=1)}


# ---------------------------------------------------------------- start-up and configuration
def test_missing_token_is_one_clear_line():
    env = {k: v for k, v in os.environ.items() if k != "WOOF_TELEGRAM_TOKEN"}
    r = subprocess.run([str(WOOF), "bot"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "WOOF_TELEGRAM_TOKEN is not set" in lines[0] and "BotFather" in lines[0]


def test_help_works():
    r = subprocess.run([str(WOOF), "bot", "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for flag in ("--webhook-url", "--webhook-port", "--webhook-secret", "--rate-limit", "--gateway"):
        assert flag in r.stdout
    assert "WOOF_BOT_SECRET" in r.stdout and "bot-secret" in r.stdout  # the client-id key, like the token


def test_refused_token_exits_cleanly_without_printing_it(tmp_path, dead_gateway):
    with TelegramStandIn("111:other-token") as api:  # answers 401 Unauthorized to our token, as Telegram does
        bot = BotProcess(tmp_path, api, dead_gateway)
        rc = bot.process.wait(60)
    assert rc != 0
    assert "Telegram refused the token in WOOF_TELEGRAM_TOKEN" in bot.log
    assert TOKEN not in bot.log and TOKEN.split(":")[1] not in bot.log


# ---------------------------------------------------------------- commands and non-photo messages (no gateway needed)
def test_start_and_help_explain_breeds_and_privacy(offline):
    api, bot = offline
    texts = [ask(api, 101, "/start"), ask(api, 101, "/help")]
    assert texts[0] == texts[1]
    for breed in BREEDS.values():
        assert breed in texts[0]
    assert "never stored" in texts[0] and "/model" in texts[0] and "/about" in texts[0]
    commands = api.sent("setMyCommands")[0]["commands"]
    assert {c["command"] for c in commands} == {"help", "breeds", "about", "model"}


def test_breeds_lists_the_ten(offline):
    api, _ = offline
    text = ask(api, 102, "/breeds")
    assert [b for b in BREEDS.values() if b in text] == [BREEDS[w] for w in WNIDS]


def test_text_sticker_voice_and_unknown_command_get_short_helpful_answers(offline):
    api, _ = offline
    assert "photo" in ask(api, 103, "hello, is this a good boy?")
    api.push(api.sticker(104))
    assert "sticker" in api.wait(lambda: api.replies(104))[0]["text"]
    api.push(api.voice(105))
    assert "photo" in api.wait(lambda: api.replies(105))[0]["text"]
    assert "/frobnicate" in ask(api, 106, "/frobnicate now")
    # in a group the bot keeps quiet about chatter (it answers photos only)
    api.push(api.text(-107, "lol", user_id=107), api.text(108, "/breeds"))
    api.wait(lambda: api.replies(108))
    time.sleep(0.5)
    assert api.replies(-107) == []


def test_pdf_document_is_refused_politely(offline, data_root):
    api, _ = offline
    pdf = io.BytesIO()
    Image.open(val_images(data_root)[0][0]).save(pdf, "PDF")  # a real PDF (of a dog, even)
    (m,) = api.push(api.document(110, pdf.getvalue(), "dog.pdf", "application/pdf"))
    reply = api.wait_reply(m)
    assert "PDF file" in reply and "JPEG, PNG or WebP" in reply
    assert not api.sent("getFile", file_id=m["document"]["file_id"])  # not even downloaded
    (m,) = api.push(api.document(-109, pdf.getvalue(), "minutes.pdf", "application/pdf", user_id=109))
    assert "Samoyed" in ask(api, 109, "/breeds")
    time.sleep(0.5)
    assert api.replies(-109) == []  # in a group, other files are left alone


def test_oversized_files_get_a_friendly_message(offline, photos):
    api, _ = offline
    # Telegram tells the file size in the update: the bot does not even try to download it
    (m,) = api.push(api.document(111, b"\xff\xd8" + bytes(1000), "huge.jpg", "image/jpeg",
                                 file_size=25 * 1024 * 1024))
    reply = api.wait_reply(m)
    assert TOO_BIG in reply and "25.0 MB" in reply
    assert not api.sent("getFile", file_id=m["document"]["file_id"])
    # no size in the update: getFile answers "file is too big", as Telegram does over 20 MB
    (m,) = api.push(api.document(112, photos[WNIDS[0]], "huge2.jpg", "image/jpeg", file_size=21 * 1024 * 1024,
                                 declared_size=False))
    assert TOO_BIG in api.wait_reply(m)
    assert api.sent("getFile", file_id=m["document"]["file_id"])


def test_corrupt_images_get_a_friendly_message(offline, photos):
    api, bot = offline
    truncated = photos[WNIDS[1]][: len(photos[WNIDS[1]]) // 3]
    (m1,) = api.push(api.document(113, truncated, "broken.jpg", "image/jpeg"))
    (m2,) = api.push(api.document(113, b"this is not a PNG at all" * 50, "fake.png", "image/png"))
    (m3,) = api.push(api.photo(113, truncated))
    for m in (m1, m2, m3):
        assert BAD_IMAGE in api.wait_reply(m)
    assert bot.alive()


def test_gateway_down_tells_the_user_and_the_bot_keeps_going(offline, photos):
    api, bot = offline
    (m,) = api.push(api.photo(120, photos[WNIDS[2]]))
    assert DOWN in api.wait_reply(m)
    assert api.sent("sendChatAction", chat_id=120), "the chat action comes first"
    for command in ("/about", "/model", "/model tiny"):
        assert DOWN in ask(api, 121, command)
    assert "Samoyed" in ask(api, 122, "/breeds")
    assert bot.alive() and "gateway unreachable" in bot.log


def test_an_error_in_a_handler_apologises_and_logs_the_details(offline, photos):
    api, bot = offline
    msg = api.photo(130, photos[WNIDS[3]])
    api.fail("getFile", ApiError(500, "Internal Server Error: stand-in fault"), file_id=msg["photo"][-1]["file_id"])
    api.push(msg)
    reply = api.wait(lambda: api.replies(130))[0]["text"]
    assert APOLOGY in reply
    log = bot.log
    assert "error while handling update" in log and "Traceback" in log and "stand-in fault" in log
    assert "Samoyed" in ask(api, 131, "/breeds")
    assert bot.alive()


def test_flood_control_429_is_waited_out(offline):
    api, _ = offline
    api.fail("sendMessage", ApiError(429, "Too Many Requests: retry after 1", {"retry_after": 1}), chat_id=140)
    api.push(api.text(140, "/breeds"))
    api.wait(lambda: len(api.replies(140)) >= 2, 30, "the retried message")
    attempts = [c["time"] for c in api.calls if c["method"] == "sendMessage" and c["params"]["chat_id"] == 140]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.9  # PTB's AIORateLimiter obeyed retry_after


def test_the_token_never_reaches_the_log(offline):
    _, bot = offline
    log = bot.log
    assert "Calling Bot API endpoint" in log  # debug logging was on
    assert "<redacted>" in log  # PTB logs its API URL (with the token) at debug level: masked
    assert TOKEN not in log and TOKEN.split(":")[1] not in log


def test_the_generated_client_id_secret_is_private_and_never_logged(offline):
    _, bot = offline
    secret = bot.secret_file.read_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)  # secrets.token_bytes(32), as hex
    assert stat.S_IMODE(bot.secret_file.stat().st_mode) == 0o600
    assert f"client ids keyed by {bot.secret_file}" in bot.log
    assert secret not in bot.log and secret[:16] not in bot.log  # debug logging is on


# ---------------------------------------------------------------- webhook mode
def test_webhook_mode_checks_the_secret_token(tmp_path, dead_gateway):
    (port,) = free_ports(1)
    secret = "s3cret-Webhook_token"
    url = f"http://127.0.0.1:{port}/telegram/woof"
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp_path, api, dead_gateway, args=("--webhook-url", url, "--webhook-port", str(port)),
                         env={"WOOF_TELEGRAM_WEBHOOK_SECRET": secret})
        try:
            hook = api.wait(lambda: api.sent("setWebhook"), 60, "setWebhook")[0]
            assert hook["url"] == url and hook["secret_token"] == secret
            assert hook["allowed_updates"] == ["message"]
            for _ in range(100):  # setWebhook comes just before the server listens
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            bad = api.update(api.text(150, "/start"))
            wrong = httpx.post(url, json=bad, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}, timeout=10)
            missing = httpx.post(url, json=api.update(api.text(151, "/start")), timeout=10)
            assert wrong.status_code == 403 and missing.status_code == 403
            good = httpx.post(url, json=api.update(api.text(152, "/start")),
                              headers={"X-Telegram-Bot-Api-Secret-Token": secret}, timeout=10)
            assert good.status_code == 200
            assert "Samoyed" in api.wait(lambda: api.replies(152))[0]["text"]
            time.sleep(0.5)
            assert api.replies(150) == [] and api.replies(151) == []
            assert not api.sent("getUpdates")
            assert secret not in bot.log and TOKEN not in bot.log
        finally:
            assert bot.stop() == 0, bot.log[-3000:]


# ---------------------------------------------------------------- photos through the real gateway
def test_photos_of_breeds_are_named(online, gateway, lite0, photos):
    api, _ = online
    assert "lite0-int8" in use_model(api, 200, lite0)
    wnids = [WNIDS[i] for i in (2, 5, 8, 9)]  # beagle, Australian terrier, Samoyed, dingo
    messages = api.push(*[api.photo(200, photos[w]) for w in wnids])
    for wnid, m in zip(wnids, messages):
        reply = api.wait_reply(m, 60)
        truth = ask_gateway(gateway.url, photos[wnid], lite0)
        assert headline_breed(reply) == BREEDS[wnid] == truth["top_k"][0]["breed"], reply
        assert guesses(reply)[0] == (BREEDS[wnid], f"{truth['top_k'][0]['probability']:.0%}")
        assert len(guesses(reply)) == 3 and "model: lite0-int8" in reply


def test_a_cat_is_not_one_of_the_breeds(online, gateway, lite0):
    api, _ = online
    use_model(api, 201, lite0)
    cat = chelsea_jpeg()
    (m,) = api.push(api.photo(201, cat, width=451, height=300))
    reply = api.wait_reply(m, 60)
    assert NOT_A_BREED in reply and "not a dog" in reply
    assert len(guesses(reply)) == 3  # still the closest guesses
    assert ask_gateway(gateway.url, cat, lite0)["answer"] == "not_dog"


PUG = ROOT.parent / "shared" / "data" / "openset" / "otherdogs" / "pug" / "GilbertoBotas__Perdonque-Dog-Images__pug.jpg"


def test_a_dog_of_another_breed_is_named_and_not_called_one_of_the_ten(online, gateway, lite0):
    api, _ = online
    use_model(api, 206, lite0)
    (m,) = api.push(api.photo(206, PUG.read_bytes(), width=320, height=320))
    reply = api.wait_reply(m, 60)
    assert "looks like a <b>pug</b>" in reply and NOT_A_BREED in reply and headline_breed(reply) is None
    assert len(guesses(reply)) == 3  # the closest of the 10 are still shown
    answer = ask_gateway(gateway.url, PUG.read_bytes(), lite0)
    assert answer["answer"] == "other_dog" and answer["other_breed"]["name"] == "pug"


def test_image_documents_are_treated_like_photos_and_large_ones_downscaled(online, gateway, lite0, photos):
    api, bot = online
    use_model(api, 202, lite0)
    wnid = WNIDS[6]  # golden retriever
    webp = io.BytesIO()
    Image.open(io.BytesIO(photos[wnid])).save(webp, "WEBP", quality=90)
    png = big_png(photos[WNIDS[8]])
    assert len(png) > 10 * 1024 * 1024  # over the gateway's upload limit (WOOF_MAX_UPLOAD_MB 10)
    m1, m2 = api.push(api.document(202, webp.getvalue(), "goldie.webp", "image/webp"),
                      api.document(202, png, "samoyed.png", "image/png"))
    assert headline_breed(api.wait_reply(m1, 60)) == BREEDS[wnid]
    reply = api.wait_reply(m2, 90)
    assert headline_breed(reply) == BREEDS[WNIDS[8]] and len(guesses(reply)) == 3, reply


def test_an_album_gets_one_answer_per_photo(online, photos):
    api, _ = online
    album = [api.photo(203, photos[w], media_group_id="album-1") for w in WNIDS[:3]]
    api.push(*album)
    for m in album:
        reply = api.wait_reply(m, 60)
        assert len(guesses(reply)) == 3 and "model:" in reply
    assert len(api.replies(203)) == 3


def test_a_burst_of_30_photos_meets_the_rate_limit_and_the_bot_survives(online, photos):
    api, bot = online
    # user 204 is this test's alone: the limit is per user, so any other message of theirs within the window
    # (another test's, run just before this one) would take part of the burst's allowance
    assert not api.sent("sendMessage", chat_id=204)
    burst = [api.photo(204, photos[WNIDS[i % 10]]) for i in range(30)]
    start = time.monotonic()
    api.push(*burst)
    api.wait(lambda: sum(bool(api.reply_to(m)) for m in burst) >= RATE[0], 90, "the allowed answers")
    notices = api.wait(lambda: [p for p in api.replies(204) if "Whoa" in p["text"]], 30, "the rate-limit notice")
    time.sleep(1.0)
    answered = [m for m in burst if api.reply_to(m)]
    assert answered == burst[:RATE[0]], "the first messages are answered, the rest of the burst is not"
    assert all(len(guesses(api.reply_to(m)[0]["text"])) == 3 for m in answered)
    assert len([p for p in api.replies(204) if "Whoa" in p["text"]]) == 1, "one notice, not one per photo"
    assert f"up to {RATE[0]} messages per 3 s" in notices[0]["text"]
    assert len(api.sent("getFile")) < 30 * 2  # refused photos were never downloaded
    time.sleep(max(0.0, start + RATE[1] + 0.5 - time.monotonic()))
    (m,) = api.push(api.photo(204, photos[WNIDS[0]]))  # the window has passed: answered again
    assert len(guesses(api.wait_reply(m, 60))) == 3
    assert bot.alive()


def test_about_shows_models_versions_and_accuracy(online, lite0):
    api, _ = online
    text = ask(api, 205, "/about")
    from woof.card import archive_card

    card = archive_card(ROOT / "model_store" / f"{LITE0}.mar")  # what the archive itself says
    assert f"<b>{LITE0}</b> {card['version']}" in text and "efficientnet_lite0" in text and "224 px" in text
    assert f"{card['metrics']['val']['top1']:.1%} top-1 on Imagewoof val" in text
    assert "<b>tiny-onnx</b>" in text and "(default)" in text


def test_model_choice_survives_a_restart(tmp_path, gateway, photos):
    state = tmp_path / "chats.json"
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp_path, api, gateway.url, state=state)
        api.wait_polling()
        menu = ask(api, 300, "/model")
        assert "uses the default" in menu and "<b>tiny</b>" in menu and "<b>tiny-onnx</b>" in menu
        assert "no model called" in ask(api, 300, "/model no-such-model")
        assert "now uses <b>tiny</b>" in use_model(api, 300, "tiny")
        assert bot.stop() == 0
    saved = json.loads(state.read_text())
    assert list(saved["chats"].values()) == [{"model": "tiny"}]
    assert all(re.fullmatch(r"[0-9a-f]{24}", key) for key in saved["chats"])  # a hash, not the chat id
    secret = bot.secret_file.read_text()  # no WOOF_BOT_SECRET: made on the first start, beside the store
    assert stat.S_IMODE(bot.secret_file.stat().st_mode) == 0o600
    assert list(saved["chats"]) == [keyed_id(secret.strip(), 300)] != [legacy_id(300)]
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp_path, api, gateway.url, state=state)
        try:
            api.wait_polling()
            (m,) = api.push(api.photo(300, photos[WNIDS[4]]))
            assert "model: tiny " in api.wait_reply(m, 60)
            assert "This chat uses <b>tiny</b>" in ask(api, 300, "/model")
            assert "default model again" in use_model(api, 300, "auto")
            (m,) = api.push(api.photo(300, photos[WNIDS[4]]))
            assert f"model: {gateway.default_model} " in api.wait_reply(m, 60)
        finally:
            assert bot.stop() == 0
    assert json.loads(state.read_text())["chats"] == {}
    assert bot.secret_file.read_text() == secret  # the same key (so the same id) after the restart


def wait_for_clients(gateway, *ids: str, timeout: float = 15.0) -> str:
    """The gateway's access log once it names every one of `ids` (it writes a line after answering)."""
    deadline = time.monotonic() + timeout
    while not all(i in gateway_clients(gateway) for i in ids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return gateway_clients(gateway)


def test_chat_ids_are_keyed_by_the_bots_secret(tmp_path, gateway, photos):
    """The chat store's key and the X-Client-Id the gateway sees (and logs) are an HMAC under the bot's secret,
    not the old public-prefix SHA-256, which anyone can invert by hashing every chat id; another secret gives
    another id."""
    keys = {}
    for name, secret in (("a", SECRET_A), ("b", SECRET_B)):
        (tmp_path / name).mkdir()
        with TelegramStandIn(TOKEN) as api:
            bot = BotProcess(tmp_path / name, api, gateway.url, env={"WOOF_BOT_SECRET": secret})
            try:
                api.wait_polling()
                use_model(api, 310, "tiny")
                (m,) = api.push(api.photo(310, photos[WNIDS[1]]))
                assert "model: tiny " in api.wait_reply(m, 60)
            finally:
                assert bot.stop() == 0, bot.log[-3000:]
        (keys[name],) = json.loads(bot.state.read_text())["chats"]
        assert not bot.secret_file.exists(), "the key came from the environment: nothing to write"
        assert "client ids keyed by $WOOF_BOT_SECRET" in bot.log and secret not in bot.log
    assert keys == {"a": keyed_id(SECRET_A, 310), "b": keyed_id(SECRET_B, 310)}
    assert keys["a"] != keys["b"] and legacy_id(310) not in keys.values()
    clients = wait_for_clients(gateway, *keys.values())
    assert keys["a"] in clients and keys["b"] in clients and legacy_id(310) not in clients


def test_a_chat_store_from_before_keyed_ids_keeps_its_choices(tmp_path, gateway, photos):
    """A store written under the old hash: a chat that comes back finds its /model choice under its keyed id
    (the old key is looked up once and moved); a chat that has not come back keeps its entry for later."""
    state = tmp_path / "chats.json"
    state.write_text(json.dumps({"version": 1, "chats": {legacy_id(320): {"model": "tiny"},
                                                         legacy_id(321): {"model": "tiny-onnx"}}}))
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp_path, api, gateway.url, state=state)
        try:
            api.wait_polling()
            (m,) = api.push(api.photo(320, photos[WNIDS[3]]))
            assert "model: tiny " in api.wait_reply(m, 60)
            assert "This chat uses <b>tiny</b>" in ask(api, 320, "/model")
        finally:
            assert bot.stop() == 0, bot.log[-3000:]
    new = keyed_id(bot.secret_file.read_text().strip(), 320)
    saved = json.loads(state.read_text())
    assert saved["chats"] == {new: {"model": "tiny"}}
    assert saved["legacy"] == {legacy_id(321): {"model": "tiny-onnx"}}, "chat 321 has not been back yet"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    clients = wait_for_clients(gateway, new)
    assert new in clients and legacy_id(320) not in clients  # the gateway never saw the old id
    with TelegramStandIn(TOKEN) as api:  # and after a restart, with the store now in the new form
        bot = BotProcess(tmp_path, api, gateway.url, state=state)
        try:
            api.wait_polling()
            assert "This chat uses <b>tiny</b>" in ask(api, 320, "/model")
            assert "This chat uses <b>tiny-onnx</b>" in ask(api, 321, "/model")  # moved on its first visit
        finally:
            assert bot.stop() == 0, bot.log[-3000:]
    assert set(json.loads(state.read_text())["chats"]) == {new, keyed_id(bot.secret_file.read_text().strip(), 321)}
    assert "legacy" not in json.loads(state.read_text())


def test_gateway_stopped_and_back(tmp_path, gateway, photos):
    """A gateway of this test's own (in front of the session's TorchServe) goes away and comes back;
    then its per-client limit answers 429, and the user hears it is busy."""
    from scripts.serve import start_gateway, stop_gateway

    (port,) = free_ports(1)
    env = {**gateway.env, "WOOF_STATE_DIR": str(tmp_path / "state"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"),
           "WOOF_RATE_LIMIT": "0.2", "WOOF_RATE_BURST": "1"}  # the gateway's own per-client limit: 1 photo per 5 s
    (tmp_path / "prom").mkdir()
    start = lambda: start_gateway(env, f"127.0.0.1:{port}", workers=1, threads=4,  # noqa: E731
                                  log_dir=tmp_path / "logs", timeout=60, log=lambda *a: None, tied=True)
    own = start()
    with TelegramStandIn(TOKEN) as api:
        bot = BotProcess(tmp_path, api, f"http://127.0.0.1:{port}")
        try:
            api.wait_polling()
            (m,) = api.push(api.photo(400, photos[WNIDS[7]]))
            assert len(guesses(api.wait_reply(m, 60))) == 3
            stop_gateway(own)
            (m,) = api.push(api.photo(400, photos[WNIDS[7]]))
            assert DOWN in api.wait_reply(m, 60)
            own = start()
            (m,) = api.push(api.photo(400, photos[WNIDS[7]]))
            assert len(guesses(api.wait_reply(m, 60))) == 3
            (m,) = api.push(api.photo(400, photos[WNIDS[7]]))  # the gateway answers 429 now
            assert BUSY in api.wait_reply(m, 60)
            assert bot.alive()
        finally:
            stop_gateway(own)
            assert bot.stop() == 0
