"""The data plan: which images every dataset of the data stage will hold, by role, listed before any pixel is read,
and the checks that the whole plan can be evaluated (`cxrbench check` and the start of `cxrbench data`).

Datasets (folders under data/) and their roles:

    drr        translation training set (train/val) + the rsna_like evaluation set (its test split)  data.source
    ards-like  ards_like evaluation set (test)        data.mimic_ards_studies (MIMIC + lung masks), else rendered
    jsrt-like  jsrt_like evaluation set (test)        data.jsrt_dir with jsrt_as_eval (JSRT + SCR), else rendered
    seg-train  segmenter training set (train/val; its test split scores the segmenters)  data.segmenter_sources
    det-train  detector training set (train/val)      data.detector_sources
    extra/<name>  a user-named evaluation set (test)  data.extra_eval_sets.<name> (any adapter, its own folder)

Role sets take "train" from the written data/drr (the same files, hard-linked), "drr" from the rendered benchmark and
every other name from that adapter. Adapter images carry their split (official, or stable_split of the patient).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.data.adapters import SourceImage, assign_splits, jsrt_items, mimic_ards_items, source_items
from pipeline.data.canonical import EVAL_DATASETS, EXTRA, DataError, extra_dataset
from pipeline.data.params import DataParams

ROLE_SETS = ("seg-train", "det-train")
EXTRA_MASKS = {"rsna": "data.rsna_lung_masks", "mimic": "MIMIC images have none: only the ARDS list takes masks",
               "jsrt": "data.scr_dir", "montgomery": "ManualMask/ in its folder", "shenzhen": "mask/ in its folder",
               "folder": "masks/ in its folder"}  # where each adapter finds lung masks
DATASETS = ("drr", "ards-like", "jsrt-like", *ROLE_SETS)


def eval_datasets(p: DataParams) -> dict[str, str]:
    """Every evaluation set of these params -> its dataset: the paper's three, then the user-named ones."""
    return {**EVAL_DATASETS, **{name: extra_dataset(name) for name in p.extra_eval_sets}}


@dataclass
class Group:
    """What a rendered or derived part of a dataset holds: images per (split, domain), and how many of them have
    lung masks and boxes."""
    counts: Counter = field(default_factory=Counter)
    lung: Counter = field(default_factory=Counter)
    boxes: Counter = field(default_factory=Counter)


@dataclass
class DatasetPlan:
    name: str
    role: str
    origin: str  # "drr" or source names, "+"-joined
    items: list[SourceImage] = field(default_factory=list)  # adapter images, split assigned
    rendered: dict[tuple[str, str], int] = field(default_factory=dict)  # (split, domain) -> n rendered DRR images
    derived: list[str] = field(default_factory=list)  # role sets: parts linked from a written dataset (train, drr)
    derived_rows: Group = field(default_factory=Group)  # what those parts hold (known from the plan of drr)
    dropped: int = 0  # images left out by drop_eval_patients

    def table(self) -> Group:
        """counts / lung / boxes per (split, domain) over everything in the dataset."""
        g = Group(Counter(self.derived_rows.counts), Counter(self.derived_rows.lung), Counter(self.derived_rows.boxes))
        for key, n in self.rendered.items():
            g.counts[key] += n
            g.lung[key] += n
            g.boxes[key] += n if key[1] == "opacity" else 0
        for it in self.items:
            key = (it.split, it.domain)
            g.counts[key] += 1
            g.lung[key] += it.lung is not None
            g.boxes[key] += it.domain == "opacity" and (it.boxes_px is not None or it.opacity is not None)
        return g


def drr_groups(p: DataParams) -> dict[tuple[str, str], int]:
    groups = {("train", "opacity"): p.train_opacity, ("train", "normal"): p.train_normal,
              ("val", "opacity"): p.val_opacity, ("val", "normal"): p.val_normal,
              ("test", "opacity"): p.test_opacity, ("test", "normal"): p.test_normal}
    return {k: v for k, v in groups.items() if v > 0}


