"""Everything the bot says, in one place (HTML parse mode: dynamic parts go through esc())."""

from __future__ import annotations

from html import escape as esc

from woof.breeds import BREEDS, WNIDS

BREED_LIST = "\n".join(f"• {BREEDS[w]}" for w in WNIDS)

PRIVACY = ("🔒 <b>Privacy:</b> photos are sent to the woof recogniser and forgotten right after the answer; "
           "they are never stored. The recogniser sees only an anonymous hash of this chat, never your name.")

HELP = (
    "🐶 <b>woof</b> names the dog breed in a photo.\n\n"
    "Send me a photo of a dog (or several, an album works too) and I reply with my top 3 guesses "
    "among these 10 breeds:\n"
    f"{BREED_LIST}\n\n"
    "If a photo probably shows another breed, or no dog at all, I say so and still show the closest guesses.\n\n"
    "<b>Commands</b>\n"
    "/breeds — the 10 breeds I know\n"
    "/about — which model answers, its version and accuracy\n"
    "/model — list the models; <code>/model NAME</code> picks one for this chat, "
    "<code>/model auto</code> goes back to the default\n"
    "/help — this message\n\n"
    f"{PRIVACY}"
)

BREEDS_TEXT = f"I know these 10 breeds (the Imagewoof set):\n{BREED_LIST}\n\nSend a photo to try me!"

TEXT_REPLY = "Send me a <b>photo</b> of a dog and I'll tell you which of my 10 breeds it looks like. /help says more."
UNKNOWN_COMMAND = "I don't know {command}. /help lists what I can do."
STICKER = "Nice sticker! 😄 I can only look at real photos, though: send me a picture of a dog."
MEDIA = "I can't listen to or watch that. 🙉 Send me a <b>photo</b> of a dog instead."
OTHER = "I only understand dog photos. 📷 Send me one, or /help."
DOCUMENT = ("That file is {what}; I can only read images (JPEG, PNG or WebP). "
            "Send the dog photo as a photo, or as one of those image files.")
TOO_BIG = ("That file is {size}, and Telegram lets bots download only files up to 20 MB. "
           "Send it as a <b>photo</b> (Telegram shrinks it) or as a smaller file.")
BAD_IMAGE = ("I couldn't open that image: it seems damaged, or it isn't really a JPEG, PNG or WebP. "
             "Could you send it again, as a photo?")
GATEWAY_DOWN = "😴 The breed recogniser is not reachable right now. Please try again in a minute."
GATEWAY_BUSY = "🐕‍🦺 The breed recogniser is very busy right now. Please try again in a few seconds."
RATE_LIMITED = ("Whoa, that's a lot at once! 🐾 I look at up to {count} messages per {window} from one person. "
                "Please send the rest again in about {wait}.")
APOLOGY = "😿 Sorry, something went wrong on my side while handling that. It's been logged; please try again."
MODEL_GONE = "(The model <b>{model}</b> you picked is no longer available, so this chat is back on the default.)"


def seconds(value: float) -> str:
    value = max(1, round(value))
    return f"{value} s" if value < 90 else f"{round(value / 60)} min"


def size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def percent(p: float) -> str:
    return f"{p:.0%}" if p >= 0.01 else "<1%"


def a_breed(breed: str) -> str:
    """'a beagle', 'an Australian terrier' (bold breed name)."""
    return f"{'an' if breed[:1].lower() in 'aeiou' else 'a'} <b>{esc(breed)}</b>"


def prediction(result: dict, note: str = "") -> str:
    """The reply to a photo: a headline, the top 3 with percentages, and which model answered."""
    top = result.get("top_k") or []
    lines = []
    if not top:
        lines.append("I couldn't get guesses for this photo.")
    elif result.get("answer") == "not_dog" or (result.get("answer") is None and result.get("is_known_breed") is False):
        lines.append("🤔 This is probably <b>not a dog</b>, so not one of the 10 breeds I know. If it is a dog, "
                     "my closest guesses:")
    elif result.get("answer") == "other_dog":
        other = result.get("other_breed")
        if other:
            lines.append(f"🐶 This looks like {a_breed(other['name'])} — <b>not one of the 10 breeds I know</b>. "
                         "The closest of my 10:")
        else:
            lines.append("🐶 A dog, but probably <b>not one of the 10 breeds I know</b>. The closest of my 10:")
    elif top[0]["probability"] < 0.3:
        lines.append(f"🐕 Hard to say, but it might be {a_breed(top[0]['breed'])}.")
    else:
        lines.append(f"🐕 This looks like {a_breed(top[0]['breed'])}!")
    lines += [f"{i}. {esc(t['breed'])} — {percent(t['probability'])}" for i, t in enumerate(top[:3], 1)]
    model = " ".join(str(x) for x in (result.get("model"), result.get("model_version")) if x)
    if model:
        lines.append(f"\n<i>model: {esc(model)}</i>")
    if note:
        lines.append(note)
    return "\n".join(lines)


def model_line(m) -> str:
    parts = [f"<b>{esc(m.name)}</b> {esc(m.version)}"]
    details = []
    if m.architecture:
        details.append(esc(str(m.architecture)))
    if m.input_size:
        details.append(f"{m.input_size} px")
    if m.val_top1 is not None:
        details.append(f"{m.val_top1:.1%} top-1 on Imagewoof val")
    if m.val_top1_subset is not None:
        details.append(f"{m.val_top1_subset:.1%} on its ImageNet-val part")
    if details:
        parts.append("— " + ", ".join(details))
    if m.default:
        parts.append("(default)")
    return "• " + " ".join(parts)


def about(models, chosen: str | None) -> str:
    lines = ["🐶 <b>woof</b> recognises 10 Imagewoof dog breeds with models fine-tuned on Imagewoof "
             "and served by the woof gateway.", "", "<b>Hosted models</b>"]
    lines += [model_line(m) for m in models] or ["(none right now)"]
    lines.append("")
    lines.append(f"This chat uses <b>{esc(chosen)}</b> (/model auto goes back to the default)." if chosen else
                 "This chat uses the default model (the gateway may split traffic between models for an A/B test).")
    return "\n".join(lines)


def models_menu(models, chosen: str | None) -> str:
    current = f"<b>{esc(chosen)}</b>" if chosen else "the default (the gateway's A/B split)"
    lines = [f"This chat uses {current}.", "", "Hosted models:"]
    lines += [model_line(m) for m in models] or ["(none right now)"]
    lines += ["", "Pick one with <code>/model NAME</code>; <code>/model auto</code> goes back to the default."]
    return "\n".join(lines)
