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
from rewarm import grid

log = logging.getLogger("rewarm")

DESCRIPTION = """\
rewarm: reproducible continual pre-training grids (how to re-warm a pre-trained model).

Stages, in pipeline order (Snakemake rules and DVC stages of the same names call these):
  generate   write the embedded demo's synthetic corpora as .jsonl.zst
  tokenizer  train the demo's byte-level BPE, or copy a base model's tokenizer
  prepare    tokenize one corpus (or one part of it: --part) and pack it into Arrow shards, per split
  assemble   join a corpus's parts into its splits' shards and manifests
  pretrain   (demo) pre-train a tiny GPT-NeoX upstream into a Pythia-style series of checkpoints
  select     resolve a base checkpoint (hub revision, local directory, pre-training step, scratch)
  train      re-warm a base checkpoint on the downstream shards: one grid cell
  prefix     a cell that stops earlier than a longer run with the same settings, read from that run
  evaluate   perplexity of a model (a cell's final model or a base checkpoint) on whole validation splits
  tasks      write the demo's benchmark tasks in the LM Evaluation Harness's format (offline)
  benchmark  LM Evaluation Harness tasks on a model (a cell's final model or a base checkpoint)
  report     tables, figures and findings across the grid (Markdown and HTML)
  grid       list the grid's cells and their parameters (and write the file dvc.yaml reads)
  plan       what the grid costs before it runs: tokens, steps, FLOPs, GPU-hours, disk, GPU memory
  params     the merged, checked configuration (e.g. params.yaml + config/paper.yaml for DVC)
  adopt      after `dvc pull`: Snakemake takes DVC's outputs as done (snakemake --touch, checked by dvc status)

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
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        dest="overrides",
        help="override one setting after the files, for a one-off run (e.g. --set train.max_lr=6e-4; the value is "
             "read as YAML); checked with the rest. Runs of the workflow put settings in a --params file instead, "
             "which both front ends track",
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
    prepare.prepare_corpus(config, args.corpus, args.tokenizer, args.raw, args.out, part=args.part)
    if args.part is None:
        log.info("corpus %s prepared in %s", args.corpus, args.out)
    else:
        log.info("corpus %s: part %d of %d prepared in %s (`rewarm assemble` joins the parts)", args.corpus, args.part,
                 config.prepare.parts, args.out)


def cmd_assemble(args: argparse.Namespace) -> None:
    from rewarm import prepare

    prepare.assemble(_load(args), args.corpus, args.parts, args.out)


def _set_threads(threads: int | None) -> None:
    """CPU threads for torch; Snakemake passes the job's `threads`. Results on CPU can depend on
    the thread count, so both front ends pass the same number. Under torchrun the job's threads are
    shared by the node's processes (LOCAL_WORLD_SIZE), at least one each, instead of each taking all."""
    if threads:
        import os

        import torch

        torch.set_num_threads(max(1, threads // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def cmd_pretrain(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import pretrain

    _set_threads(args.threads)
    final = pretrain.pretrain(
        _load(args), Path(args.tokenizer), Path(args.train), Path(args.val), Path(args.out), Path(args.state), Path(args.logs)
    )
    log.info("pre-training done: upstream validation loss %.4f; series in %s", final["val/upstream/loss"], args.out)


def cmd_select(args: argparse.Namespace) -> None:
    from rewarm import checkpoints

    checkpoints.select(_load(args), args.name, args.out, args.tokenizer, args.pretrain, args.run)
    log.info("checkpoint %s ready in %s", args.name, args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import train

    _set_threads(args.threads)
    config = _load(args)
    cells = grid.cells(config)
    if args.cell not in cells:
        raise cfg.ConfigError(
            f"cell {args.cell!r} is not in the grid (cells: {', '.join(cells)}); after changing the grid or the "
            f"`train` section, regenerate DVC's list of cells: rewarm grid --write workflow/grid.yaml"
        )
    val = dict(args.val)
    rung = args.command == "rung"
    final = train.train_cell(config, cells[args.cell], Path(args.base), Path(args.train), val, Path(args.out), Path(args.state),
                             Path(args.replay) if args.replay else None, rung=rung,
                             halving=Path(args.halving) if getattr(args, "halving", None) else None)
    summary = ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k.startswith("val/") and k.endswith("/ppl"))
    log.info("%s done at step %d: %s; %s in %s", "rung" if rung else "training", final["step"], summary,
             "its curve so far" if rung else "run", args.out)


def cmd_prefix(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import train

    final = train.prefix_cell(_load(args), args.cell, Path(args.run), Path(args.out))
    log.info("cell %s read from %s at step %d", args.cell, args.run, final["step"])


def cmd_evaluate(args: argparse.Namespace) -> None:
    from rewarm.evaluate import evaluate_model
    from rewarm.io import write_json

    _set_threads(args.threads)
    config = _load(args)
    val = {name: f"{args.tokens}/{name}/val" for name in config.eval_corpora()} if args.tokens else {}
    val.update(args.val or [])
    if not val:
        raise cfg.ConfigError("nothing to evaluate: give --tokens DIR (every corpus with a `val` split) or --val NAME=PATH")
    results = evaluate_model(args.model, val, args.batch, config.train.device, config.train.precision)
    write_json(args.out, results)
    log.info("%s: %s", args.model, ", ".join(f"{k} ppl {v['ppl']:.4g}" for k, v in results.items()))


def cmd_tasks(args: argparse.Namespace) -> None:
    from rewarm import benchmark

    counts = benchmark.write_demo_tasks(_load(args), args.out)
    for name, count in counts.items():
        log.info("task %s: %d examples in %s", name, count, args.out)
    if not counts:
        log.info("no demo tasks in the configuration (every task is the harness's own): %s left empty", args.out)


def cmd_benchmark(args: argparse.Namespace) -> None:
    from rewarm import benchmark
    from rewarm.io import write_json

    _set_threads(args.threads)
    config = _load(args)
    if not config.benchmarking():
        raise cfg.ConfigError("benchmark: no tasks in the configuration (benchmark.tasks), nothing to run")
    results = benchmark.run_benchmark(config, args.model, args.tasks, args.batch, args.harness_out)
    write_json(args.out, results)
    scores = ", ".join(f"{name} {task['score']['metric']} {task['score']['value']:.4g}"
                       for name, task in results["tasks"].items() if task["score"])
    log.info("%s: %s; average %s", args.model, scores, results["average"])


def cmd_report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import report

    out = report.write_report(_load(args), Path(args.runs), Path(args.evals), Path(args.out), partial=args.partial,
                              forecast_dir=Path(args.forecast) if args.forecast else None)
    if out is None:
        log.warning("no cell has finished: no report written")
    else:
        log.info("report written: %s", out)


def cmd_halve(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import forecast

    out = forecast.write_halving(_load(args), Path(args.rungs), Path(args.out))
    log.info("early stopping decided: %s", out)


def cmd_forecast(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import forecast

    out = forecast.write_forecast(_load(args), Path(args.runs), Path(args.evals), Path(args.out))
    log.info("forecast written: %s", out)


def cmd_grid(args: argparse.Namespace) -> None:
    import json

    from rewarm import dvcfile

    config = _load(args)
    if args.write:
        dvcfile.write_grid(config, args.write)
        return
    listing = dvcfile.grid_listing(config)
    if args.format == "json":
        print(json.dumps(listing["cells"], indent=2))
    else:
        declared = grid.declared_studies(config)  # a grid without studies: the `train` section alone
        for study, members in grid.studies(config).items():
            title = declared[study].title
            print(f"study {study}" + (f": {title}" if title else ""))
            for name in members:
                run = listing["cells"][name]
                source = listing["prefixes"].get(name)
                print(f"  {name}: checkpoint={run['checkpoint']} max_lr={run['max_lr']} schedule={run['schedule']} "
                      f"warmup={run['warmup_steps'] if run['warmup_steps'] is not None else run['warmup_fraction']} "
                      f"replay={run['replay_fraction']} corpus={run['train_corpus']} tokens={run['tokens']}"
                      + (f" (read from {source['run']})" if source else ""))


def cmd_plan(args: argparse.Namespace) -> None:
    from pathlib import Path

    from rewarm import plan

    config = _load(args)
    vocab = args.vocab_size or config.tokenizer.vocab_size
    gpu_bytes = int(args.gpu_memory * 1e9)
    if args.sizes:
        print(plan.render_sizes(config.prepare.seq_len, config.train.micro_batch_sequences, args.gpus, gpu_bytes), end="")
        return
    profile = plan.read_profile(args.profile) if args.profile else None
    gpus = profile.gpus if profile else args.gpus
    result = plan.plan(config, vocab, args.mfu, args.peak_tflops, args.concurrent, gpus)
    print(plan.render(result, args.mfu, args.peak_tflops, f"per GPU for each cell's micro_batch_sequences (FSDP: over "
                      f"{gpus} GPU{'s' if gpus > 1 else ''})", gpus, gpu_bytes), end="")
    if profile:
        print(plan.render_profile(result, profile), end="")
    if config.halving():
        from rewarm.forecast import read_halving

        print(plan.render_halving(result, grid.halving_pool(config), config.forecast.halving.fraction, config.forecast.halving.margin,
                                  read_halving(Path(args.halving))), end="")


def cmd_params(args: argparse.Namespace) -> None:
    import yaml

    config = _load(args)
    text = ("# Written by `rewarm params` from " + ", ".join(args.params or ["params.yaml"]) + ": the merged, checked configuration.\n"
            + yaml.safe_dump(cfg.to_dict(config), sort_keys=False))
    if args.write:
        from rewarm.io import write_text

        write_text(args.write, text)
        log.info("configuration written to %s", args.write)
    else:
        print(text, end="")


def cmd_dvcfile(args: argparse.Namespace) -> None:
    from rewarm import dvcfile

    if args.plots_page:
        dvcfile.write_plots_page(args.plots_page)
    elif args.write:
        dvcfile.write(args.write)
        log.info("DVC stages written to %s", args.write)
    else:
        print(dvcfile.render(), end="")


def cmd_adopt(args: argparse.Namespace) -> None:
    from rewarm import adopt

    adopt.main([a for a in args.snakemake_args if a != "--"], args.cores)


def _pair(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, path


def _load(args: argparse.Namespace) -> cfg.Config:
    return grid.load(args.params or ["params.yaml"], overrides=args.overrides)


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
    sub.add_argument("--out", required=True, help="output directory for the corpus (e.g. data/tokens/upstream); with "
                     "--part, the part's directory (e.g. data/parts/upstream/0)")
    sub.add_argument("--workers", type=int, default=1, help="tokenizer threads; output is identical for any count (default: 1)")
    sub.add_argument("--part", type=int, metavar="P",
                     help="prepare only part P (0-based) of prepare.parts into --out, with a part.json per split, for "
                          "`rewarm assemble`; the units of each split (input files, dataset shards) go to the parts in "
                          "contiguous groups (default: the whole corpus, with its manifests)")

    sub = add("assemble", cmd_assemble, "Join a corpus's parts (`rewarm prepare --part`) into <out>/<split>/ shards + manifest.json, "
              "as one `rewarm prepare` of the whole corpus writes them; shards are hard-linked where possible.")
    sub.add_argument("--corpus", required=True, help="corpus name from the configuration (e.g. upstream)")
    sub.add_argument("--parts", nargs="+", required=True, metavar="DIR",
                     help="the part directories, every part of prepare.parts once (e.g. data/parts/upstream/0 data/parts/upstream/1)")
    sub.add_argument("--out", required=True, help="output directory for the corpus (e.g. data/tokens/upstream)")

    sub = add("pretrain", cmd_pretrain, "Pre-train the demo's tiny GPT-NeoX on upstream shards; save step<N> checkpoints (resumable).")
    sub.add_argument("--tokenizer", required=True, help="Hugging Face tokenizer directory")
    sub.add_argument("--train", required=True, help="upstream train shards (e.g. data/tokens/upstream/train)")
    sub.add_argument("--val", required=True, help="upstream validation shards (e.g. data/tokens/upstream/val)")
    sub.add_argument("--state", required=True, help="resumable state directory, kept outside the output (e.g. state/pretrain)")
    sub.add_argument("--out", required=True, help="directory for the series: step<N>/ model directories and series.json")
    sub.add_argument("--logs", required=True, help="directory for the training curves (metrics.jsonl, dvclive/, metrics.json)")
    sub.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")

    sub = add("select", cmd_select, "Resolve a named base checkpoint from the configuration into a Hugging Face model directory.")
    sub.add_argument("--name", required=True, help="checkpoint name (a key of `checkpoints` in the configuration)")
    sub.add_argument("--tokenizer", required=True, help="tokenizer directory (copied into scratch checkpoints)")
    sub.add_argument("--pretrain", help="the pre-training series directory, for checkpoints of type `pretrain`")
    sub.add_argument("--run", help="the continued cell's run directory (runs/<cell>), for checkpoints of type `cell`")
    sub.add_argument("--out", required=True, help="model directory to write (e.g. checkpoints/base/final)")

    for command, text, out in (
            ("train", "Re-warm a base checkpoint on downstream shards (one grid cell); resumes after a kill.",
             "run directory: config.json, metrics.jsonl, dvclive/, metrics.json, model/"),
            ("rung", "Early stopping (forecast.halving): train a cell's first forecast.halving.fraction of steps, keeping its state "
             "for `rewarm train --halving` to go on from; its curve so far goes to --out.",
             "rung directory: config.json, metrics.jsonl, dvclive/, metrics.json (e.g. rungs/<cell>)")):
        sub = add(command, cmd_train, text)
        sub.add_argument("--base", required=True, help="base model directory (from `rewarm select`)")
        sub.add_argument("--train", required=True, help="downstream train shards (e.g. data/tokens/downstream/train)")
        sub.add_argument("--val", action="append", required=True, metavar="NAME=PATH", type=_pair,
                         help="validation shards to evaluate during training; repeat (e.g. upstream=data/tokens/upstream/val)")
        sub.add_argument("--replay", help="upstream train shards for replay (needed when replay_fraction > 0)")
        sub.add_argument("--state", required=True, help="resumable state directory, kept outside the output (e.g. state/runs/<cell>)")
        sub.add_argument("--cell", required=True, help="the cell's name (`rewarm grid` lists them)")
        sub.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
        sub.add_argument("--out", required=True, help=out)
        if command == "train":
            sub.add_argument("--halving", metavar="DIR", help="the `halve` stage's directory (e.g. halving), under early stopping: "
                             "whether the cell goes on from its rung to the end or ends at the rung")

    sub = add("prefix", cmd_prefix, "A cell that stops earlier than a longer run with the same settings: its run directory, read "
              "from what that run recorded at the cell's stopping point (no training).")
    sub.add_argument("--cell", required=True, help="the shorter cell's name (`rewarm grid` lists each cell's run)")
    sub.add_argument("--run", required=True, help="the longer run's directory (runs/<cell>), which recorded this cell")
    sub.add_argument("--out", required=True, help="the cell's run directory to write (runs/<cell>)")

    sub = add("evaluate", cmd_evaluate, "Loss and perplexity of a model directory on whole validation splits (no gradients), on the device train.device chooses (a GPU when there is one, in its precision).")
    sub.add_argument("--model", required=True, help="a Hugging Face model directory (runs/<cell>/model or checkpoints/base/<name>)")
    sub.add_argument("--tokens", metavar="DIR", help="evaluate every corpus of the configuration with a `val` split: "
                     "DIR/<corpus>/val (upstream, downstream and any extra held-out corpus; e.g. data/tokens)")
    sub.add_argument("--val", action="append", metavar="NAME=PATH", type=_pair, help="validation shards, in addition to --tokens; repeat")
    sub.add_argument("--batch", type=int, default=None, help="sequences per forward pass; results do not depend on it (default: what fills the GPU, 16 on the CPU)")
    sub.add_argument("--threads", type=int, help="CPU threads for torch")
    sub.add_argument("--out", required=True, help="JSON file to write")

    sub = add("tasks", cmd_tasks, "Write the benchmark jobs' task directory: the demo's own tasks (benchmark.demo_tasks) in the "
              "LM Evaluation Harness's task format, <out>/<task>.yaml and its examples <out>/<task>.jsonl, from a held-out demo "
              "domain; an empty directory where every task is the harness's own.")
    sub.add_argument("--out", required=True, help="task directory to write (e.g. data/tasks)")

    sub = add("benchmark", cmd_benchmark, "LM Evaluation Harness tasks (benchmark.tasks) on a Hugging Face model directory, on the "
              "device train.device chooses; scores with the weights' checksum, the harness's and tasks' versions, dtype and batch size.")
    sub.add_argument("--model", required=True, help="a Hugging Face model directory (runs/<cell>/model or checkpoints/base/<name>)")
    sub.add_argument("--tasks", metavar="DIR", help="the demo tasks' directory (from `rewarm tasks`), when benchmark.tasks names them")
    sub.add_argument("--batch", type=int, default=None, help="sequences per forward pass (default: benchmark.batch_size)")
    sub.add_argument("--threads", type=int, help="CPU threads for torch")
    sub.add_argument("--out", required=True, help="JSON file to write")
    sub.add_argument("--harness-out", metavar="DIR", help="also write the harness's own files there: results.json in its "
                     "format (lm_eval.utils.make_table reads it) and samples_<task>.jsonl, every example's outputs")

    sub = add("report", cmd_report, "Tables, figures and findings across the grid, as Markdown and HTML.")
    sub.add_argument("--runs", default="runs", help="directory of the cells' run directories (default: runs)")
    sub.add_argument("--evals", default="evals", help="directory of evaluations: cells/<cell>.json, base/<name>.json (default: evals)")
    sub.add_argument("--out", required=True, help="report directory (e.g. reports)")
    sub.add_argument("--forecast", metavar="DIR", help="the forecast stage's directory (e.g. forecast): the report's section on "
                     "the continual pre-training law")
    sub.add_argument("--partial", action="store_true", help="report the cells that finished and list the others as failed "
                     "or not run (the Snakefile does this when a run with --keep-going ends with failed cells)")

    sub = add("forecast", cmd_forecast, "Fit the continual pre-training law (Wang, Tissue et al. 2025) on the cells forecast.fit "
              "names, forecast every other cell's curve and final loss on both corpora (with its error where the cell was run), "
              "and search the schedule that minimises the weighted final loss: fit-<corpus>.json, forecast.json, forecast.csv "
              "(without forecast.fit, forecast.json says there is no forecast).")
    sub.add_argument("--runs", default="runs", help="directory of the cells' run directories (default: runs)")
    sub.add_argument("--evals", default="evals", help="directory of evaluations: cells/<cell>.json, base/<name>.json (default: evals)")
    sub.add_argument("--out", required=True, help="forecast directory (e.g. forecast)")

    sub = add("halve", cmd_halve, "Early stopping (forecast.halving): fit the continual pre-training law on every rung's curve at "
              "once, forecast each cell's final loss on both corpora, and let on only the cells within forecast.halving.margin of "
              "the best (one rung of successive halving): halving.json.")
    sub.add_argument("--rungs", default="rungs", help="directory of the cells' rung directories (default: rungs)")
    sub.add_argument("--out", required=True, help="halving directory to write (e.g. halving)")

    sub = add("plan", cmd_plan, "Before anything runs: cells, tokens, steps, FLOPs, GPU-hours, disk and peak GPU memory.")
    sub.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation assumed for GPU-hours (default: 0.4)")
    sub.add_argument("--peak-tflops", type=float, default=989.0,
                     help="peak dense bf16 TFLOP/s of one GPU (default: 989, an H100 SXM)")
    sub.add_argument("--vocab-size", type=int, help="embedding rows (default: tokenizer.vocab_size of the configuration)")
    sub.add_argument("--concurrent", type=int, default=1, help="cells running at once, for the disk their states take (default: 1)")
    sub.add_argument("--gpus", type=int, default=8, help="GPUs per cell, over which FSDP shards the model (default: 8, one node)")
    sub.add_argument("--halving", default="halving", metavar="DIR",
                     help="under early stopping (forecast.halving), the `halve` stage's directory: its decision's savings (default: halving)")
    sub.add_argument("--gpu-memory", type=float, default=80.0, metavar="GB",
                     help="memory of one GPU in GB, to say whether DDP or FSDP fits (default: 80, an H100)")
    sub.add_argument("--profile", metavar="DIR",
                     help="a Snakemake profile (e.g. workflow/profiles/slurm): print each run's wall-clock time and training "
                          "jobs under its train runtime, GPUs and retries, and refuse (exit 2) when a run cannot finish in them; "
                          "its GPUs replace --gpus")
    sub.add_argument("--sizes", action="store_true",
                     help="instead of the grid: which published sizes (Pythia 410M to 12B, Ibrahim et al.'s 10B) fit per "
                          "GPU under DDP and FSDP, at the configuration's seq_len and train.micro_batch_sequences")

    sub = add("params", cmd_params, "Print (or --write) the merged and checked configuration, e.g. to give DVC the paper's.")
    sub.add_argument("--write", metavar="YAML", help="write it to this file (e.g. params.yaml) instead of printing it")

    sub = add("grid", cmd_grid, "List the grid's studies and cells with their resolved parameters (and the run each is read from).")
    sub.add_argument("--format", choices=["text", "json"], default="text", help="output format (default: text)")
    sub.add_argument("--write", metavar="YAML", help="write the cells as YAML for dvc.yaml's `vars` (workflow/grid.yaml), and "
                     "the studies' `dvc plots` overlays to plots/dvc.yaml beside it (workflow/plots/dvc.yaml)")

    sub = commands.add_parser(
        "dvcfile", help="Print dvc.yaml, the pipeline's stages for DVC, generated from the stage table (src/rewarm/dvcfile.py).",
        description="Print dvc.yaml, generated from the stage table in src/rewarm/dvcfile.py: each stage's command, data, "
                    "parameters and outputs, and as code dependencies the import closure of the modules its command runs, "
                    "so that `dvc repro` re-runs a stage exactly when code it runs changes. The configuration does not enter "
                    "it (the cells come from workflow/grid.yaml: `rewarm grid --write`).")
    sub.set_defaults(func=cmd_dvcfile)
    sub.add_argument("--write", metavar="PATH", help="write it there instead (e.g. dvc.yaml)")
    sub.add_argument("--plots-page", metavar="PATH", help="instead, write the page `dvc plots show` fills, with Vega "
                     "inlined so that it draws offline (.dvc/plots/offline.html, which .dvc/config names; setup writes it)")

    sub = commands.add_parser(
        "adopt", help="After `dvc pull` or `dvc checkout`: Snakemake takes DVC's outputs as done and reruns none of them.",
        description="After `dvc pull` (all of it, or `dvc pull --with-deps <stages>`) or `dvc checkout`: checks with `dvc "
                    "status` that the outputs present are the ones dvc.lock records, then runs `snakemake --touch`, which "
                    "records their jobs as done in Snakemake's metadata without running them. `snakemake` then makes only "
                    "what is absent, and what a changed configuration asks for.")
    sub.set_defaults(func=cmd_adopt)
    sub.add_argument("--cores", type=int, default=1, help="cores for Snakemake's bookkeeping (default: 1; nothing is run)")
    sub.add_argument("snakemake_args", nargs=argparse.REMAINDER, metavar="-- SNAKEMAKE_ARGS",
                     help="further arguments for Snakemake after `--`, e.g. `-- --configfile config/paper.yaml`")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except BrokenPipeError:
        # The reader went away (`rewarm grid | head`): stop quietly, as `ls | head` does. Python would
        # report the pipe again when it flushes stdout at exit: point stdout at /dev/null first.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError, ArithmeticError) as error:
        # Errors meant for users (bad parameters, corrupt inputs, missing files, a diverged run): no traceback.
        log.debug("details", exc_info=True)
        print(f"rewarm {args.command}: error: {error}", file=sys.stderr)
        return 2 if isinstance(error, cfg.ConfigError) else 1
    except KeyboardInterrupt:
        # Ctrl-C: outputs are written whole or not at all, and a training run resumes from its last saved state.
        log.debug("details", exc_info=True)
        print(f"rewarm {args.command}: interrupted (Ctrl-C); nothing half-written is left as an output"
              + ("; rerun to resume from the last saved state" if args.command in ("train", "pretrain") else ""), file=sys.stderr)
        return 130
    finally:
        # Also after an error: NCCL's shutdown aborts its communicators, so a collective another rank is
        # still inside does not hold this process (torchrun then stops the others).
        _end_process_group()
    return 0


def _end_process_group() -> None:
    """Destroy the process group a command made (training under torchrun or FSDP), so that NCCL's
    resources are released and no warning about a leaked group ends the job's log. torch is looked
    up, not imported: commands that never loaded it stay quick."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
