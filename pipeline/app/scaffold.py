"""`cxrbench new-baseline NAME`: write a working baseline directory and add it where the pipeline needs it.

The skeleton is a small, complete CycleGAN-style translator (two generators, two PatchGAN discriminators, LSGAN +
cycle L1), so it passes the contract tests and trains under `dvc repro` at once; a user replaces its networks and
losses with their method's and fills in the README's source and modification list.
"""
from __future__ import annotations

import keyword
import re
import shutil
from pathlib import Path

import yaml

from pipeline import registry
from pipeline.config import read_yaml, to_plain
from pipeline.errors import CxrbenchError
from pipeline.io import atomic_write
from pipeline.offline import PROJECT_ROOT

INIT = '''"""{title}: a cxrbench baseline (see README.md for the source and every modification)."""
from baselines.{name}.model import {cls}Translator

__all__ = ["{cls}Translator"]
'''

MODEL = '''"""{title}: generators, discriminators and the training step.

Scaffolded by `cxrbench new-baseline {name}`: a minimal CycleGAN-style translator that works end to end. Replace the
networks and losses with your method's; keep the contract (pipeline/contract.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.contract import Translation, Translator
from pipeline.schema import param


@dataclass
class {cls}Config:
    batch_size: int = param(1, min=1, doc="images per domain per step")
    ngf: int = param(32, min=1, doc="generator width")
    ndf: int = param(32, min=1, doc="discriminator width")
    lr: float = param(2e-4, min=0.0, doc="Adam learning rate")
    lambda_cycle: float = param(10.0, min=0.0, doc="cycle-consistency weight")


class ResBlock(nn.Module):
    """x + conv-IN-ReLU-conv-IN(x), shape-preserving. The class name is one that train.activation_checkpointing
    wraps (pipeline/engine.py CHECKPOINT_BLOCKS); blocks named otherwise are listed in `checkpoint_block_names`."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm2d(ch), nn.ReLU(True),
            nn.Conv2d(ch, ch, 3, padding=1, padding_mode="reflect"), nn.InstanceNorm2d(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def generator(ngf: int) -> nn.Sequential:
    """(B, 1, H, W) in [-1, 1] -> (B, 1, H, W) in [-1, 1]; H, W divisible by 4."""
    return nn.Sequential(
        nn.Conv2d(1, ngf, 7, padding=3, padding_mode="reflect"), nn.InstanceNorm2d(ngf), nn.ReLU(True),
        nn.Conv2d(ngf, 2 * ngf, 3, 2, 1), nn.InstanceNorm2d(2 * ngf), nn.ReLU(True),  # H/2
        ResBlock(2 * ngf),  # H/2
        nn.ConvTranspose2d(2 * ngf, ngf, 3, 2, 1, output_padding=1), nn.InstanceNorm2d(ngf), nn.ReLU(True),  # H
        nn.Conv2d(ngf, 1, 7, padding=3, padding_mode="reflect"), nn.Tanh(),
    )


def discriminator(ndf: int) -> nn.Sequential:
    """PatchGAN: (B, 1, H, W) -> (B, 1, H/4 - 1, W/4 - 1) real/fake scores."""
    return nn.Sequential(
        nn.Conv2d(1, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, 2 * ndf, 4, 2, 1), nn.InstanceNorm2d(2 * ndf), nn.LeakyReLU(0.2, True),
        nn.Conv2d(2 * ndf, 1, 4, 1, 1),
    )


class {cls}Translator(Translator):
    name = "{name}"
    Config = {cls}Config
    has_mask = False

    def __init__(self, cfg: {cls}Config, in_channels: int = 1, image_size: int = 256):
        super().__init__(cfg, in_channels, image_size)
        self.g_ab, self.g_ba = generator(cfg.ngf), generator(cfg.ngf)
        self.d_a, self.d_b = discriminator(cfg.ndf), discriminator(cfg.ndf)

    def configure_optimizers(self, total_iterations: int):
        g_params = list(self.g_ab.parameters()) + list(self.g_ba.parameters())
        d_params = list(self.d_a.parameters()) + list(self.d_b.parameters())
        self.opt_g = torch.optim.Adam(g_params, lr=self.cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(d_params, lr=self.cfg.lr, betas=(0.5, 0.999))
        return {{"g": self.opt_g, "d": self.opt_d}}, {{}}

    @staticmethod
    def lsgan(pred: torch.Tensor, real: bool) -> torch.Tensor:
        return ((pred - float(real)) ** 2).mean()

    def train_step(self, real_a, real_b, step, engine):
        fake_b, fake_a = self.g_ab(real_a), self.g_ba(real_b)
        for p in list(self.d_a.parameters()) + list(self.d_b.parameters()):
            p.requires_grad_(False)
        loss_gan = self.lsgan(self.d_b(fake_b), True) + self.lsgan(self.d_a(fake_a), True)
        loss_cycle = (self.g_ba(fake_b) - real_a).abs().mean() + (self.g_ab(fake_a) - real_b).abs().mean()
        loss_g = loss_gan + self.cfg.lambda_cycle * loss_cycle
        self.opt_g.zero_grad(set_to_none=True)
        engine.backward(loss_g)
        self.opt_g.step()
        for p in list(self.d_a.parameters()) + list(self.d_b.parameters()):
            p.requires_grad_(True)
        loss_d = 0.5 * (self.lsgan(self.d_b(real_b), True) + self.lsgan(self.d_b(fake_b.detach()), False)
                        + self.lsgan(self.d_a(real_a), True) + self.lsgan(self.d_a(fake_a.detach()), False))
        self.opt_d.zero_grad(set_to_none=True)
        engine.backward(loss_d)
        self.opt_d.step()
        # detached 0-dim tensors, never .item(): a host read per step would stall a GPU (the engine reads them
        # once per log step)
        return {{"gan": loss_gan.detach(), "cycle": loss_cycle.detach(), "d": loss_d.detach()}}

    @torch.no_grad()
    def translate(self, x):
        return Translation(self.g_ab(x))

    @torch.no_grad()
    def translate_b2a(self, x):
        return Translation(self.g_ba(x))

    def inference_modules(self):
        return ["g_ab", "g_ba"]
'''

