"""A deliberately small translator for engine tests (independent of any real method).

It exercises everything the engine must restore on resume: two optimizers, a scheduler, an image pool in
extra_state that uses the global RNG, random noise in the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.contract import Translation, Translator


@dataclass
class ToyConfig:
    batch_size: int = 2
    width: int = 4
    lr: float = 1e-2
    nan_at_step: int = -1  # inject a NaN loss at this step (fault tests)
    stochastic: bool = True  # False: no input noise, no image pool: a step depends on the batch only (DDP tests)
    host_floats: bool = False  # return Python floats (a host sync per loss, as methods did before) instead of tensors


class ToyTranslator(Translator):
    name = "toy"
    Config = ToyConfig

    def __init__(self, cfg: ToyConfig = ToyConfig(), in_channels: int = 1, image_size: int = 16):
        super().__init__(cfg, in_channels, image_size)
        w = cfg.width
        self.g = nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 3, padding=1), nn.Tanh())
        self.d = nn.Sequential(nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, 1, 3, padding=1))
        self.pool: list[torch.Tensor] = []

    def configure_optimizers(self, total_iterations):
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=self.cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=self.cfg.lr, betas=(0.5, 0.999))
        decay = lambda it: 1.0 - it / max(total_iterations, 1)  # noqa: E731
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt_g, decay)
        return {"g": self.opt_g, "d": self.opt_d}, {"g": self.sched}

    def _pool_query(self, fake):
        if not self.cfg.stochastic:
            return fake.detach()
        if len(self.pool) < 4:
            self.pool.append(fake.detach().clone())
            return fake.detach()
        if torch.rand(1).item() < 0.5:
            i = int(torch.randint(0, len(self.pool), (1,)).item())
            old, self.pool[i] = self.pool[i], fake.detach().clone()
            return old
        return fake.detach()

    def train_step(self, real_a, real_b, step, ctx):
        noise = 0.01 * torch.randn_like(real_a) if self.cfg.stochastic else 0.0
        fake_b = self.g(real_a + noise)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g = ((self.d(fake_b) - 1) ** 2).mean() + (fake_b - real_a).abs().mean()
        if step == self.cfg.nan_at_step:
            loss_g = loss_g * float("nan")
        ctx.backward(loss_g)
        self.opt_g.step()
        self.opt_d.zero_grad(set_to_none=True)
        pooled = self._pool_query(fake_b)
        loss_d = 0.5 * ((self.d(real_b) - 1) ** 2).mean() + 0.5 * (self.d(pooled) ** 2).mean()
        ctx.backward(loss_d)
        self.opt_d.step()
        if self.cfg.host_floats:
            return {"g": loss_g.item(), "d": loss_d.item()}
        return {"g": loss_g.detach(), "d": loss_d.detach()}

    @torch.no_grad()
    def translate(self, x):
        return Translation(self.g(x))

    def extra_state(self):
        return {"pool": list(self.pool)}

    def load_extra_state(self, state):
        self.pool = list(state.get("pool", []))
