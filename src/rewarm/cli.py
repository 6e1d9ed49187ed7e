"""The `rewarm` command: one subcommand per pipeline stage.

Each Snakemake rule and DVC stage is one call of a subcommand with explicit
input and output paths; the subcommand validates the whole configuration first.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from rewarm import config as cfg

log = logging.getLogger("rewarm")

DESCRIPTION = """\
rewarm: reproducible continual pre-training grids (how to re-warm a pre-trained model).

Stages, in pipeline order (Snakemake rules and DVC stages of the same names call these):
  generate   write the embedded demo's synthetic corpora as .jsonl.zst
  tokenizer  train the demo's byte-level BPE, or copy a base model's tokenizer
  prepare    tokenize one corpus and pack it into Arrow shards, per split

Every stage reads the configuration from --params (default: params.yaml) and
refuses to start if any key is wrong, listing every problem at once.
"""


def _params(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params",
        action="append",
        metavar="YAML",
        help="configuration file; repeat to merge several, later ones override (default: params.yaml)",
    )


def cmd_generate(args: argparse.Namespace) -> None:
    from rewarm.data import demo

    counts = demo.generate(_load(args), args.out)
    for name, count in counts.items():
        log.info("generated %s: %d documents", name, count)
    if not counts:
        log.info("no demo sources in the configuration: %s left empty", args.out)


def cmd_tokenizer(args: argparse.Namespace) -> None:
    from rewarm.data import tokenizer

    config = _load(args)
    tokenizer.build(config, args.raw, args.out)
    log.info("tokenizer (%s) saved to %s", config.tokenizer.type, args.out)


def cmd_prepare(args: argparse.Namespace) -> None:
    from rewarm import prepare

    prepare.set_workers(args.workers)
    config = _load(args)
    prepare.prepare_corpus(config, args.corpus, args.tokenizer, args.raw, args.out)
    log.info("corpus %s prepared in %s", args.corpus, args.out)


def _load(args: argparse.Namespace) -> cfg.Config:
    return cfg.load(args.params or ["params.yaml"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewarm", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity (default: INFO)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        _params(sub)
        sub.set_defaults(func=func)
        return sub

    sub = add("generate", cmd_generate, "Write the demo sources of the configuration as Pile/SlimPajama-format .jsonl.zst files.")
    sub.add_argument("--out", required=True, help="directory to write <corpus>/<split>.jsonl.zst into (e.g. data/raw)")

    sub = add("tokenizer", cmd_tokenizer, "Train the demo tokenizer on the upstream train split, or copy a pretrained one.")
    sub.add_argument("--raw", default="data/raw", help="directory of generated demo sources (default: data/raw)")
    sub.add_argument("--out", required=True, help="Hugging Face tokenizer directory to write (e.g. data/tokenizer)")

    sub = add("prepare", cmd_prepare, "Tokenize one corpus and pack it into Arrow shards: <out>/<split>/shard-*.arrow + manifest.json.")
    sub.add_argument("--corpus", required=True, help="corpus name from the configuration (e.g. upstream)")
    sub.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory (from `rewarm tokenizer`)")
    sub.add_argument("--raw", default="data/raw", help="directory of generated demo sources (default: data/raw)")
    sub.add_argument("--out", required=True, help="output directory for the corpus (e.g. data/tokens/upstream)")
    sub.add_argument("--workers", type=int, default=1, help="tokenizer threads; output is identical for any count (default: 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except (cfg.ConfigError, ValueError, OSError) as error:
        # Errors meant for users (bad parameters, corrupt inputs, missing files): no traceback.
        log.debug("details", exc_info=True)
        print(f"rewarm {args.command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, cfg.ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
