"""The proposed method as a translator (ours/): switches reach the generators, frozen prior, a step, translate."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import mannwhitneyu

from ours import Ours
from ours.losses import l_total, normalise_mask
from pipeline.config import METHOD_PROFILE, PROFILES
from pipeline.offline import PROJECT_ROOT
from pipeline.schema import ConfigError, build_dataclass
from conftest import ready

PROFILE_FILE = PROJECT_ROOT / "ours" / "profiles.yaml"
SWITCH_TERMS = {"aaspm": ("p_upper", "p_repul"), "fa": ("structural", "style"), "lca": ("classifier",),
                "bam": ("bam",)}


def ci_config(**overrides):
    values = dict(yaml.safe_load(PROFILE_FILE.read_text())["ci"])
    values["prior_weights"] = ""
    values.update(overrides)
    return build_dataclass(Ours.Config, values, "test")


def build(seed: int = 0, **overrides) -> Ours:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "random prior (tests only)"
        model = Ours(ci_config(**overrides), in_channels=1, image_size=64)
    if model.prior is not None:  # make the random prior call every finding present: Eq. 7 selects something
        model.prior.densenet.classifier.bias.data.fill_(6.0)
    return model.train()


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 1, 64, 64, generator=g) * 2 - 1, torch.rand(2, 1, 64, 64, generator=g) * 2 - 1



def test_profiles_have_the_four_profiles_and_validate():
    profiles = yaml.safe_load(PROFILE_FILE.read_text())
    assert set(profiles) == set(PROFILES) - set(METHOD_PROFILE)  # cpu-rank trains at the cpu widths
    for name, values in profiles.items():
        build_dataclass(Ours.Config, values or {}, f"ours/profiles.yaml {name}")


def test_config_rejects_unknown_q_label_in_one_line():
    with pytest.raises(ConfigError, match=r"q_labels.*'Pneumonitis'"):
        build_dataclass(Ours.Config, {"q_labels": ["Edema", "Pneumonitis"]}, "params.yaml.methods.ours")
    with pytest.raises(ConfigError, match="reduction"):
        build_dataclass(Ours.Config, {"reduction": "max"}, "params.yaml.methods.ours")


def test_config_defaults_are_the_paper_values():
    c = Ours.Config()
    assert (c.lambda_penalties, c.lambda_bam, c.lambda_feature, c.lambda_classifier, c.lambda_adv, c.lambda_rec,
            c.lambda_style) == (0.01, 0.1, 0.5, 0.5, 2.0, 1.0, 0.5)
    assert (c.f_upper, c.f_central, c.f_height, c.eps, c.threshold) == (0.75, 0.1, 0.2, 0.01, 0.5)
    assert (c.lr, c.beta1, c.beta2, c.batch_size, c.lr_decay_every) == (1e-4, 0.9, 0.9999, 2, 0.4)
    assert c.aaspm and c.fa and c.lca and c.bam and c.reduction == "mean"


def test_missing_prior_file_is_one_clear_line():
    from pipeline.prior import PriorError

    with pytest.raises(PriorError, match="prior") as exc:
        Ours(ci_config(prior_weights="models/prior/does-not-exist.pt"), 1, 64)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("switch", sorted(SWITCH_TERMS))
def test_switch_on_reaches_the_generators(switch):
    model = build()
    a, b = batch()
    torch.manual_seed(1)
    terms = model.generator_terms(a, b)
    term = sum(terms[k] for k in SWITCH_TERMS[switch])
    model.zero_grad(set_to_none=True)
    term.backward()
    grad_a = sum(p.grad.abs().sum() for p in model.gen_a.parameters() if p.grad is not None)
    assert term.item() > 0 and grad_a > 0, f"{switch}: its loss does not reach G_A"
    if switch in ("aaspm", "bam", "fa"):  # these act on both generators (LCA is opacity -> normal only)
        grad_b = sum(p.grad.abs().sum() for p in model.gen_b.parameters() if p.grad is not None)
        assert grad_b > 0, f"{switch}: its loss does not reach G_B"
    assert all(p.grad is None for p in model.prior.parameters()), "the prior must stay frozen"


@pytest.mark.parametrize("switch", sorted(SWITCH_TERMS))
def test_switch_off_contributes_nothing(switch):
    on, off = build(seed=2), build(seed=2, **{switch: False})
    off.load_state_dict(on.state_dict(), strict=False)
    a, b = batch(1)
    torch.manual_seed(3)
    terms_on = on.generator_terms(a, b)
    torch.manual_seed(3)
    terms_off = off.generator_terms(a, b)
    assert not set(SWITCH_TERMS[switch]) & set(terms_off)
    rest = {k: v for k, v in terms_on.items() if k not in SWITCH_TERMS[switch]}
    assert set(rest) == set(terms_off)
    total_off, total_rest = off.total(terms_off), on.total(rest)
    assert torch.allclose(total_off, total_rest, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(on.total(terms_on), total_rest), f"{switch} on should change Eq. 8"
    # and the gradient the generators receive is the one without the term
    total_off.backward()
    total_rest.backward()
    for (name, p_on), p_off in zip(on.gen_a.named_parameters(), off.gen_a.parameters()):
        assert torch.allclose(p_on.grad, p_off.grad, rtol=1e-4, atol=1e-6), name


def test_no_prior_is_built_when_fa_and_lca_are_off():
    model = build(fa=False, lca=False)
    assert model.prior is None
    terms = model.generator_terms(*batch())
    assert "structural" not in terms and "classifier" not in terms


def test_one_train_step_logs_every_term_and_keeps_the_prior_frozen(tmp_path):
    model = build()
    prior_before = {k: v.clone() for k, v in model.prior.state_dict().items()}
    eng = ready(model)
    opt_params = {id(p) for o in model.optimizers.values() for g in o.param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in model.prior.parameters()}
    assert all(not p.requires_grad for p in model.prior.parameters())
    a, b = batch()
    losses = model.train_step(a, b, 0, eng)
    expected = {"adv_gan", "adv_acl", "rec", "p_upper", "p_repul", "bam", "structural", "style", "classifier",
                "total", "d_gan", "d_acl", "d_total", "mask_area_opacity", "mask_area_normal"}
    assert expected <= set(losses)
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in losses.values())
    assert not model.prior.training  # train() keeps the prior in eval mode: its BatchNorm statistics never move
    for k, v in model.prior.state_dict().items():
        assert torch.equal(v, prior_before[k]), k
    assert set(model.inference_modules()) == {"gen_a", "gen_b"}


def test_translate_returns_blended_image_and_mask(tmp_path):
    model = build()
    model.eval()
    a, _ = batch()
    out = model.translate(a)
    assert out.image.shape == (2, 1, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    assert out.image.min() >= -1 and out.image.max() <= 1 and out.mask.min() >= 0 and out.mask.max() <= 1
    # Eq. 1 with the min-max normalised mask of G_A (zero style at inference)
    with torch.no_grad():
        image, mask_tanh = model.gen_a(a, torch.zeros(2, model.cfg.style_dim))
    m = normalise_mask(mask_tanh)
    assert torch.allclose(out.mask, m) and torch.allclose(out.image, image * m + (1 - m) * a, atol=1e-6)
    assert torch.equal(model.translate(a).image, out.image)  # deterministic
    back = model.translate_b2a(a)
    assert back.image.shape == (2, 1, 64, 64) and not torch.equal(back.image, out.image)  # G_B, not G_A


def test_resnet_generator_and_one_sided_variant_train(tmp_path):
    for overrides in ({"generator": "resnet"}, {"symmetric": False}):
        model = build(**overrides)
        losses = model.train_step(*batch(), 0, ready(model))
        assert all(math.isfinite(v) for v in losses.values()), overrides
    assert not hasattr(build(symmetric=False), "dis_pair_b")


def test_zero_consistency_weight_drops_the_pair_discriminators_and_changes_nothing_else():
    """acl_weight 0 builds no pair D (README item 15); the generators' objective and gradients equal the full model's
    with its pair term weighted 0, computed with the pair Ds present."""
    full, bare = build(), build(acl_weight=0.0)
    assert not any(hasattr(bare, n) for n in ("dis_pair_a", "dis_pair_b")) and hasattr(full, "dis_pair_b")
    missing, unexpected = bare.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(k.startswith("dis_pair_") for k in unexpected)
    a, b = batch()
    totals, grads = [], []
    for model, weight in ((full, 0.0), (bare, None)):
        torch.manual_seed(5)
        terms = model.generator_terms(a, b)
        c = model.cfg
        total = l_total(terms, c.lambda_penalties, c.lambda_bam, c.lambda_feature, c.lambda_classifier, c.lambda_adv,
                        c.lambda_rec, c.lambda_style, c.acl_weight if weight is None else weight, c.lambda_mil,
                        c.lambda_cycle, c.lambda_sparse)
        model.zero_grad(set_to_none=True)
        total.backward()
        totals.append(float(total.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in model.gen_a.parameters() if p.grad is not None]))
    assert float(full.generator_terms(a, b)["adv_acl"].detach()) > 0  # the full model's pair term is not zero by itself
    assert math.isclose(totals[0], totals[1], rel_tol=1e-6) and torch.allclose(grads[0], grads[1], atol=1e-7)
    bare.configure_optimizers(10)
    n_dis = sum(p.numel() for p in bare.optimizers["dis"].param_groups[0]["params"])
    assert n_dis == sum(p.numel() for d in (bare.dis_a, bare.dis_b) for p in d.parameters())
    losses = bare.train_step(a, b, 0, ready(bare))
    assert losses["adv_acl"] == 0 and losses["d_acl"] == 0 and math.isfinite(float(losses["total"]))


def test_learning_rate_decays_every_40_percent_of_training():
    model = build()
    opts, scheds = model.configure_optimizers(10)
    lrs = []
    for _ in range(10):
        lrs.append(opts["gen"].param_groups[0]["lr"])
        opts["gen"].step()  # no gradients yet: a no-op that keeps the scheduler's order check quiet
        scheds["gen"].step()
    assert lrs == pytest.approx([1e-4] * 4 + [5e-5] * 4 + [2.5e-5] * 2)
    assert opts["gen"].param_groups[0]["betas"] == (0.9, 0.9999)


def probe(seed: int = 5):
    from pipeline.contract import Probe

    g = torch.Generator().manual_seed(seed)
    a, b = torch.rand(4, 1, 64, 64, generator=g) * 2 - 1, torch.rand(4, 1, 64, 64, generator=g) * 2 - 1
    opacity = torch.zeros(4, 1, 64, 64, dtype=torch.bool)
    opacity[:, :, 20:40, 10:30] = True
    opacity[1, :, 40:50, 40:50] = True  # positions that are opacity in one image only
    lungs = torch.zeros_like(opacity)
    lungs[:, :, 8:56, 4:60] = True
    return Probe(a, opacity, b, lungs)


def test_diagnostics_measure_the_mask_against_an_independent_computation():
    from pipeline.auroc import auroc

    model = build()
    p = probe()
    torch.manual_seed(0)
    d = model.diagnostics(p)
    model.eval()
    mask_a, mask_b = model.translate(p.a).mask, model.translate(p.b).mask
    assert d["diag_mask_area_opacity"] == pytest.approx(mask_a.mean().item(), rel=1e-6)
    assert d["diag_mask_area_normal"] == pytest.approx(mask_b.mean().item(), rel=1e-6)
    # per-image AUROC by brute force over all (positive, negative) pixel pairs of one image, then the mean
    brute = []
    for m, t in zip(mask_a, p.opacity):
        pos, neg = m[t].double(), m[~t].double()
        greater = (pos[:, None] > neg[None, :]).double().mean() + 0.5 * (pos[:, None] == neg[None, :]).double().mean()
        brute.append(greater.item())
    assert d["diag_mask_auroc"] == pytest.approx(sum(brute) / len(brute), abs=1e-9)
    assert auroc(mask_a[0].flatten().numpy(), p.opacity[0].flatten().numpy()) == pytest.approx(brute[0], abs=1e-9)
    # lung field, pooled over images: scipy's Mann-Whitney U; the floor from the per-position frequency by hand
    field = (p.lungs | p.opacity).numpy()
    pos, neg = mask_a.numpy()[field & p.opacity.numpy()], mask_a.numpy()[field & ~p.opacity.numpy()]
    u = mannwhitneyu(pos.astype(np.float64), neg.astype(np.float64)).statistic
    assert d["diag_mask_auroc_lung"] == pytest.approx(u / (len(pos) * len(neg)), abs=1e-9)
    freq = (p.opacity.numpy() & field).sum(0) / field.sum(0).clip(min=1)
    fmap = np.broadcast_to(freq, field.shape)
    u = mannwhitneyu(fmap[field & p.opacity.numpy()], fmap[field & ~p.opacity.numpy()]).statistic
    assert d["diag_mask_floor_lung"] == pytest.approx(u / (len(pos) * len(neg)), abs=1e-9)
    assert 0.5 < d["diag_mask_floor_lung"] < 1.0
    inter = ((mask_a > 0.5) & p.opacity).flatten(1).sum(1).float()
    union = ((mask_a > 0.5) | p.opacity).flatten(1).sum(1).float()
    assert d["diag_mask_iou"] == pytest.approx((inter / union).mean().item(), abs=1e-6)
    # every switched-on term has a gradient ratio at the mask head; the adversarial norm itself is positive
    for name in ("rec", "p_upper", "p_repul", "bam", "feature", "classifier"):
        assert f"diag_grad_{name}" in d and d[f"diag_grad_{name}"] >= 0.0
    assert d["diag_grad_adv"] > 0 and d["diag_grad_p_repul"] > 0 and d["diag_grad_bam"] > 0


def test_diagnostics_are_logged_and_never_change_training(tmp_path):
    """The probe's curves reach the loss CSV, and the weights after training equal those of a run without them."""
    from pipeline.engine import Engine, EngineSettings

    weights = []
    for with_probe in (False, True):
        model = build(seed=7, fa=False, lca=False)
        settings = EngineSettings(iterations=4, log_every=2, progress=False, device="cpu")
        curve = tmp_path / f"curve{with_probe}.csv"
        eng = Engine(model, settings, tmp_path / f"ckpt{with_probe}", seed=0, curve_path=curve,
                     probe=probe() if with_probe else None)
        g = torch.Generator().manual_seed(0)
        eng.fit((torch.rand(6, 64, 64, generator=g) * 255).to(torch.uint8).numpy(),
                (torch.rand(6, 64, 64, generator=g) * 255).to(torch.uint8).numpy())
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        header = curve.read_text().splitlines()[0].split(",")
        assert ("diag_mask_auroc" in header and "diag_grad_bam" in header) == with_probe
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k