def role_takes(segmenters: bool, split: str, domain: str, has_lung: bool) -> bool:
    """What a role set takes from a written dataset: the segmenters its normal train/val images with lung masks
    (clean lungs: opacities are what makes them fail), the detector every train/val image (normals = background)."""
    if split not in ("train", "val"):
        return False
    return domain == "normal" and has_lung if segmenters else True


def _role_part(parent: DatasetPlan, for_segmenters: bool) -> Group:
    """The counts of what role_takes selects from `parent`."""
    full = parent.table()
    g = Group()
    for key, n in full.counts.items():
        split, domain = key
        taken = full.lung[key] if for_segmenters else n  # the segmenters take only the images with a lung mask
        if taken and role_takes(for_segmenters, split, domain, has_lung=full.lung[key] > 0):
            g.counts[key], g.lung[key], g.boxes[key] = taken, min(taken, full.lung[key]), full.boxes[key]
    return g


def build_plan(p: DataParams) -> dict[str, DatasetPlan]:
    """Every dataset the data stage writes, with its images (adapters) or counts (rendered)."""
    plan: dict[str, DatasetPlan] = {}
    if p.source == "drr":
        plan["drr"] = DatasetPlan("drr", "translation training set; test split = rsna_like", "drr",
                                  rendered=drr_groups(p))
    else:
        plan["drr"] = DatasetPlan("drr", "translation training set; test split = rsna_like", p.source,
                                  items=assign_splits(source_items(p, p.source), p, what=_where(p, p.source)))
    if p.mimic_ards_studies:
        plan["ards-like"] = DatasetPlan("ards-like", "ards_like evaluation set", "mimic",
                                        items=assign_splits(mimic_ards_items(p), p, eval_only=True,
                                                            what=p.mimic_ards_studies))
    else:
        plan["ards-like"] = DatasetPlan("ards-like", "ards_like evaluation set", "drr",
                                        rendered={("test", "opacity"): p.ards})
    if p.jsrt_dir and p.jsrt_as_eval:
        plan["jsrt-like"] = DatasetPlan("jsrt-like", "jsrt_like evaluation set", "jsrt",
                                        items=assign_splits(jsrt_items(p), p, eval_only=True, what=p.jsrt_dir))
    else:
        plan["jsrt-like"] = DatasetPlan("jsrt-like", "jsrt_like evaluation set", "drr",
                                        rendered={("test", "normal"): p.jsrt})
    for name, entry in p.extra_eval_sets.items():
        plan[extra_dataset(name)] = DatasetPlan(
            extra_dataset(name), f"{name} evaluation set (data.extra_eval_sets)", entry.source,
            items=assign_splits(source_items(p.for_extra_set(name), entry.source), p, eval_only=True, what=entry.dir))
    aux = DatasetPlan("drr", "", "drr", rendered=drr_groups(p))  # "drr" in a role when the source is not drr
    for name, key, segmenters in (("seg-train", "segmenter_sources", True), ("det-train", "detector_sources", False)):
        sources = getattr(p, key)
        ds = DatasetPlan(name, "segmenter training set" if segmenters else "detector training set", "+".join(sources))
        for source in sources:
            if source == "train" or (source == "drr" and p.source == "drr"):
                part = _role_part(plan["drr"], segmenters)
            elif source == "drr":
                part = _role_part(aux, segmenters)
            else:
                items = assign_splits(source_items(p, source), p, what=_where(p, source))
                if segmenters:  # images without a lung mask cannot train a segmenter (Shenzhen: part of the set)
                    items = [it for it in items if it.lung is not None]
                else:  # the detector trains on train/val
                    items = [it for it in items if it.split in ("train", "val")]
                ds.items += items
                continue
            ds.derived.append(source)
            for attr in ("counts", "lung", "boxes"):
                getattr(ds.derived_rows, attr).update(getattr(part, attr))
        plan[name] = ds
    if p.drop_eval_patients:
        _drop_eval_patients(plan)
    return plan


