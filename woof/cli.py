"""The `woof` command. Each part declares its own subcommands; this file only puts them on one parser:

    training/commands.py   data, train, pretrain, eval, knn, predict, export, wise, promote, calibrate
    handlers/archive.py    archive (model -> TorchServe .mar)
    scripts/serve.py       serve (TorchServe + gateway)
    scripts/bench.py       bench (A/B benchmark through TorchServe)
    bot/cli.py             bot (Telegram)
"""

from __future__ import annotations

import argparse
import sys

from bot.cli import add_bot
from handlers.archive import add_archive
from scripts.bench import add_bench
from scripts.serve import add_serve
from training import commands
from woof import __version__
from woof.errors import WoofError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="woof", description="Dog-breed recognition for the 10 Imagewoof breeds.")
    parser.add_argument("--version", action="version", version=f"woof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (commands.add_data, commands.add_train, commands.add_pretrain, commands.add_eval, commands.add_predict,
                commands.add_knn, commands.add_export, commands.add_wise, commands.add_promote,
                commands.add_calibrate,
                add_archive, add_serve, add_bench, add_bot):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except WoofError as e:
        print(f"woof: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("woof: interrupted (finished epochs are in the checkpoint; --resume continues)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