def test_lower_bound_is_counted_with_p_upper_only_when_set():
    a, b = batch()
    torch.manual_seed(1)
    off = build(seed=3).generator_terms(a, b)["p_upper"]
    torch.manual_seed(1)
    on = build(seed=3, f_lower=0.99).generator_terms(a, b)["p_upper"]  # every mask is below 99 % area
    assert on.item() > off.item() + 1e-4


def test_mil_variant_is_off_by_default_and_reaches_the_mask_head_when_on():
    """lambda_mil (not in the paper): no term and no change at 0; when on, its term is logged, enters Eq. 8 with its
    weight and pulls on G_A's mask head."""
    a, b = batch()
    assert "mil" not in build(seed=3).generator_terms(a, b)
    model = build(seed=3, lambda_mil=2.0)
    torch.manual_seed(1)
    terms = model.generator_terms(a, b)
    assert terms["mil"].item() > 0
    without = {k: v for k, v in terms.items() if k != "mil"}
    assert (model.total(terms) - model.total(without)).item() == pytest.approx(2.0 * terms["mil"].item(), rel=1e-5)
    ratios = model.mask_gradient_ratios(a, b)
    assert ratios["diag_grad_mil"] > 0


def test_cycle_variant_is_off_by_default_and_is_the_l1_of_the_blended_cycles():
    """lambda_cycle (not in the paper): no term at 0; when on, the term is |cycle_aba - x_a| + |cycle_bab - x_b|
    (mean absolute error, by hand on the same forward), enters Eq. 8 with its weight and reaches G_A's mask head."""
    a, b = batch()
    assert "cycle" not in build(seed=3).generator_terms(a, b)
    model = build(seed=3, lambda_cycle=10.0)
    torch.manual_seed(1)
    o = model.forward_all(a, b)
    terms = model.generator_terms(a, b, o)
    by_hand = (o["cycle_aba"] - a).abs().mean() + (o["cycle_bab"] - b).abs().mean()
    assert terms["cycle"].item() == pytest.approx(by_hand.item(), rel=1e-6) and by_hand.item() > 0
    without = {k: v for k, v in terms.items() if k != "cycle"}
    assert (model.total(terms) - model.total(without)).item() == pytest.approx(10.0 * by_hand.item(), rel=1e-4)
    assert model.mask_gradient_ratios(a, b)["diag_grad_cycle"] > 0