def _where(p: DataParams, source: str) -> str:
    return getattr(p, f"{source}_dir", "") or source


def _eval_items(plan: dict[str, DatasetPlan]) -> list[tuple[str, SourceImage]]:
    out = [(s, it) for s, ds in (("rsna_like", plan["drr"]),) for it in ds.items if it.split == "test"]
    pairs = [("ards_like", "ards-like"), ("jsrt_like", "jsrt-like")]
    pairs += [(name.split("/", 1)[1], name) for name in plan if name.startswith(f"{EXTRA}/")]
    for eval_set, name in pairs:
        out += [(eval_set, it) for it in plan[name].items]
    return out


def _training_items(plan: dict[str, DatasetPlan]) -> list[tuple[str, SourceImage]]:
    out = [("drr", it) for it in plan["drr"].items if it.split in ("train", "val")]
    for name in ROLE_SETS:
        out += [(name, it) for it in plan[name].items if it.split in ("train", "val")]
    return out


def _drop_eval_patients(plan: dict[str, DatasetPlan]) -> None:
    patients = {(it.source, it.patient_id) for _, it in _eval_items(plan)}
    files = {it.file for _, it in _eval_items(plan) if it.file}
    for name in ("drr", *ROLE_SETS):
        ds = plan[name]
        keep = [it for it in ds.items if it.split == "test" and name == "drr"
                or ((it.source, it.patient_id) not in patients and it.file not in files)]
        ds.dropped, ds.items = len(ds.items) - len(keep), keep


def leakage(plan: dict[str, DatasetPlan]) -> list[str]:
    """Training images whose file or patient is also in an evaluation set (one line per pair of sets)."""
    evals = _eval_items(plan)
    by_file = {it.file: (s, it) for s, it in evals if it.file}
    by_patient = {(it.source, it.patient_id): (s, it) for s, it in evals}
    found: dict[tuple[str, str], list[str]] = {}
    for train_set, it in _training_items(plan):
        hit = by_file.get(it.file) if it.file else None
        what = "same file"
        if hit is None:
            hit, what = by_patient.get((it.source, it.patient_id)), "same patient"
        if hit is not None:
            found.setdefault((train_set, hit[0]), []).append(f"{it.id} ({what} as {hit[1].id})")
    lines = []
    for (train_set, eval_set), examples in found.items():
        lines.append(f"data: leakage: {len(examples)} training image(s) of data/{train_set} are also in the "
                     f"{eval_set} evaluation set (e.g. {examples[0]}); take that source out of the training role "
                     "(data.source / segmenter_sources / detector_sources), stop using it as the evaluation set "
                     "(data.jsrt_as_eval: false, data.mimic_ards_studies, data.extra_eval_sets), or set "
                     "data.drop_eval_patients: true")
    return lines


