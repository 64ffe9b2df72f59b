"""``ganhpo worker --study NAME``: pull trials, train them, report FID; one per machine/GPU."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from types import FrameType

from ganhpo.commands._common import add_data_args, add_storage_args, positive, storage_from_args
from ganhpo.errors import ConfigError

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``worker`` command."""
    p = sub.add_parser(
        "worker",
        help="run trials of a study",
        description="Pull trials of a study from its database, train them and report their "
        "FID (or KID) until the study's budget is spent. Run one per machine or GPU; any "
        "number share a study.",
    )
    p.add_argument(
        "--study", required=True, metavar="NAME", help="the study name (ganhpo study list)"
    )
    add_storage_args(p)
    p.add_argument(
        "--n-trials", type=positive(int), metavar="N", help="stop after N trials of this worker"
    )
    p.add_argument(
        "--timeout",
        type=positive(float),
        metavar="SECONDS",
        help="start no new trial after this long (the running one finishes)",
    )
    p.add_argument(
        "--max-total-trials",
        type=positive(int),
        metavar="N",
        help="the study's total budget, shared by all workers (default: the spec's max_trials)",
    )
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: the spec's)")
    add_data_args(p)
    p.add_argument(
        "--artifacts",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="shared artifact store for checkpoints and generators (default: the one the "
        "study was created with, else $GANHPO_ARTIFACTS, else ./ganhpo-artifacts)",
    )
    p.add_argument(
        "--db-retry-timeout",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="retry database errors this long before giving up (default 300)",
    )
    p.add_argument(
        "--store-retry-timeout",
        type=positive(float),
        default=300.0,
        metavar="SECONDS",
        help="wait this long for an artifact store that became unavailable before handing the "
        "trial back (default 300)",
    )
    p.add_argument(
        "--workers",
        type=positive(int),
        metavar="N",
        help="run N worker processes on this machine (default: one, or one per --devices "
        "entry); SIGTERM and Ctrl-C reach every one",
    )
    p.add_argument(
        "--devices",
        type=_device_list,
        metavar="LIST",
        help="comma-separated devices, e.g. cuda:0,cuda:1: one worker process per device "
        "(with --workers N, N processes given the devices in turn)",
    )
    p.set_defaults(func=run)


def _device_list(text: str) -> list[str]:
    devices = [d.strip() for d in text.split(",")]
    if not all(devices):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty entry; use e.g. cuda:0,cuda:1")
    return devices


def run(args: argparse.Namespace) -> int:
    """Execute ``ganhpo worker``: one worker here, or (``--workers``, ``--devices``) a process
    per worker, each a ``ganhpo worker`` of its own."""
    from ganhpo.train import resolve_device
    from ganhpo.worker import Worker, WorkerOptions, open_worker_study

    many = args.workers is not None or args.devices is not None
    if many and args.device is not None:
        raise ConfigError("give --device or --devices, not both; --devices cuda:0,cuda:1 runs one "
                          "worker per device")  # fmt: skip
    for device in args.devices or ([args.device] if args.device is not None else []):
        resolve_device(device)  # a bad or unavailable device fails before any trial
    from ganhpo.artifacts import STORE_MARKER_ATTR, open_study_store, resolve_artifacts
    from ganhpo.storage import study_attr
    from ganhpo.study import ARTIFACTS_ATTR, name_metrics

    study, spec, storage = open_worker_study(
        args.study, lambda **heartbeat: storage_from_args(args, **heartbeat)
    )
    name_metrics(study, spec.objectives)  # a study created before ganhpo named it
    artifacts = resolve_artifacts(args.artifacts or study.user_attrs.get(ARTIFACTS_ATTR))
    # The study's own store, or a refusal: never an empty folder on this machine's disk.
    open_study_store(artifacts, study_attr(study, STORE_MARKER_ATTR), study=args.study)
    if many:  # the checks above once here, then a process per worker
        storage.engine.dispose()
        devices = args.devices or [None]
        n = args.workers or len(devices)
        from ganhpo.storage import resolve_storage_url

        url = resolve_storage_url(args.storage, storage_file=args.storage_file)
        each = [devices[i % len(devices)] for i in range(n)]
        return run_processes(_child_argv(args, artifacts), each, storage_url=url)
    options = WorkerOptions(
        n_trials=args.n_trials,
        timeout=args.timeout,
        max_total_trials=args.max_total_trials,
        device=args.device,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        artifacts=artifacts,
        db_retry_timeout=args.db_retry_timeout,
        store_retry_timeout=args.store_retry_timeout,
    )
    worker = Worker(study, spec, options, storage=storage)
    worker.preflight()  # a broken store, dataset or extractor stops here, before any trial
    worker.install_signal_handlers()
    worker.run()
    return 0


def _child_argv(args: argparse.Namespace, artifacts: str) -> list[str]:
    """The arguments of one worker process (the storage URL goes by the environment,
    $GANHPO_STORAGE: off the command line, where ``ps`` shows it)."""
    argv = ["worker", "--study", args.study, "--artifacts", artifacts]
    argv += ["--connect-timeout", str(args.connect_timeout)]
    argv += ["--db-retry-timeout", str(args.db_retry_timeout)]
    argv += ["--store-retry-timeout", str(args.store_retry_timeout)]
    for option, value in (
        ("--n-trials", args.n_trials),
        ("--timeout", args.timeout),
        ("--max-total-trials", args.max_total_trials),
        ("--data-dir", args.data_dir),
        ("--cache-dir", args.cache_dir),
    ):
        if value is not None:
            argv += [option, str(value)]
    argv += ["-q"] if args.quiet else ["-v"] if args.verbose else []
    return argv


def run_processes(argv: list[str], devices: list[str | None], *, storage_url: str) -> int:
    """Run ``ganhpo ARGV`` once per entry of ``devices`` (``--device D`` added unless None)
    until all end; SIGTERM and SIGINT are passed on to every one (a second one too: they then
    exit at once). Returns the worst exit status: the highest, a process killed by signal S
    counting as 128 + S."""
    import logging

    logger = logging.getLogger("ganhpo.worker")
    procs = []
    for i, device in enumerate(devices):
        extra = ["--device", device] if device is not None else []
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "ganhpo", *argv, *extra],
                # Their own process group: Ctrl-C in a terminal reaches this process only, which
                # passes it on once (the group's SIGINT too would count as a second one).
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "GANHPO_STORAGE": storage_url},
            )
        )
        logger.info("worker process %d of %d: pid %d on %s", i + 1, len(devices), procs[-1].pid,
                    device or "the spec's device")  # fmt: skip

    def forward(signum: int, frame: FrameType | None) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [proc.wait() for proc in procs]
    return worst_exit_code(codes)


def worst_exit_code(codes: list[int]) -> int:
    """The highest exit status of ``codes`` (Popen's: -S for a process killed by signal S,
    counted as 128 + S as a shell does)."""
    return max((128 - c if c < 0 else c for c in codes), default=0)


def _die_with_parent() -> None:
    """In a child: SIGTERM when the parent dies (Linux), so that its workers hand their trials
    back rather than run on unwatched."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