README = '''# {title}

Scaffolded by `cxrbench new-baseline {name}`. Until you replace it, this directory holds a minimal CycleGAN-style
translator (two 2-level generators, two PatchGAN discriminators, LSGAN + cycle L1) that passes the contract tests.

## Source
- Paper: (title, venue, year)
- Official code: (repository URL, commit read)

## Defaults
| value | default | from |
|---|---|---|
| batch_size | 1 | (official config) |
| ngf / ndf | 32 / 32 | (official config) |
| lr | 2e-4 | (official config) |
| lambda_cycle | 10 | (official config) |

## Modifications against upstream
- Single-channel (grayscale) input and output, images in [-1, 1].
- Training length set by the suite (`train.iterations` in params.yaml); schedules expressed in iterations.
- (list every other change)
'''

PROFILES = '''# Overrides of {cls}Config per profile (Config defaults are the official values).
ci: {{ngf: 8, ndf: 8}}
cpu: {{ngf: 16, ndf: 16}}
gpu-quick: {{}}
paper: {{}}
'''


def new_baseline(name: str, add_to_params: bool = True, root: Path = PROJECT_ROOT) -> Path:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or keyword.iskeyword(name):
        raise CxrbenchError(f"baseline name {name!r}: use lower-case letters, digits and '_' (e.g. 'attention_gan')")

    if name in registry.names():
        raise CxrbenchError(f"baseline {name!r} exists already ({registry.package_path(name)}); choose another name")
    target = root / "baselines" / name
    if target.exists():
        raise CxrbenchError(f"{target}: exists already; remove it or choose another name")
    cls = "".join(part.capitalize() for part in name.split("_"))
    fields = dict(name=name, cls=cls, title=name.replace("_", " ").title())
    tmp = target.with_name(f".tmp-{name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "__init__.py").write_text(INIT.format(**fields))
    (tmp / "model.py").write_text(MODEL.format(**fields))
    (tmp / "README.md").write_text(README.format(**fields))
    (tmp / "profiles.yaml").write_text(PROFILES.format(**fields))
    tmp.rename(target)
    registry.refresh()
    registry.get(name)  # the new directory implements the contract
    if add_to_params:
        add_model_to_params(name, root / "params.yaml")
    print(f"wrote {target.relative_to(root)}/ (contract tests: pytest tests/test_contract.py -k {name}; its row in "
          f"every table: dvc repro report, then {root / 'reports' / 'README.md'})")
    return target


def add_model_to_params(name: str, params_path: Path) -> None:
    """Add models.<name> and methods.<name> (the Config with this profile's values) to params.yaml."""
    data = read_yaml(params_path)
    profile = data.get("profile", "cpu")
    data.setdefault("models", {})[name] = {"method": name, "package": registry.package_path(name),
                                           "overrides": {}, "description": name}
    data.setdefault("methods", {})[name] = to_plain(registry.profile_config(name, profile))
    text = params_path.read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    atomic_write(params_path, header + yaml.safe_dump(data, sort_keys=False, width=120))
