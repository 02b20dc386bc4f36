"""Telegram bot that calls the woof gateway (see the bot issue)."""
