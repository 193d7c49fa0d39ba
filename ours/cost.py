"""Parameter count and FLOPs of one training step of `ours`, counted on the meta device (no memory, no compute).

    python -m ours.cost                 # paper widths, 512 px, batch 2, prior at 256 px
    python -m ours.cost --size 64 --profile cpu

torch.utils.flop_counter.FlopCounterMode counts matmuls and convolutions (forward and backward; 1 MAC = 2 FLOPs),
not element-wise ops, norms or pooling. The step is exactly train_step's work: the generator phase (forward_all,
every Eq. 8 term, backward) and the discriminator phase (forward on the detached translations, backward).
"""
from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from ours.model import Ours, OursConfig
from pipeline.offline import PROJECT_ROOT
from pipeline.schema import build_dataclass


def step_cost(cfg: OursConfig, image_size: int = 512, prior_input_size: int = 256) -> dict[str, Any]:
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Ours(cfg, in_channels=1, image_size=prior_input_size).train()  # random prior at prior_input_size
        a = torch.rand(cfg.batch_size, 1, image_size, image_size)
        b = torch.rand(cfg.batch_size, 1, image_size, image_size)
    params = {name: sum(p.numel() for p in m.parameters()) for name, m in model.named_children()}
    out: dict[str, Any] = {"image_size": image_size, "batch_size": cfg.batch_size, "params": params}
    with FlopCounterMode(display=False) as counter:
        for d in model.discriminators():
            d.requires_grad_(False)
        o = model.forward_all(a, b)
        model.total(model.generator_terms(a, b, o)).backward()
    out["flops_generator_phase"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        for d in model.discriminators():
            d.requires_grad_(True)
        d_terms = model.discriminator_terms(a, b, o)
        (d_terms["d_gan"] + d_terms["d_acl"]).backward()
    out["flops_discriminator_phase"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.prior.features(torch.rand(cfg.batch_size, 1, image_size, image_size, device="meta"))
    out["flops_prior_forward_per_batch"] = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        model.gen_a.decode(model.gen_a.encode(a), torch.zeros(cfg.batch_size, cfg.style_dim, device="meta"))
    out["flops_translate_a2b"] = counter.get_total_flops()
    out["flops_step"] = out["flops_generator_phase"] + out["flops_discriminator_phase"]
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--prior-size", type=int, default=256)
    ap.add_argument("--profile", default="paper", choices=("ci", "cpu", "gpu-quick", "paper"))
    args = ap.parse_args(argv)
    values = yaml.safe_load((PROJECT_ROOT / "ours" / "profiles.yaml").read_text())[args.profile] or {}
    cfg = build_dataclass(OursConfig, {**values, "prior_weights": ""}, f"ours/profiles.yaml {args.profile}")
    cost = step_cost(cfg, args.size, args.prior_size)
    for name, n in cost["params"].items():
        print(f"params {name:12s} {n / 1e6:9.3f} M")
    for key in ("flops_generator_phase", "flops_discriminator_phase", "flops_step", "flops_prior_forward_per_batch",
                "flops_translate_a2b"):
        print(f"{key:32s} {cost[key] / 1e12:9.3f} TFLOP")


if __name__ == "__main__":
    main()