def test_sparse_variant_is_off_by_default_and_is_the_mean_mask_on_the_images_translated():
    """lambda_sparse (not in the paper): no term at 0; when on, the term is the mean of G_A's masks on the opacity
    images plus G_B's on the normals (by hand on the same forward, not on the images to keep), enters Eq. 8 with its
    weight and reaches G_A's mask head."""
    a, b = batch()
    assert "sparse" not in build(seed=3).generator_terms(a, b)
    model = build(seed=3, lambda_sparse=5.0)
    torch.manual_seed(1)
    o = model.forward_all(a, b)
    terms = model.generator_terms(a, b, o)
    by_hand = sum(float(o[k].sum()) / o[k].numel() for k in ("mask_ab", "mask_ba"))
    on_kept = sum(float(o[k].sum()) / o[k].numel() for k in ("mask_bb", "mask_aa"))
    assert terms["sparse"].item() == pytest.approx(by_hand, rel=1e-5) and by_hand > 0
    assert abs(on_kept - by_hand) > 1e-6  # the kept images' masks differ, so the by-hand value names the right ones
    without = {k: v for k, v in terms.items() if k != "sparse"}
    assert (model.total(terms) - model.total(without)).item() == pytest.approx(5.0 * by_hand, rel=1e-4)
    assert model.mask_gradient_ratios(a, b)["diag_grad_sparse"] > 0


