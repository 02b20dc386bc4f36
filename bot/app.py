"""Wiring: settings, logging without the token, and the python-telegram-bot Application."""

from __future__ import annotations

import logging
import secrets
import sys
from dataclasses import dataclass, field
from urllib.parse import urlparse

from telegram import BotCommand, LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import (
    AIORateLimiter,
    Application,
    CommandHandler,
    Defaults,
    MessageHandler,
    TypeHandler,
    filters,
)

from . import handlers
from .gateway import GatewayClient
from .identity import ClientIds, load_secret
from .ratelimit import RateLimiter
from .store import ChatStore

log = logging.getLogger("bot")
BOOTSTRAP_RETRIES = 3  # a Telegram hiccup at start-up is retried (1 + 2 + 4 s); a refused token is not
COMMANDS = [("help", "what I do, the breeds, privacy"), ("breeds", "the 10 breeds I know"),
            ("about", "model, version and accuracy"), ("model", "list or pick the model for this chat")]


@dataclass
class Settings:
    token: str
    api_url: str = "https://api.telegram.org"
    gateway_url: str = "http://127.0.0.1:8000"
    gateway_timeout: float = 30.0
    gateway_attempts: int = 3
    state: str = ""
    rate_count: int = 20
    rate_seconds: float = 60.0
    webhook_url: str | None = None
    webhook_listen: str = "127.0.0.1"
    webhook_port: int = 8443
    webhook_secret: str | None = None
    concurrency: int = 8
    secret: str = field(default="", repr=False)  # keys the per-chat ids (bot/identity.py); never logged
    secret_source: str = ""


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then replaces every secret (the bot token, the webhook secret, the client-id key) by a
    mask."""

    def __init__(self, fmt: str, secrets_: list[str]):
        super().__init__(fmt)
        self.secrets = [s for s in secrets_ if s]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "<redacted>")
        return text


def setup_logging(level: str, secrets_: list[str]) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets_))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
    # httpx logs every request URL at INFO, and Bot API URLs contain the token
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def build_application(settings: Settings) -> Application:
    api = settings.api_url.rstrip("/")
    app = (
        Application.builder()
        .token(settings.token)
        .base_url(f"{api}/bot")
        .base_file_url(f"{api}/file/bot")
        .defaults(Defaults(parse_mode=ParseMode.HTML, link_preview_options=LinkPreviewOptions(is_disabled=True)))
        .rate_limiter(AIORateLimiter(max_retries=3))  # Telegram's flood limits; waits out 429 RetryAfter
        .concurrent_updates(settings.concurrency)
        .connect_timeout(10).read_timeout(20).write_timeout(30).media_write_timeout(60)
        .post_init(_post_init)
        .post_shutdown(_post_shutdown)
        .build()
    )
    if not settings.secret:
        settings.secret, settings.secret_source = load_secret(settings.state)
    app.bot_data["woof"] = handlers.Services(
        store=ChatStore(settings.state),
        limiter=RateLimiter(settings.rate_count, settings.rate_seconds),
        gateway_url=settings.gateway_url,
        ids=ClientIds(settings.secret),
    )
    app.bot_data["woof_settings"] = settings
    add_handlers(app)
    return app


def add_handlers(app: Application) -> None:
    private = filters.ChatType.PRIVATE
    app.add_handler(TypeHandler(Update, handlers.rate_limit), group=-1)
    app.add_handler(CommandHandler(["start", "help"], handlers.start))
    app.add_handler(CommandHandler("breeds", handlers.breeds))
    app.add_handler(CommandHandler("about", handlers.about))
    app.add_handler(CommandHandler("model", handlers.model))
    app.add_handler(MessageHandler(filters.PHOTO, handlers.photo))
    app.add_handler(MessageHandler(filters.ANIMATION & private, handlers.media))  # a GIF also carries a document
    app.add_handler(MessageHandler(filters.Document.ALL, handlers.document))
    app.add_handler(MessageHandler(filters.COMMAND & private, handlers.unknown_command))
    app.add_handler(MessageHandler(filters.TEXT & private, handlers.text))
    app.add_handler(MessageHandler(filters.Sticker.ALL & private, handlers.sticker))
    app.add_handler(MessageHandler((filters.VOICE | filters.AUDIO | filters.VIDEO | filters.VIDEO_NOTE) & private,
                                   handlers.media))
    app.add_handler(MessageHandler(filters.UpdateType.MESSAGE & private, handlers.other))
    app.add_error_handler(handlers.on_error)


async def _post_init(app: Application) -> None:
    settings: Settings = app.bot_data["woof_settings"]
    woof: handlers.Services = app.bot_data["woof"]
    woof.gateway = GatewayClient(settings.gateway_url, timeout=settings.gateway_timeout,
                                 attempts=settings.gateway_attempts)
    try:
        await app.bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS])
    except Exception as e:  # a menu is nice to have, not a reason to stop
        log.warning("could not set the command menu: %s", e)
    limit = (f"{settings.rate_count} updates per {settings.rate_seconds:g} s per user" if settings.rate_count
             else "off")
    log.info("woof bot @%s started: gateway %s, chat store %s, client ids keyed by %s, rate limit %s, %s",
             app.bot.username, settings.gateway_url, settings.state, settings.secret_source or "the given secret",
             limit,
             f"webhook {settings.webhook_url}" if settings.webhook_url else "long polling")


async def _post_shutdown(app: Application) -> None:
    woof: handlers.Services = app.bot_data["woof"]
    if woof.gateway is not None:
        await woof.gateway.close()
    log.info("woof bot stopped")


def run(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM: long polling, or a webhook server when settings.webhook_url is set."""
    app = build_application(settings)
    allowed = [Update.MESSAGE]
    if settings.webhook_url:
        secret = settings.webhook_secret or secrets.token_urlsafe(32)
        app.run_webhook(listen=settings.webhook_listen, port=settings.webhook_port,
                        url_path=urlparse(settings.webhook_url).path.lstrip("/"), webhook_url=settings.webhook_url,
                        secret_token=secret, allowed_updates=allowed, bootstrap_retries=BOOTSTRAP_RETRIES)
    else:
        app.run_polling(allowed_updates=allowed, bootstrap_retries=BOOTSTRAP_RETRIES)
