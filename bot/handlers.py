"""The bot's handlers: each one small; the wiring is in bot/app.py."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from html import escape as esc
from pathlib import PurePath

from telegram import Update
from telegram.constants import ChatAction, ChatType
from telegram.error import BadRequest, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from . import texts
from .gateway import GatewayClient, GatewayError
from .identity import ClientIds, legacy_client_id
from .images import TELEGRAM_DOWNLOAD_LIMIT, BadImage, is_image_document, prepare
from .ratelimit import RateLimiter
from .store import ChatStore

log = logging.getLogger(__name__)
RESET_WORDS = {"auto", "default", "reset", "ab", "a/b"}


@dataclass
class Services:
    """What the handlers share, kept in application.bot_data["woof"]."""
    store: ChatStore
    limiter: RateLimiter
    gateway_url: str
    ids: ClientIds
    gateway: GatewayClient | None = None  # created in post_init, inside the event loop

    def client(self, chat_id: int) -> str:
        """The chat's keyed id (X-Client-Id, chat-store key); moves a pre-upgrade store entry to it."""
        client = self.ids(chat_id)
        if self.store.adopt(legacy_client_id(chat_id), client):
            log.info("chat store: chat %s kept its /model choice from before keyed ids", client[:8])
        return client


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data["woof"]


# ---------------------------------------------------------------- rate limit (handler group -1)
async def rate_limit(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stops the update when its user is over the per-user limit; says so once per window."""
    user, message = update.effective_user, update.effective_message
    if user is None:
        return
    limiter = services(context).limiter
    allowed, warn, retry_after = limiter.hit(user.id)
    if allowed:
        return
    log.info("rate limit: user %s blocked for %.1f s", services(context).ids(user.id)[:8], retry_after)
    if warn and message is not None:
        try:
            await message.reply_text(texts.RATE_LIMITED.format(
                count=limiter.count, window=texts.seconds(limiter.seconds), wait=texts.seconds(retry_after)))
        except TelegramError as e:  # the update stays stopped: a failed notice must not let it through
            log.warning("rate limit: could not send the notice: %s", e)
    raise ApplicationHandlerStop


# ---------------------------------------------------------------- commands
async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.HELP)


async def breeds(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.BREEDS_TEXT)


async def about(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    woof = services(context)
    try:
        models = await woof.gateway.models()
    except GatewayError as e:
        await reply_gateway_error(update, e)
        return
    chosen = woof.store.model(woof.client(update.effective_chat.id))
    await update.effective_message.reply_text(texts.about(models, chosen))


async def model(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    woof, message = services(context), update.effective_message
    client = woof.client(update.effective_chat.id)
    if context.args and context.args[0].lower() in RESET_WORDS:
        woof.store.set_model(client, None)
        await message.reply_text("OK: this chat uses the default model again (the gateway's A/B split).")
        return
    try:
        models = await woof.gateway.models()
    except GatewayError as e:
        await reply_gateway_error(update, e)
        return
    if not context.args:
        await message.reply_text(texts.models_menu(models, woof.store.model(client)))
        return
    wanted = context.args[0]
    found = next((m for m in models if m.name == wanted), None) or next(
        (m for m in models if m.name.lower() == wanted.lower()), None)
    if found is None:
        names = ", ".join(m.name for m in models) or "none right now"
        await message.reply_text(f"There is no model called <b>{esc(wanted)}</b>. Hosted: {esc(names)}.")
        return
    woof.store.set_model(client, found.name)
    await message.reply_text(f"OK: this chat now uses <b>{esc(found.name)}</b> {esc(found.version)}. "
                             "/model auto goes back to the default.")


async def unknown_command(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    command = (update.effective_message.text or "/").split()[0]
    await update.effective_message.reply_text(texts.UNKNOWN_COMMAND.format(command=esc(command)))


# ---------------------------------------------------------------- other messages
async def text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.TEXT_REPLY)


async def sticker(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.STICKER)


async def media(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.MEDIA)


async def other(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await update.effective_message.reply_text(texts.OTHER)


# ---------------------------------------------------------------- photos and image documents
async def photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    await answer_image(update, context, update.effective_message.photo[-1])  # the largest size


async def document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    doc = update.effective_message.document
    if is_image_document(doc.mime_type, doc.file_name):
        await answer_image(update, context, doc)
        return
    if update.effective_chat.type != ChatType.PRIVATE:
        return  # in a group, other people's files are none of the bot's business
    suffix = PurePath(doc.file_name or "").suffix.lstrip(".").upper()
    what = f"a {suffix} file" if suffix else f"of type {doc.mime_type}" if doc.mime_type else "not an image"
    await update.effective_message.reply_text(texts.DOCUMENT.format(what=esc(what)), do_quote=True)


async def answer_image(update: Update, context: ContextTypes.DEFAULT_TYPE, media_file) -> None:
    """Download, check, shrink, ask the gateway, reply to the photo's message with the top 3."""
    woof, message = services(context), update.effective_message
    if media_file.file_size and media_file.file_size > TELEGRAM_DOWNLOAD_LIMIT:
        await message.reply_text(texts.TOO_BIG.format(size=texts.size(media_file.file_size)), do_quote=True)
        return
    await message.reply_chat_action(ChatAction.TYPING)
    try:
        file = await media_file.get_file()
    except BadRequest as e:
        if "too big" not in str(e).lower():
            raise
        await message.reply_text(texts.TOO_BIG.format(size="over 20 MB"), do_quote=True)
        return
    data = bytes(await file.download_as_bytearray())
    try:
        image, name, content_type = await asyncio.to_thread(prepare, data)
    except BadImage as e:
        log.info("undecodable image (%d bytes): %s", len(data), e)
        await message.reply_text(texts.BAD_IMAGE, do_quote=True)
        return
    client = woof.client(message.chat_id)
    chosen, note = woof.store.model(client), ""
    try:
        try:
            result = await woof.gateway.predict(image, name, content_type, client, chosen)
        except GatewayError as e:
            if e.kind != "unknown_model" or not chosen:
                raise
            woof.store.set_model(client, None)  # the chosen model was unregistered: back to the default
            note = texts.MODEL_GONE.format(model=esc(chosen))
            result = await woof.gateway.predict(image, name, content_type, client)
    except GatewayError as e:
        await reply_gateway_error(update, e)
        return
    top = result.get("top_k") or [{}]
    log.info("client %s: %s %s -> %s (known breed: %s, %s ms)", client[:8], result.get("model"),
             result.get("model_version"), top[0].get("breed"), result.get("is_known_breed"), result.get("latency_ms"))
    await message.reply_text(texts.prediction(result, note), do_quote=True)


async def reply_gateway_error(update: Update, error: GatewayError) -> None:
    if error.kind == "error":
        raise error  # unexpected: the error handler apologises and logs it
    log.warning("gateway: %s", error)
    answer = {"unavailable": texts.GATEWAY_DOWN, "busy": texts.GATEWAY_BUSY}.get(error.kind, texts.BAD_IMAGE)
    await update.effective_message.reply_text(answer, do_quote=True)


# ---------------------------------------------------------------- errors
async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any exception in a handler: details to the log, an apology to the user."""
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("error while handling update %s: %s", update_id, context.error, exc_info=context.error)
    if isinstance(update, Update) and update.effective_chat is not None:
        try:
            await context.bot.send_message(update.effective_chat.id, texts.APOLOGY)
        except TelegramError as e:
            log.error("could not send the apology: %s", e)