def test_residual_output_adds_the_head_to_each_rows_own_input():
    """gen_output: residual (not in the paper): the image head's output is a change added to the input, for the
    translation (Eq. 1 blends x + head with x, inference clamps to [-1, 1]) and for the self-reconstruction rows
    (their own input, not the batch's first rows); by hand from the generator's encode / decode; default unchanged."""
    a, b = batch()
    model = build(seed=2, gen_output="residual")
    model.eval()
    out = model.translate(a)
    with torch.no_grad():
        head, mask_tanh = model.gen_a(a, torch.zeros(2, model.cfg.style_dim))
    m = normalise_mask(mask_tanh)
    assert torch.allclose(out.image, ((a + head) * m + (1 - m) * a).clamp(-1, 1), atol=1e-6)
    plain = build(seed=2)
    plain.eval()
    assert torch.allclose(plain.translate(a).image, (head * m + (1 - m) * a).clamp(-1, 1), atol=1e-6)
    # self-reconstruction: G_A(c(x_b), s(x_b)) + x_b, batch [a; b] with b the last rows
    with torch.no_grad():
        o = model.forward_all(a, b)
        rec_head, _ = model.gen_a.decode(model.gen_a.encode(b), model.gen_a.style_of(b))
    assert torch.allclose(o["rec_b"], b + rec_head, atol=1e-5)
    assert not torch.allclose(o["rec_b"], rec_head, atol=1e-3)
    model.train()
    losses = model.train_step(a, b, 0, ready(model))
    assert all(math.isfinite(v) for v in losses.values())


