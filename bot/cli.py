"""`woof bot`: run the Telegram bot (long polling by default, a webhook with --webhook-url)."""

from __future__ import annotations

import argparse
import os
import re

from woof.errors import WoofError

from .identity import SECRET_ENV, SECRET_FILE

TOKEN_ENV = "WOOF_TELEGRAM_TOKEN"
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as a webhook secret token


def add_bot(sub) -> None:
    env = os.environ.get
    p = sub.add_parser(
        "bot", help="run the Telegram bot (calls the gateway)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Telegram bot that names the dog breed in photos by calling the woof gateway.\n\n"
                    f"The token comes from ${TOKEN_ENV} (create a bot with @BotFather); it is never printed "
                    "or logged.\n"
                    "Chats are known to the gateway and the chat store only by an HMAC of the chat id keyed by "
                    f"${SECRET_ENV}\n(at least 32 random characters; never printed or logged). Unset, a random "
                    f"key is made on the first\nstart and kept in {SECRET_FILE} beside the chat store (mode 0600): "
                    "keep it with the store, since a new key\ngives every chat a new id (its /model choice is "
                    "forgotten, the A/B split reshuffles it).\n"
                    "Long polling by default; --webhook-url switches to a webhook server.",
        epilog="environment: WOOF_TELEGRAM_TOKEN (required), WOOF_BOT_SECRET, WOOF_GATEWAY_URL, "
               "WOOF_TELEGRAM_API_URL, WOOF_BOT_STATE, WOOF_BOT_RATE_LIMIT, WOOF_TELEGRAM_WEBHOOK_URL, "
               "WOOF_TELEGRAM_WEBHOOK_LISTEN, WOOF_TELEGRAM_WEBHOOK_PORT, WOOF_TELEGRAM_WEBHOOK_SECRET")
    p.add_argument("--gateway", metavar="URL", default=env("WOOF_GATEWAY_URL", "http://127.0.0.1:8000"),
                   help="woof gateway (default: $WOOF_GATEWAY_URL or %(default)s)")
    p.add_argument("--api-url", metavar="URL", default=env("WOOF_TELEGRAM_API_URL", "https://api.telegram.org"),
                   help="Telegram Bot API server, e.g. a local telegram-bot-api (default: %(default)s)")
    p.add_argument("--state", metavar="FILE", default=env("WOOF_BOT_STATE"),
                   help="JSON file with each chat's /model choice; the generated client-id key, when "
                        f"${SECRET_ENV} is unset, lives beside it in {SECRET_FILE} (default: $WOOF_BOT_STATE or "
                        "~/.local/state/woof/bot-chats.json)")
    p.add_argument("--rate-limit", metavar="N/SECONDS", default=env("WOOF_BOT_RATE_LIMIT", "20/60"),
                   help="per-user limit on messages the bot handles, N per SECONDS (whole seconds); 0 switches it "
                        "off (default: %(default)s)")
    p.add_argument("--gateway-timeout", type=float, default=30.0, help="seconds per gateway request (default 30)")
    p.add_argument("--gateway-attempts", type=int, default=3,
                   help="tries per gateway request when it is down or busy (default 3)")
    w = p.add_argument_group("webhook mode")
    w.add_argument("--webhook-url", metavar="URL", default=env("WOOF_TELEGRAM_WEBHOOK_URL"),
                   help="public HTTPS URL Telegram posts updates to; its path is served locally")
    w.add_argument("--webhook-listen", metavar="ADDR", default=env("WOOF_TELEGRAM_WEBHOOK_LISTEN", "127.0.0.1"),
                   help="address of the local webhook server (default: %(default)s; 0.0.0.0 in a container)")
    w.add_argument("--webhook-port", metavar="PORT", type=int, default=int(env("WOOF_TELEGRAM_WEBHOOK_PORT", "8443")),
                   help="port of the local webhook server (default: %(default)s)")
    w.add_argument("--webhook-secret", metavar="TOKEN", default=env("WOOF_TELEGRAM_WEBHOOK_SECRET"),
                   help="secret Telegram sends in X-Telegram-Bot-Api-Secret-Token; updates without it are "
                        "refused (default: $WOOF_TELEGRAM_WEBHOOK_SECRET, else a random one per start)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_bot)


def settings_from_args(args):
    from .app import Settings
    from .identity import load_secret
    from .ratelimit import parse_rate
    from .store import default_state_path

    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise WoofError(f"{TOKEN_ENV} is not set: create a bot with @BotFather in Telegram and export the "
                        f"token it gives you (export {TOKEN_ENV}=...)")
    try:
        rate_count, rate_seconds = parse_rate(args.rate_limit)
    except ValueError as e:
        raise WoofError(str(e)) from None
    if args.webhook_secret and not SECRET_RE.match(args.webhook_secret):
        raise WoofError("the webhook secret may use only A-Z, a-z, 0-9, _ and - (1-256 characters)")
    if args.webhook_url and urlparse_scheme(args.webhook_url) not in ("http", "https"):
        raise WoofError(f"--webhook-url must be an http(s) URL: {args.webhook_url}")
    if args.gateway_attempts < 1 or args.gateway_timeout <= 0:
        raise WoofError("--gateway-attempts must be >= 1 and --gateway-timeout > 0")
    state = str(args.state or default_state_path())
    secret, secret_source = load_secret(state)
    return Settings(token=token, api_url=args.api_url, gateway_url=args.gateway,
                    gateway_timeout=args.gateway_timeout, gateway_attempts=args.gateway_attempts,
                    state=state, rate_count=rate_count, rate_seconds=rate_seconds,
                    webhook_url=args.webhook_url, webhook_listen=args.webhook_listen, webhook_port=args.webhook_port,
                    webhook_secret=args.webhook_secret, secret=secret, secret_source=secret_source)


def urlparse_scheme(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).scheme


def cmd_bot(args) -> int:
    from telegram.error import InvalidToken, NetworkError

    from .app import run, setup_logging

    settings = settings_from_args(args)
    setup_logging(args.log_level, [settings.token, settings.webhook_secret or "", settings.secret])
    try:
        run(settings)
    except InvalidToken:
        raise WoofError(f"Telegram refused the token in {TOKEN_ENV} (revoked or mistyped? @BotFather shows it)") \
            from None
    except NetworkError as e:
        message = str(e).replace(settings.token, "<redacted>")
        raise WoofError(f"cannot reach the Telegram Bot API at {settings.api_url}: {message}") from None
    return 0
