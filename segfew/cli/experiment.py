"""``segfew experiment`` and ``segfew report``: the learning-curve protocol and its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from segfew.cli.common import (
    GROUP_COLUMN_HELP,
    ID_COLUMN_HELP,
    LABEL_COLUMN_HELP,
    ProgressOpt,
    ThreadsOpt,
    console,
    handle_errors,
    int_list,
    resolve,
    setting,
    split_list,
    warn_unused,
)
from segfew.cli.render import ProgressView
from segfew.frameworks import FRAMEWORKS
from segfew.spec import ExperimentSpec, given_keys
from segfew.spec import ExperimentSpec as X


@handle_errors
def experiment(
    spec: Annotated[Path, typer.Option(
        "--spec", help="TOML or YAML experiment spec; flags override it.")],
    out: Annotated[Path, typer.Option(help="RUN_DIR: results, run info and the report.")],
    shard: Annotated[str | None, typer.Option(
        help="Run only shard i of N, e.g. 2/4 (one job of a job array).")] = None,
    images: Annotated[Path | None, typer.Option(help="Folder of images (data.images).")] = None,
    id_column: Annotated[str | None, typer.Option(help=ID_COLUMN_HELP)] = None,
    label_column: Annotated[str | None, typer.Option(help=LABEL_COLUMN_HELP)] = None,
    group_column: Annotated[str | None, typer.Option(help=GROUP_COLUMN_HELP)] = None,
    table: Annotated[Path | None, typer.Option(
        help="Table of ids and classes (data.table).")] = None,
    features: Annotated[Path | None, typer.Option(
        help="Segmentation model file (manual, measures), or a trained nnU-Net v2 results "
        "folder (measures, manual; pip install 'segfew\\[nnunet]').")] = None,
    threshold_features: Annotated[Path | None, typer.Option(
        help="Segmentation model trained on k-means labels (framework threshold).")] = None,
    masks: Annotated[Path | None, typer.Option(
        help="measures: label maps from another tool, matched to the images by id.")] = None,
    frameworks: Annotated[str | None, setting(
        X, "frameworks", f"Comma-separated: {','.join(FRAMEWORKS)}.")] = None,
    sizes: Annotated[str | None, setting(
        X, "sizes", "Labelled patients per class, e.g. 1,2,4,8.")] = None,
    repetitions: Annotated[int | None, setting(
        X, "repetitions", "Random splits per size (paper: 5).")] = None,
    test_table: Annotated[Path | None, typer.Option(
        help="Fixed test set: table of test cases (sets test = fixed).")] = None,
    test_images: Annotated[Path | None, typer.Option(
        help="Images of the fixed test set (default: the spec's data.images).")] = None,
    labels: Annotated[Path | None, typer.Option(
        help="Voxel labels for per-repetition pre-training (data.labels).")] = None,
    pretrain: Annotated[Path | None, typer.Option(
        help="Pretrain spec: pre-train per repetition on its training side only.")] = None,
    allow_leakage: Annotated[bool, typer.Option(
        "--allow-leakage", help="A feature network trained on test cases: warn, not refuse."
    )] = False,
    threads: ThreadsOpt = None,
    progress: ProgressOpt = True,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace files in RUN_DIR (run.json, spec.json, data.json, "
        "report/) that segfew did not write.")] = False,
) -> None:
    """Run the paper's learning-curve protocol: every framework, size and repetition.

    Each finished task is saved at once: run the same command again to resume.

    Exits non-zero if any task failed (errors in RUN_DIR/results/*.error.json).

    Examples:

      segfew experiment --spec curve.toml --out runs/curve

      segfew experiment --spec curve.toml --out runs/curve --sizes 1,2,4,8 --repetitions 3

      segfew experiment --spec curve.toml --out runs/curve --shard $SLURM_ARRAY_TASK_ID/8
    """
    from segfew.experiment.protocol import parse_shard, run_experiment
    from segfew.experiment.report import check_report, write_report
    from segfew.experiment.results import task_status
    from segfew.jobs.experiment_step import make_pretrain_step, make_train_and_score
    from segfew.preprocess.cache import PreprocessCache

    overrides = {
        "data": {"images": images, "table": table, "labels": labels,
                 "id_column": id_column, "label_column": label_column,
                 "group_column": group_column},
        "pretrain": pretrain,
        "allow_leakage": True if allow_leakage else None,
        "features": features,
        "threshold_features": threshold_features,
        "masks": masks,
        "frameworks": split_list(frameworks),
        "sizes": int_list(sizes),
        "repetitions": repetitions,
        "test_table": test_table,
        "test_images": test_images,
        "test": "fixed" if test_table is not None else None,
        "train": {"progress": None if progress else False, "threads": threads},
    }
    resolved = resolve(ExperimentSpec, overrides, spec, rename={"test": None})
    warn_unused(resolved, given_keys(overrides, spec), overrides)
    shard_range = parse_shard(shard)
    if shard_range is None:  # before any work: the report at the end must not be refused
        check_report([out], None, overwrite)
    cache = PreprocessCache()
    with ProgressView(resolved.train.progress) as view:
        step = make_pretrain_step(resolved, cache, view) if resolved.pretrain else None
        run_experiment(resolved, out,
                       make_train_and_score(resolved, cache=cache, progress=view, run_dir=out),
                       shard=shard_range, pretrain_step=step, overwrite=overwrite)
    if shard_range is None:
        md, page = write_report([out], overwrite=overwrite)
        console.print(f"report: {page} (and {md.name})", highlight=False)
        status = task_status([out])
    else:
        status = task_status([out])
        console.print(f"shard {shard}: done. When every shard has finished: segfew report {out}",
                      highlight=False)
    console.print(f"tasks: {len(status.finished)} of {status.total} finished, "
                  f"{len(status.failed)} failed, {len(status.missing)} not run", highlight=False)
    if status.failed and (shard_range is None or _failed_in_shard(status.failed, resolved,
                                                                     shard_range)):
        raise typer.Exit(1)


def _failed_in_shard(failed: dict[str, str], spec: ExperimentSpec, shard: tuple[int, int]
                     ) -> bool:
    from segfew.experiment.protocol import plan_tasks, shard_tasks

    return any(t.key in failed for t in shard_tasks(plan_tasks(spec), shard))


@handle_errors
def report(
    run_dirs: Annotated[list[Path], typer.Argument(
        metavar="RUN_DIR", help="RUN_DIR(s) of one experiment; shards are merged.")],
    out: Annotated[Path | None, typer.Option(
        help="Folder for report.md, report.html and plots (default: RUN_DIR/report).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace files at --out that segfew did not write.")] = False,
) -> None:
    """Write the learning-curve report (Markdown and one self-contained HTML file).

    Examples:

      segfew report runs/curve

      segfew report runs/shard1 runs/shard2 --out runs/report
    """
    from segfew.experiment.report import write_report
    from segfew.experiment.results import task_status

    md, page = write_report(run_dirs, out, overwrite)
    status = task_status(run_dirs)
    console.print(f"report: {page} (and {md.name})", highlight=False)
    console.print(f"tasks: {len(status.finished)} of {status.total} finished, "
                  f"{len(status.failed)} failed, {len(status.missing)} not run", highlight=False)
