"""`train@<model>`: train one model for every seed (resumes automatically), export final weights.

Runs unchanged under torchrun (`torchrun --nproc_per_node N -m pipeline.app.cli train --model M`: one run across N
processes, see pipeline/distributed.py): every rank trains, rank 0 alone logs to MLflow and writes files.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pandas as pd

from pipeline import distributed, registry, tracking
from pipeline.config import Params, to_plain
from pipeline.data.canonical import load_images, read_manifest
from pipeline.engine import Engine, EngineSettings, export_weights, seed_everything
from pipeline.io import atomic_write, write_json
from pipeline.layout import (TRAIN_DATASET, Layout, build_translator, file_hash, load_probe, set_threads,
                             source_hash)
from pipeline.schema import result_values


def engine_settings(params: Params, progress: bool = True, model: str | None = None) -> EngineSettings:
    """The validated train parameters plus whether to draw a progress bar; with `model`, that model's own
    iteration budget (models.<name>.iterations) replaces train.iterations."""
    settings = EngineSettings(**dataclasses.asdict(params.train), progress=progress)
    if model is not None:
        settings.iterations = params.models[model].train_iterations(params.train)
    return settings


def load_training_images(root: Path):
    ds = Layout(root).dataset(TRAIN_DATASET)
    df = read_manifest(ds)
    train = df[df["split"] == "train"]
    a = load_images(ds, train[train["domain"] == "opacity"])
    b = load_images(ds, train[train["domain"] == "normal"])
    return a, b, file_hash(ds / "manifest.csv")




def pretrain(translator, params: Params, ckpt_dir: Path, seed: int, fp: dict, run, images_a, images_b,
             label: str) -> None:
    """A method's own pre-training phase (UVCGAN's masked-autoencoder pre-training), resumable like training."""
    settings = engine_settings(params)
    settings.iterations = params.train.pretrain_iterations
    view = translator.pretraining_view()
    engine = Engine(view, settings, ckpt_dir, seed, curve_path=ckpt_dir / "curve.csv",
                    tracker=None, fingerprint_data={**fp, "phase": "pretrain"}, label=label)
    last = engine.fit(images_a, images_b)
    translator.load_pretrained(translator.pretrained_state())
    run.log_metrics({f"pretrain_{k}": v for k, v in last.items()})


def run_train(params: Params, model: str, root: Path | None = None, seeds: list[int] | None = None,
              on_engine=None) -> dict:
    layout = Layout(root) if root else Layout()
    set_threads(params)
    entry = params.models[model]
    cfg = params.method_config(model)
    images_a, images_b, data_hash = load_training_images(layout.root)
    probe = load_probe(layout.root, params.data.resolution)
    code_hash = source_hash(registry.package_dir(entry.method), Path(__file__).resolve().parents[1] / "engine.py")
    main = distributed.is_main_process()  # under torchrun: rank 0 alone logs and writes files
    iterations = entry.train_iterations(params.train)
    summary = {"model": model, "method": entry.method, "iterations": iterations,
               "world_size": distributed.world_size(), "seeds": {}}
    for seed in seeds if seeds is not None else params.seeds:
        seed_everything(seed, params.train.deterministic)
        translator = build_translator(params, model)
        # only settings that change the trained weights (schema `result=True`): changing the others resumes
        fp = {"cfg": to_plain(cfg), "train": {**result_values(params.train), "iterations": iterations},
              "resolution": params.data.resolution,
              "data": data_hash, "code": code_hash}
        with tracking.stage_run("train", model=model, seed=seed, profile=params.profile,
                                params={"method": entry.method, "cfg": to_plain(cfg), "train": to_plain(params.train),
                                        "resolution": params.data.resolution},
                                enabled=params.tracking.enabled and main, experiment=params.tracking.experiment,
                                uri=params.tracking.uri,
                                extra_tags={"world_size": distributed.world_size()}) as run:
            engine = Engine(translator, engine_settings(params, model=model), layout.checkpoints(model, seed), seed,
                            curve_path=layout.curve(model, seed), tracker=run, fingerprint_data=fp,
                            label=f"{model}/seed{seed}", probe=probe)
            if on_engine is not None:
                on_engine(engine)
            t0 = time.perf_counter()
            if translator.has_pretraining and params.train.pretrain_iterations > 0:
                pretrain(translator, params, layout.checkpoints(model, seed) / "pretrain", seed, fp, run,
                         images_a, images_b, f"{model}/seed{seed}/pretrain")
            last = engine.fit(images_a, images_b)
            wall = time.perf_counter() - t0
            if main:
                export_weights(translator, layout.weights(model, seed),
                               {"model": model, "method": entry.method, "seed": seed, "step": engine.step,
                                "image_size": params.data.resolution, "has_mask": translator.has_mask,
                                "config": to_plain(cfg), "profile": params.profile})
            result = {"final_losses": last, "steps": engine.step, "wall_s": round(wall, 2),
                      "parameters": sum(p.numel() for p in translator.parameters())}
            run.log_metrics({"wall_s": wall, "parameters": result["parameters"]})
            run.log_artifact(layout.curve(model, seed))
        summary["seeds"][str(seed)] = result
    if main:
        write_loss_terms(layout, model, list(summary["seeds"]))
        write_json(layout.metrics("train", model), summary)
    return summary


NOT_LOSSES = ("step", "it_per_s", "lr_", "diag_", "mask_area_")  # column prefixes of the curves that are no loss


def write_loss_terms(layout: Layout, model: str, seeds: list[str]) -> None:
    """curves/losses/<model>.csv from the per-seed curves: one row per (step, seed, loss term), so DVC draws every
    term of every method (its stage plots take one y column; the wide curves would show the learning rate)."""
    frames = []
    for seed in seeds:
        path = layout.curve(model, int(seed))
        if path.is_file():
            wide = pd.read_csv(path)
            terms = [c for c in wide.columns if not c.startswith(NOT_LOSSES)]
            long = wide.melt(id_vars="step", value_vars=terms, var_name="term", value_name="value").dropna()
            frames.append(long.assign(seed=int(seed))[["step", "seed", "term", "value"]])
    table = pd.concat(frames) if frames else pd.DataFrame(columns=["step", "seed", "term", "value"])
    atomic_write(layout.loss_terms(model), table.sort_values(["seed", "term", "step"]).to_csv(index=False))