def test_mask_style_share_against_a_loop():
    """mask_style_share: std over style draws / std over images of G_A's mask, against numpy on the same draws."""
    model, x = build(seed=2), batch()[0].repeat(2, 1, 1, 1) * torch.linspace(0.2, 1.0, 4)[:, None, None, None]
    torch.manual_seed(7)
    share = model.mask_style_share(x, draws=3)
    torch.manual_seed(7)
    g = model.gen_a.eval()
    with torch.no_grad():
        masks = np.stack([normalise_mask(g(x, g.random_style(x))[1]).numpy() for _ in range(3)])  # (draw, image, ...)
    expected = masks.std(0, ddof=1).mean() / masks.std(1, ddof=1).mean()
    assert share == pytest.approx(float(expected), rel=1e-4)
    model.gen_a.train()
    model.mask_style_share(x)
    assert model.gen_a.training


def test_generator_init_official_is_kaiming_and_pytorch_keeps_the_layer_defaults():
    """gen_init: 'official' = ACL-GAN/MUNIT kaiming-normal fan-in weights and zero biases on every generator conv and
    linear layer; 'pytorch' = the layers as constructed (uniform within 1/sqrt(fan_in), biases too). The
    discriminators get N(0, 0.02) either way."""
    official, pytorch = build(seed=5), build(seed=5, gen_init="pytorch")
    for gen_o, gen_p in ((official.gen_a, pytorch.gen_a), (official.gen_b, pytorch.gen_b)):
        layers = [(o, p) for o, p in zip(gen_o.modules(), gen_p.modules()) if isinstance(o, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(layers) > 10
        w_o = torch.cat([(o.weight / math.sqrt(2.0 / o.weight[0].numel())).flatten() for o, _ in layers])
        assert w_o.std().item() == pytest.approx(1.0, abs=0.05)  # kaiming normal: std sqrt(2 / fan_in)
        assert all(o.bias is None or not o.bias.any() for o, _ in layers)
        for _, p in layers:
            bound = 1.0 / math.sqrt(p.weight[0].numel())
            assert p.weight.abs().max().item() <= bound + 1e-7
            assert p.bias is None or p.bias.abs().max().item() > 0
    for d_o, d_p in ((official.dis_a, pytorch.dis_a), (official.dis_b, pytorch.dis_b)):
        for o, p in zip(d_o.modules(), d_p.modules()):
            if isinstance(o, torch.nn.Conv2d):
                assert o.weight.std().item() == pytest.approx(0.02, rel=0.3)
                assert p.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_official_init_makes_the_mask_follow_the_style_code_more_than_pytorch_init():
    """README item 11: under the official init the AdaIN parameters, drawn through a kaiming-initialised MLP from a
    random style code, move the mask as much as the image does; under PyTorch's default init far less."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    x = torch.stack([torch.tanh(3 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.1)) for cx, cy in
                     torch.rand(8, 2, generator=g) * 1.2 - 0.6])[:, None] * 2 - 1  # a bright blob in a new place each
    shares = {kind: np.mean([build(seed=s, gen_init=kind).mask_style_share(x, draws=6) for s in range(3)])
              for kind in ("official", "pytorch")}
    assert shares["official"] > 2 * shares["pytorch"], shares
