"""`cxrbench`: one subcommand per DVC stage, plus the user commands (profile, translate, new-baseline, ui, bench).

Errors meant for the user (bad config, bad input, missing weights) print one line and exit with status 2;
set CXRBENCH_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pipeline  # noqa: F401  (offline switches first)
from pipeline import tracking
from pipeline.config import load_params, to_plain, write_profile
from pipeline.errors import CxrbenchError, suggest
from pipeline.offline import PROJECT_ROOT, ROOT_SOURCE


def _params(args):
    return load_params(getattr(args, "params", None))


# --- stage commands -----------------------------------------------------------------------------------------------
# Each command imports its module when it runs: torch, the methods and the evaluators take ~5 s to import, which
# `cxrbench --help`, `profile` and `check` should not pay.
def cmd_profile(args) -> None:
    path = write_profile(args.name, args.params)
    print(f"wrote profile {args.name!r} to {path}")


def cmd_check(args) -> None:
    from pipeline import registry
    from pipeline.layout import check_buildable  # start-up time: torch and every method

    from pipeline.data.canonical import DataError
    from pipeline.data.plan import build_plan, check_plan, plan_lines

    params = _params(args)
    check_buildable(params, getattr(args, "params", None) or "params.yaml")
    print(f"params.yaml OK: profile {params.profile}, {len(params.models)} models, seeds {params.seeds}; "
          f"registered methods: {', '.join(registry.names())}")
    # the data plan as a whole: sources of every role, what each evaluation needs, leakage, both domains
    plan = build_plan(params.data)
    errors, warnings = check_plan(plan, params.data, params.eval.switched_off)
    print("data plan (images, with lung masks, with boxes):")
    for line in plan_lines(plan):
        print(f"  {line}")
    for w in warnings:
        print(f"warning: {w}")
    if errors:
        for e in errors[1:]:
            print(f"error: {e}", file=sys.stderr)
        raise DataError(errors[0] + (f" ({len(errors)} problems; the others above)" if len(errors) > 1 else ""))
    print("data plan OK")
    if not getattr(args, "skip_memory", False):
        from pipeline.memory import check_memory

        lines, warns = check_memory(params)
        print("training memory (one step, estimated on fake tensors):")
        for line in lines:
            print(f"  {line}")
        for w in warns:
            print(f"warning: {w}")


def cmd_models(args) -> None:
    from pipeline import registry

    for name in registry.names():
        cls = registry.get(name)
        print(f"{name:12s} {cls.__module__:24s} mask={'yes' if cls.has_mask else 'no'}")


def cmd_data(args) -> None:
    from pipeline.app.data import run_data_stage

    run_data_stage(_params(args), PROJECT_ROOT / "data")


def cmd_prior(args) -> None:
    from pipeline.app.prior import run_prior_stage

    run_prior_stage(_params(args), PROJECT_ROOT / "data", PROJECT_ROOT / "models" / "prior")


def cmd_train(args) -> None:
    from pipeline.app.train import run_train

    params = _params(args)
    _known_model(params, args.model)
    run_train(params, args.model)


def cmd_translate_sets(args) -> None:
    from pipeline.app.translate import run_translate

    params = _params(args)
    _known_model(params, args.model)
    run_translate(params, args.model, train_cap=getattr(params.eval, "classifier_train_images", 0))


def cmd_translate(args) -> None:
    from pipeline.app.user_translate import translate_files

    params = _params(args)
    _known_model(params, args.model)
    translate_files(params, args.model, args.inputs, Path(args.out), weights=args.weights, seed=args.seed)


PER_MODEL_EVALUATORS = ("fidkid", "segment", "lesions", "paired")


def cmd_eval(args) -> None:
    import pipeline.app.evaluate as stages

    params = _params(args)
    if args.stage_name == "evaluate" and args.images:
        from pipeline.app.external import evaluate_folder  # start-up time: torch and the evaluators

        if not args.name:
            raise CxrbenchError("cxrbench evaluate --images needs --name NAME: the row name in every table")
        evaluate_folder(params, args.name, Path(args.images), Path(args.masks) if args.masks else None)
        return
    if args.stage_name == "evaluate" and (args.name or args.masks):
        raise CxrbenchError("cxrbench evaluate: --name and --masks go with --images DIR (a folder of translations)")
    if args.stage_name in PER_MODEL_EVALUATORS + ("evaluate",):
        if args.model != "original" and args.model not in params.eval.references \
                and not stages.is_external(stages.Layout(), args.model):  # an imported folder, scored again
            _known_model(params, args.model)
        names = PER_MODEL_EVALUATORS if args.stage_name == "evaluate" else (args.stage_name,)
        for name in names:  # one process for the four evaluators of a model: CPU start-up costs ~5 s each
            t0 = time.perf_counter()
            getattr(stages, f"run_{name}")(params, args.model)
            if len(names) > 1:  # a minute or more on real data: say where it is
                print(f"  {name} {args.model}: {time.perf_counter() - t0:.1f} s", flush=True)
    elif args.stage_name == "references":
        stages.run_references(params, names=[args.name] if args.name else None)
    else:
        getattr(stages, f"run_{args.stage_name}")(params)


def cmd_report(args) -> None:
    from pipeline.app.report import build_reports

    build_reports(_params(args))


def cmd_publish(args) -> None:
    from pipeline.app.publish import publish

    publish(PROJECT_ROOT, args.name, Path(args.log) if args.log else None, args.run_command,
            args.wall_seconds, _params(args))


def cmd_new_baseline(args) -> None:
    from pipeline.app.scaffold import new_baseline

    new_baseline(args.name, add_to_params=not args.no_params)


def cmd_ui(args) -> None:
    """`mlflow server` on loopback; says "ready" only once it answers (it takes seconds after printing its URL)."""
    uri = tracking.tracking_uri()
    # `mlflow server` with one worker on loopback: `mlflow ui` refuses to start when ./mlruns exists (measured with mlflow 3.17)
    argv = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", args.host,
            "--port", str(args.port), "--workers", "1",
            "--default-artifact-root", (PROJECT_ROOT / "mlartifacts").as_uri()]
    url = f"http://{args.host}:{args.port}"
    probe = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/health"
    print(f"MLflow UI starting on {url} (store: {uri}) ...", flush=True)
    proc = subprocess.Popen(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server below is stopped with us
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(probe, timeout=2)
                print(f"MLflow UI ready: open {url} (Ctrl-C stops it)", flush=True)
                break
            except OSError:
                time.sleep(0.5)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    if proc.returncode not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise CxrbenchError(f"mlflow server exited with status {proc.returncode} (its messages are above); is port "
                            f"{args.port} taken? try `cxrbench ui --port {args.port + 1}`")


def cmd_bench_data(args) -> None:
    from pipeline.app.bench_data import run_data_bench

    run_data_bench(args)


def cmd_bench_memory(args) -> None:
    from pipeline.app.bench import run_memory_bench

    run_memory_bench(args)


def cmd_bench_parallel(args) -> None:
    from pipeline.app.bench_parallel import run_parallel_bench

    run_parallel_bench(args)


def cmd_bench_official(args) -> None:
    from pipeline.app.bench_official import run_official_bench

    run_official_bench(args)


def cmd_gpu_check(args) -> None:
    from pipeline.app.gpu_check import run

    run(args)


def cmd_bench(args) -> None:
    from pipeline.app.bench import run_bench

    run_bench(args)


def _known_model(params, model: str) -> None:
    if model not in params.models:
        raise CxrbenchError(f"unknown model {model!r}{suggest(model, params.models)}; params.yaml models: "
                            f"{', '.join(params.models)}")


def _version() -> str:
    try:
        return importlib.metadata.version("cxrbench")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cxrbench", description=__doc__.splitlines()[0])
    p.add_argument("--params", default=None, help="params file (default: params.yaml in the project root)")
    p.add_argument("--version", action="version", version=f"cxrbench {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("profile", help="write a profile's values into params.yaml")
    s.add_argument("name", help="cpu | ci | gpu-quick | paper")
    s.set_defaults(fn=cmd_profile)
    s = sub.add_parser("check", help="validate params.yaml, the registry, the data plan and each model's training "
                                     "memory against the device")
    s.add_argument("--skip-memory", action="store_true",
                   help="do not estimate each model's training-step memory (a few seconds per model at 512 px)")
    s.set_defaults(fn=cmd_check)
    sub.add_parser("models", help="list registered translators").set_defaults(fn=cmd_models)
    sub.add_parser("data", help="stage: build the datasets (DRR benchmark or adapters)").set_defaults(fn=cmd_data)
    sub.add_parser("prior", help="stage: train or convert the CheXNet-style prior").set_defaults(fn=cmd_prior)
    s = sub.add_parser("train", help="stage: train one model for every seed (resumes automatically)")
    s.add_argument("--model", required=True)
    s.set_defaults(fn=cmd_train)
    s = sub.add_parser("translate-sets", help="stage: translate the evaluation sets with a trained model")
    s.add_argument("--model", required=True)
    s.set_defaults(fn=cmd_translate_sets)
    for name, helptext in (("segmenters", "train the four lung segmenters"), ("detector", "train the YOLOv5 detector"),
                           ("classifiers", "train and test the Table 2 classifiers"),
                           ("fidref", "cache the FID/KID reference features"),
                           ("evaluator", "train the independent evaluator network (the cxr-evaluator FID space)"),
                           ("references", "write the Identity / Blur / Oracle rows' outputs")):
        s = sub.add_parser(name, help=f"stage: {helptext}")
        if name == "references":
            s.add_argument("--name", default="", help="one of eval.references (default: all of them)")
        s.set_defaults(fn=cmd_eval, stage_name=name if name != "detector" else "detector_training")
    for name, helptext in (("fidkid", "FID/KID"), ("segment", "lung segmentation mIoU/sensitivity"),
                           ("lesions", "YOLO lesion counts + Wilcoxon"), ("paired", "paired DRR metrics"),
                           ("evaluate", "all four per-model evaluators above")):
        s = sub.add_parser(name, help=f"stage: {helptext} of one model (or 'original', or a reference row: "
                                      "identity, blur, oracle)")
        if name != "evaluate":
            s.add_argument("--model", required=True)
        else:  # a model of this project, or a folder of translations made elsewhere
            one = s.add_mutually_exclusive_group(required=True)
            one.add_argument("--model", help="a model of params.yaml, 'original', or a reference row")
            one.add_argument("--images", metavar="DIR",
                             help="score translations made elsewhere: DIR/<set>/<id>.png for every image of the "
                                  "evaluation sets (rsna_like, ards_like, jsrt_like); needs --name")
            s.add_argument("--name", default="", help="the row name of --images in every table")
            s.add_argument("--masks", metavar="DIR", default=None,
                           help="with --images: the method's activation masks, same layout (optional)")
        s.set_defaults(fn=cmd_eval, stage_name=name)
    sub.add_parser("report", help="stage: write reports/ (tables, figures)").set_defaults(fn=cmd_report)
    s = sub.add_parser("publish", help="copy this run's report into reports/published/NAME with its provenance")
    s.add_argument("name")
    s.add_argument("--log", default="", help="timestamped `dvc repro` log (per-stage wall times)")
    s.add_argument("--run-command", default="dvc repro", help="the command that produced the run")
    s.add_argument("--wall-seconds", type=float, default=None, help="measured wall time of that command")
    s.set_defaults(fn=cmd_publish)
    s = sub.add_parser("translate", help="translate your own PNG/JPG/DICOM files or folders")
    s.add_argument("--model", required=True)
    s.add_argument("--weights", default=None, help="weights file (default: models/<model>/seed<k>.pt)")
    s.add_argument("--seed", type=int, default=None, help="which seed's weights (default: the first in params)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("inputs", nargs="+", help="image files or folders")
    s.set_defaults(fn=cmd_translate)
    s = sub.add_parser("new-baseline", help="scaffold baselines/NAME (passes the contract tests at once)")
    s.add_argument("name")
    s.add_argument("--no-params", action="store_true", help="do not add the model to params.yaml")
    s.set_defaults(fn=cmd_new_baseline)
    s = sub.add_parser("ui", help="MLflow UI (loopback only by default)")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: %(default)s, loopback only; 0.0.0.0 exposes the UI to the network)")
    s.add_argument("--port", type=int, default=5000)
    s.set_defaults(fn=cmd_ui)
    s = sub.add_parser("bench", help="speed/memory benchmarks into reports/bench/",
                       description="Training iterations/s, FLOPs per step, peak memory (and MFU on a GPU) of every "
                                   "translator, and the evaluation models' images/s; writes "
                                   "reports/bench/bench-<device>-<size>px.json and .md.")
    s.add_argument("--models", default="", help="comma-separated methods (default: all registered)")
    s.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    s.add_argument("--batch", type=int, default=0, help="images per domain per step; 0 = each method's own")
    s.add_argument("--steps", type=int, default=5, help="timed training steps per translator, after 2 warm-up steps")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda (auto: cuda when present)")
    s.add_argument("--precision", default="auto", help="auto | fp32 | bf16 (auto: bf16 autocast on a GPU)")
    s.add_argument("--optimizer-impl", default="auto", choices=("auto", "loop", "foreach", "fused"),
                   help="optimizer kernels (train.optimizer_impl; auto = fused, the engine's default)")
    s.add_argument("--widths", default="device", choices=("device", "official", "cpu"),
                   help="official: the paper's (official code's) widths; cpu: the cpu profile's; device (default): "
                        "official on CUDA, cpu on a CPU")
    s.add_argument("--out", default=str(PROJECT_ROOT / "reports" / "bench"), help="results folder")
    s.set_defaults(fn=cmd_bench)
    s = sub.add_parser("bench-memory", help="peak memory of one training step per method into reports/bench/",
                       description="Each method's training step at the paper's widths in a process of its own: "
                                   "CPU peak resident set (CUDA: max allocated), with and without activation "
                                   "checkpointing; writes reports/bench/memory-<device>.json and .md.")
    s.add_argument("--models", default="", help="comma-separated methods (default: all registered)")
    s.add_argument("--sizes", default="256", help="comma-separated image sides (default 256)")
    s.add_argument("--batch", type=int, default=2, help="images per domain (default 2, the paper's)")
    s.add_argument("--precision", default="fp32", help="fp32 | bf16 | auto")
    s.add_argument("--checkpointing", default="both", choices=("both", "on", "off"))
    s.add_argument("--device", default="auto", help="auto | cpu | cuda")
    s.add_argument("--append", action="store_true", help="keep the rows of earlier runs (other sizes, methods)")
    s.add_argument("--out", default=str(PROJECT_ROOT / "reports" / "bench"), help="results folder")
    s.set_defaults(fn=cmd_bench_memory)
    s = sub.add_parser("bench-parallel", help="concurrent stages: slowdown with shared vs all-core threads",
                       description="Trains one method alone, then --jobs copies at once with shared threads "
                                   "(train.threads: 0) and with every core each; writes "
                                   "reports/bench/parallel-<method>-<jobs>jobs.json and .md.")
    s.add_argument("--model", default="cyclegan", help="method whose train_step is the workload (default cyclegan)")
    s.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    s.add_argument("--jobs", type=int, default=2, help="concurrent processes (default 2)")
    s.add_argument("--seconds", type=float, default=20.0, help="timed wall seconds per process (default 20)")
    s.add_argument("--out", default=str(PROJECT_ROOT / "reports" / "bench"), help="results folder")
    s.set_defaults(fn=cmd_bench_parallel)
    s = sub.add_parser("bench-official", help="our training step vs the official code's, interleaved",
                       description="Times CycleGAN / UNIT training steps of cxrbench and of the official "
                                   "implementations (your checkouts under --official DIR: cyclegan/, unit/) in "
                                   "alternating rounds at the official widths; writes "
                                   "reports/bench/official-side-by-side-<size>px.json and .md.")
    s.add_argument("--official", required=True, help="folder with cyclegan/ and unit/ (official checkouts)")
    s.add_argument("--methods", default="cyclegan,unit", help="comma-separated (default cyclegan,unit)")
    s.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    s.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    s.add_argument("--steps", type=int, default=5, help="timed iterations per side per round (default 5)")
    s.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    s.add_argument("--precision", default="fp32,bf16", help="our side: fp32, bf16 or both (default fp32,bf16)")
    s.add_argument("--out", default=str(PROJECT_ROOT / "reports" / "bench"), help="results folder")
    s.set_defaults(fn=cmd_bench_official)
    s = sub.add_parser("gpu-check", help="one-shot GPU measurement (bench at 512 px, training, evaluation)",
                       description="The prepared GPU check (pipeline/app/gpu_check.py): every method at 512 px, "
                                   "batch 2, bf16; 200 iterations of ours and CycleGAN on DRR images rendered on "
                                   "the GPU; evaluation throughput on 1,000 images. Writes gpu-<device>.json/.md.")
    from pipeline.app.gpu_check import add_arguments as gpu_check_arguments  # argparse only: no torch import

    gpu_check_arguments(s)
    s.set_defaults(fn=cmd_gpu_check)
    s = sub.add_parser("bench-data", help="real-data conversion throughput into reports/bench/",
                       description="Writes RSNA-format DICOMs (1024 px) and JSRT .IMG (2048 px) + SCR masks into "
                                   "--work, converts them with the data stage's code per worker count and once "
                                   "resumed; writes reports/bench/data-conversion.json and .md with the "
                                   "extrapolation to full RSNA and MIMIC-CXR-JPG.")
    s.add_argument("--rsna", type=int, default=2000, help="RSNA-format DICOMs to write (default 2000)")
    s.add_argument("--jsrt", type=int, default=247, help="JSRT .IMG files to write (default 247, the full set)")
    s.add_argument("--mimic", type=int, default=200, help="MIMIC-CXR-JPG JPEGs (3056 x 2544) to write (default 200)")
    s.add_argument("--resolution", type=int, default=512, help="output side in px (default 512, the paper's)")
    s.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    s.add_argument("--work", default="/tmp/cxrbench-bench-data", help="folder for the fixtures (kept for reruns)")
    s.add_argument("--out", default=str(PROJECT_ROOT / "reports" / "bench"), help="results folder")
    s.set_defaults(fn=cmd_bench_data)
    return p


# The subcommands that DVC stages run (dvc.yaml `cmd:`): each ends with one line saying its wall time.
STAGE_COMMANDS = ("data", "prior", "train", "translate-sets", "segmenters", "detector", "classifiers", "fidref",
                  "evaluator", "references", "fidkid", "segment", "lesions", "paired", "evaluate", "report")
# Stages that log no MLflow run of their own: the CLI opens one around them, with their section of params.yaml, their
# wall time, and the numbers of the summary file they write (also attached as an artifact).
LOGGED_HERE = {"data": ("data", "data/summary.json"), "prior": ("prior", "models/prior/prior.json"),
               "segmenters": ("eval", "models/segmenters/segmenters.json"),
               "detector": ("eval", "models/detector/detector.json"),
               "evaluator": ("eval", "models/evaluator/evaluator.json"), "fidref": ("eval", "cache/fid/index.json"),
               "references": ("eval", "")}


def _run_logged(args) -> None:
    """args.fn inside an MLflow stage run (LOGGED_HERE); a tracking failure only warns (pipeline.tracking)."""
    params = _params(args)
    section, summary = LOGGED_HERE[args.command]
    tr = params.tracking
    with tracking.stage_run(args.command, model=getattr(args, "name", "") or "", profile=params.profile,
                            enabled=tr.enabled, experiment=tr.experiment, uri=tr.uri,
                            params={section: to_plain(getattr(params, section))}) as run:
        args.fn(args)
        names = [args.name] if getattr(args, "name", "") else list(params.eval.references)
        files = [PROJECT_ROOT / summary] if summary else [PROJECT_ROOT / "metrics" / "translate" / f"{n}.json"
                                                          for n in names]
        for path in files:
            if path.is_file():
                with contextlib.suppress(ValueError, OSError):
                    run.log_metrics(json.loads(path.read_text()))
                run.log_artifact(path)


def os_error_line(exc: OSError) -> str:
    """One line for a failure of the machine rather than of the input: what, which file, and what to do."""
    if exc.errno is None:  # raised by our own code with its message
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    where = exc.filename or "a file"
    if exc.errno == errno.ENOSPC:
        return f"{where}: no space left on the device; free space and rerun (finished stages and checkpoints are kept)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"{where}: cannot write here ({exc.strerror}); check the folder's permissions, or work in a copy of "
                "the checkout you own")
    if exc.errno == errno.ENOENT:
        return f"{where}: not found; check the path, or rerun the stage that writes it (`dvc repro`)"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return f"{where}: {exc.strerror}; name another path"
    return f"{where}: {exc.strerror or exc}; check the file and the disk, then rerun"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        if ROOT_SOURCE == "package" and args.fn is not cmd_models:
            raise CxrbenchError(f"{Path.cwd()} is not inside a cxrbench checkout (no dvc.yaml and pipeline/profiles/ "
                                "here or above): cd into your checkout, or set CXRBENCH_ROOT to it")
        if args.command in LOGGED_HERE:
            _run_logged(args)
        else:
            args.fn(args)
    except (CxrbenchError, OSError) as exc:
        if os.environ.get("CXRBENCH_DEBUG"):
            raise
        if isinstance(exc, CxrbenchError):
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # whole: it may end in a quote
        else:
            msg = os_error_line(exc)
        print(f"cxrbench: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if args.command in STAGE_COMMANDS:  # one closing line per stage, so a log shows where the time went
        what = f"{args.command} {getattr(args, 'model', None) or getattr(args, 'name', None) or ''}".strip()
        print(f"cxrbench {what}: done in {time.perf_counter() - start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