def check_plan(plan: dict[str, DatasetPlan], p: DataParams, switched_off: list[str] | tuple = ()) -> tuple[
        list[str], list[str]]:
    """(errors, warnings) of the whole plan: both domains to train on, what every evaluation needs, leakage."""
    errors, warnings = [], []
    train = plan["drr"].table()
    for domain in ("opacity", "normal"):
        if not train.counts[("train", domain)]:
            errors.append(f"data.source: the translation training set ({plan['drr'].origin}) has no {domain} images "
                          f"in its train split; a translation needs both domains: add {domain} images or change the "
                          "filters (data.tb_domain, rsna_not_normal, mimic_views, max_images)")
    if errors:  # a one-domain set: the empty test split, no boxes, ... all follow from it; name the cause only
        return errors, warnings
    if not train.counts[("test", "opacity")]:
        errors.append(f"data.test_fraction: the test split of {plan['drr'].origin} (the rsna_like evaluation set) "
                      "has no opacity images; raise data.test_fraction or add images")
    sets = eval_datasets(p)
    for eval_set, name in sets.items():
        if f"segment:{eval_set}" in switched_off:
            continue
        g = plan[name].table()
        scored = "opacity" if g.counts[("test", "opacity")] else "normal"
        n, have = g.counts[("test", scored)], g.lung[("test", scored)]
        if n and have < n:
            fix = {"rsna_like": "data.rsna_lung_masks (<patientId>.png)" if plan["drr"].origin == "rsna" else
                   "lung masks for the test images of data.source",
                   "ards_like": "data.mimic_ards_masks", "jsrt_like": "data.scr_dir (the SCR masks)"}.get(
                eval_set, f"the lung masks of data.extra_eval_sets.{eval_set} ({EXTRA_MASKS[plan[name].origin]})")
            errors.append(f"eval.switched_off: segmentation on {eval_set} needs lung masks, {n - have} of its {n} "
                          f"scored images ({plan[name].origin} test, {scored}) have none: provide {fix}, or add "
                          f"'segment:{eval_set}' to eval.switched_off (the report then says 'not evaluated')")
    seg = plan["seg-train"].table()
    if any(f"segment:{s}" not in switched_off for s in sets) and seg.lung[("train", "normal")] + \
            seg.lung[("train", "opacity")] < 2:
        errors.append(f"data.segmenter_sources: {p.segmenter_sources} give "
                      f"{seg.lung[('train', 'normal')] + seg.lung[('train', 'opacity')]} training images with lung "
                      "masks (the segmenters need at least 2): name a lung-mask set (jsrt with scr_dir, montgomery, "
                      "shenzhen, folder with masks/, drr)")
    det = plan["det-train"].table()
    if "lesions" not in switched_off and not det.boxes[("train", "opacity")]:
        errors.append(f"data.detector_sources: {p.detector_sources} give no opacity images with boxes to train the "
                      "lesion detector on: name a set with boxes (drr, rsna, folder with opacity_masks/), or add "
                      "'lesions' to eval.switched_off")
    errors += leakage(plan)
    if not seg.lung[("test", "normal")] + seg.lung[("test", "opacity")] and \
            plan["drr"].table().lung[("test", "normal")] == 0:
        warnings.append("data.segmenter_sources: no held-out image with a lung mask (seg-train test split, or "
                        "rsna_like normals): the segmenters' competence cannot be measured and their metrics are "
                        "not ranked")
    for name, ds in plan.items():
        if ds.dropped:
            warnings.append(f"data.drop_eval_patients: {ds.dropped} image(s) of evaluation-set patients left out of "
                            f"data/{name}")
    return errors, warnings


def plan_lines(plan: dict[str, DatasetPlan]) -> list[str]:
    """Counts per dataset, split and domain (with lung masks and boxes), as `cxrbench check` prints them."""
    width = max(10, *(len(name) for name in plan))
    lines = [f"{'dataset':{width}s} {'origin':22s} {'split':5s} {'domain':8s} {'images':>7s} {'lung':>7s} {'boxes':>7s}"]
    for name, ds in plan.items():
        g = ds.table()
        for split in ("train", "val", "test"):
            for domain in ("opacity", "normal"):
                n = g.counts[(split, domain)]
                if n:
                    lines.append(f"{name:{width}s} {ds.origin:22s} {split:5s} {domain:8s} {n:7d} "
                                 f"{g.lung[(split, domain)]:7d} {g.boxes[(split, domain)]:7d}")
    return lines


def validate(p: DataParams, switched_off=(), log=print) -> dict[str, DatasetPlan]:
    """build_plan + check_plan: the first error as a DataError (one line), warnings logged."""
    plan = build_plan(p)
    errors, warnings = check_plan(plan, p, switched_off)
    for w in warnings:
        if log:
            log(f"warning: {w}")
    if errors:
        more = f" (and {len(errors) - 1} more problem(s): `cxrbench check` lists them)" if len(errors) > 1 else ""
        raise DataError(errors[0] + more)
    return plan

