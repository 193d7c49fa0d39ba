"""The synthetic blob task (ours/sanity.py): ours' activation mask must find a blob that is the only difference
between the domains, and the check must fail when the mask head no longer sees the input."""
from __future__ import annotations

from ours import sanity

# measured on one thread (the suite's setting, tests/conftest.py): the mask finds the blob after 600-800 steps;
# at 800, seed 0 / 1: mask AUROC 0.943 / 0.939, about 68 s each (ours/README.md, "What we found")
STEPS = 800


def test_blob_set_is_what_the_task_says():
    s = sanity.blob_set(16, seed=3)
    area = s.blob.float().mean((1, 2, 3))
    assert (area > 0.03).all() and (area < 0.25).all()
    assert ((s.a - s.background).abs()[~s.blob] < 0.28).all()  # outside: under 0.3 of the 0.9 peak
    assert ((s.a - s.background)[s.blob] > 0.26).all()


def test_mask_finds_the_blob_with_the_working_recipe():
    m = sanity.train(sanity.build(sanity.WORKING, seed=0), STEPS, seed=0)[-1]
    assert sanity.passes(m), m
    assert m["in_blob"] > 0.5, m  # it covers the blob, not just ranks it above an all-off mask


def test_the_check_fails_when_the_mask_head_is_disconnected():
    model = sanity.build(sanity.WORKING, seed=0)
    sanity.disconnect_mask_head(model)
    # a head that does not see the input gives the same mask on every pixel: AUROC exactly 0.5 at any length, so a
    # quarter of the budget shows it (and saves ~45 s of the suite)
    m = sanity.train(model, STEPS // 4, seed=0)[-1]
    assert m["auroc"] == 0.5 and not sanity.passes(m), m
