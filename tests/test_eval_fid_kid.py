"""FID/KID: equal to an independent numpy/scipy computation; the cxr-densenet extractor through torch-fidelity;
the reference cache; the inception path (unavailable without weights; plumbing with a test-made state dict)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from eval import fid_kid as fk


# --- independent reference implementations --------------------------------------------------------------------------
def frechet_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) in float64 with scipy.linalg.sqrtm."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def frechet_low_rank(a: np.ndarray, b: np.ndarray) -> float:
    """The same distance for N < D without any matrix square root: with centred A (n1 x D) and B (n2 x D),
    S1 = A'A / (n1 - 1), S2 = B'B / (n2 - 1), and the non-zero eigenvalues of S1 S2 are the squared singular values
    of A B' / sqrt((n1 - 1)(n2 - 1)), so Tr sqrtm(S1 S2) is their sum (the nuclear norm)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = a - a.mean(0), b - b.mean(0)
    tr_sqrt = scipy.linalg.svdvals(ca @ cb.T).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    tr1, tr2 = (ca**2).sum() / (len(a) - 1), (cb**2).sum() / (len(b) - 1)
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + tr1 + tr2 - 2 * tr_sqrt)


def kid_numpy(a: np.ndarray, b: np.ndarray, subsets: int, size: int, seed: int) -> tuple[float, float]:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 averaged over subsets drawn like torch-fidelity draws them:
    one RandomState(seed), for each subset first a draw without replacement from set 1, then from set 2."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    d = a.shape[1]
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)]
        y = b[rng.choice(len(b), size, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        off = ~np.eye(size, dtype=bool)
        values.append(kxx[off].sum() / (size * (size - 1)) + kyy[off].sum() / (size * (size - 1))
                      - 2 * kxy.sum() / size**2)
    return float(np.mean(values)), float(np.std(values))


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


# --- metrics on features --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n1,n2,d", [(150, 130, 16), (30, 25, 64)])
def test_fid_and_kid_equal_independent_computation(n1, n2, d):
    rng = np.random.default_rng(n1)
    f1 = rng.standard_normal((n1, d)).astype(np.float32)
    f2 = (1.3 * rng.standard_normal((n2, d)) + 0.4).astype(np.float32)
    assert rel(fk.fid_from_features(f1, f2), frechet_scipy(f1, f2)) < 1e-6
    assert rel(frechet_low_rank(f1, f2), frechet_scipy(f1, f2)) < 1e-6  # the two references agree
    kid = fk.kid_from_features(f1, f2, subsets=20, subset_size=1000, rng_seed=7)
    assert kid["kid_subset_size"] == min(n1, n2) // 2  # half the smaller set: the subsets differ
    mean, std = kid_numpy(f1, f2, 20, min(n1, n2) // 2, 7)
    assert rel(kid["kid_mean"], mean) < 1e-6 and rel(kid["kid_std"], std) < 1e-6
    small = fk.kid_from_features(f1, f2, subsets=5, subset_size=10, rng_seed=3)
    assert rel(small["kid_mean"], kid_numpy(f1, f2, 5, 10, 3)[0]) < 1e-6


def test_a_set_against_itself_gives_zero_fid():
    f = np.abs(np.random.default_rng(1).standard_normal((40, 64))).astype(np.float32)
    g = f + 0.5
    assert abs(fk.fid_from_features(f, f)) < 1e-6 * fk.fid_from_features(f, g)
    with pytest.raises(ValueError, match="at least 2"):
        fk.kid_from_features(f[:1], f)
    assert fk.kid_from_features(f[:2], f)["kid_std"] is None  # every subset would be the whole set: no std


def test_fast_fid_equals_scipy_sqrtm():
    rng = np.random.default_rng(5)
    for n1, n2, d in ((60, 45, 16), (40, 50, 128)):  # N > D and N < D
        f1, f2 = rng.standard_normal((n1, d)), 0.8 * rng.standard_normal((n2, d)) + 0.3
        assert rel(fk.fid_fast(f1, f2), frechet_scipy(f1, f2)) < 1e-6


def test_kid_std_is_not_zero_on_two_sets_of_200():
    """The first version clamped the subset size to the set size: every subset was the whole set and the std ~1e-16."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((200, 32)), rng.standard_normal((200, 32)) + 0.3
    kid = fk.kid_from_features(a, b, subsets=100, subset_size=1000)
    assert kid["kid_subset_size"] == 100
    assert kid["kid_std"] > 0.05 * abs(kid["kid_mean"]) and kid["kid_std"] > 1e-6
    same = fk.kid_from_features(a, rng.standard_normal((200, 32)), subsets=100, subset_size=1000)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"]  # same distribution: KID ~ 0 within its spread
    assert kid["kid_mean"] > 3 * kid["kid_std"]  # shifted distribution: clearly positive


def test_fid_kid_interval_covers_the_expected_value_at_nominal_rate():
    """The jackknife interval of FID at N = 80 covers E[FID_80] (estimated from 300 draws) in ~95 % of 60 cases."""
    rng = np.random.default_rng(1)
    d, n = 16, 80
    draw = lambda: (rng.standard_normal((n, d)), rng.standard_normal((n, d)) + 0.2)  # noqa: E731
    expected = np.mean([fk.fid_fast(*draw()) for _ in range(300)])
    hits = 0
    for r in range(60):
        a, b = draw()
        ci = fk.fid_kid_interval([a], b, groups=20, seed=r)["fid"]
        assert ci["lo"] < ci["mean"] < ci["hi"]
        hits += ci["lo"] <= expected <= ci["hi"]
    assert 0.85 <= hits / 60 <= 1.0


# --- the cxr-densenet space through torch-fidelity ------------------------------------------------------------------
def _pngs(folder, n, seed, size=32, shift=0.0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    paths = []
    for i in range(n):
        img = 80 + 60 * np.sin(xx / (3 + i % 3)) * np.cos(yy / 4) + 40 * rng.random((size, size)) + shift
        p = folder / f"img{i:02d}.png"
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "L").save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    from pipeline.prior import PriorNet, save_prior

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "prior.pt"
    save_prior(PriorNet(input_size=32).eval(), path)  # randomly initialised: a fixed file, so FIDs are repeatable
    return path


def test_cxr_densenet_fid_kid_match_torch_fidelity_and_scipy(tmp_path, prior_file):
    import torch_fidelity

    from pipeline.prior import load_prior

    gen = _pngs(tmp_path / "gen", 7, seed=1, shift=40)
    ref = _pngs(tmp_path / "ref", 6, seed=2)
    ext = fk.resolve_extractor(fk.CXR_EXTRACTOR, prior_path=prior_file)
    assert ext.available and ext.describe()["weights_sha256"] == fk.sha256_file(prior_file)
    ours = fk.fid_kid(gen, ref, ext, kid_subsets=10, kid_subset_size=1000, rng_seed=5)
    assert ours["status"] == "ok" and ours["kid_subset_size"] == 3 and ours["n_generated"] == 7

    # 1) torch-fidelity's own calculate_metrics on the same folders with the registered extractor
    fk.register_cxr_extractor()
    fk.register_cxr_extractor()  # idempotent: once per process
    tf = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "gen"), input2=str(tmp_path / "ref"), feature_extractor=fk.CXR_EXTRACTOR,
        feature_extractor_weights_path=str(prior_file), fid=True, kid=True, kid_subsets=10, kid_subset_size=3,
        rng_seed=5, cuda=False, cache=False, save_cpu_ram=True, verbose=False)
    # both extract float32 features, in different batches: 1e-6 relative was at the edge (1.4e-6 seen on an FID of
    # 0.04); a formula or data error moves the value by far more than 1e-5
    assert rel(ours["fid"], tf["frechet_inception_distance"]) < 1e-5
    assert rel(ours["kid_mean"], tf["kernel_inception_distance_mean"]) < 1e-5

    # 2) independent: the prior's pooled features of the PNGs read by PIL, then scipy / numpy
    net = load_prior(prior_file)

    def feats(paths):
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("L"), np.float32)) for p in sorted(paths)])
        with torch.no_grad():
            return net.pooled(x[:, None] / 127.5 - 1.0).numpy()

    fg, fr = feats(gen), feats(ref)
    assert fg.shape == (7, 1024)  # N < D: singular covariances, so the exact low-rank form is the reference
    assert rel(ours["fid"], frechet_low_rank(fg, fr)) < 1e-6
    mean, std = kid_numpy(fg, fr, 10, 3, 5)
    assert rel(ours["kid_mean"], mean) < 1e-6 and rel(ours["kid_std"], std) < 1e-6
    # 3) a set against itself: FID ~ 0 (same features: the metric part is tested on its own above)
    assert abs(fk.fid_from_features(fr, fr)) < 1e-6 * ours["fid"]


def test_reference_features_are_cached_by_content(tmp_path, prior_file):
    ref = _pngs(tmp_path / "ref", 4, seed=3)
    ext = fk.resolve_extractor(fk.CXR_EXTRACTOR, prior_path=prior_file)
    cache = tmp_path / "cache" / "cxr-densenet-rsna_like-normal.npz"
    f1, state1 = fk.cached_features(ref, ext, cache)
    f2, state2 = fk.cached_features(ref, ext, cache)
    assert (state1, state2) == ("miss", "hit") and np.array_equal(f1, f2) and cache.is_file()
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(ref[0])  # an image changed: the key changes
    f3, state3 = fk.cached_features(ref, ext, cache)
    assert state3 == "miss" and not np.array_equal(f1, f3)
    _, state4 = fk.cached_features(ref, ext, tmp_path / "other.npz", write=False)
    assert state4 == "miss" and not (tmp_path / "other.npz").exists()


# --- the inception space --------------------------------------------------------------------------------------------
def test_inception_is_unavailable_without_a_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for given in ("", str(tmp_path / "nowhere.pth")):
        ext = fk.resolve_extractor("inception", inception_weights=given)
        assert not ext.available
        res = fk.fid_kid([tmp_path / "a.png"], [tmp_path / "b.png"], ext)
        assert res["status"] == "unavailable" and "fid" not in res and "kid_mean" not in res
        assert str(ext.weights) in res["how_to_fix"] and fk.INCEPTION_FILE in res["how_to_fix"]
    assert fk.resolve_extractor("inception").weights == tmp_path / "torch" / "hub" / "checkpoints" / fk.INCEPTION_FILE


def test_inception_plumbing_with_a_structurally_valid_state_dict(tmp_path, monkeypatch):
    """PLUMBING ONLY: random Inception weights written by this test exercise the code path (file -> torch-fidelity's
    inception-v3-compat -> FID/KID); the numbers mean nothing and are marked non-canonical."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    empty = tmp_path / "empty.pth"
    torch.save({}, empty)
    with monkeypatch.context() as m:  # build the module without loading weights, keep its (random) state dict
        m.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, strict=True: None)
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    weights = tmp_path / fk.INCEPTION_FILE
    torch.save(net.state_dict(), weights)

    strict = fk.resolve_extractor("inception", inception_weights=str(weights))  # hash check on: not the real file
    assert not strict.available and "sha256" in strict.unavailable
    ext = fk.resolve_extractor("inception", inception_weights=str(weights), check_hash=False)
    gen, ref = _pngs(tmp_path / "gen", 2, seed=4, shift=50), _pngs(tmp_path / "ref", 2, seed=5)
    res = fk.fid_kid(gen, ref, ext, kid_subsets=2, batch_size=4)
    assert res["status"] == "ok" and np.isfinite(res["fid"]) and np.isfinite(res["kid_mean"])
    assert res["canonical_weights"] is False and res["weights_sha256"] == fk.sha256_file(weights)
    assert res["resize"] == 299 and res["feature_layer"] == "2048" and res["kid_subset_size"] == 2
