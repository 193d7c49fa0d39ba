"""The offline DVC plots page: .dvc/config's template has DVC's placeholder once, loads nothing from the network and
inlines exactly the vega / vega-lite / vega-embed builds listed (by hash) in reports/vendor/README.md."""
from __future__ import annotations

import configparser
import hashlib
import re

from pipeline.offline import PROJECT_ROOT

VENDOR = PROJECT_ROOT / "reports" / "vendor"


def test_dvc_config_uses_the_vendored_template():
    cfg = configparser.ConfigParser()
    cfg.read(PROJECT_ROOT / ".dvc" / "config")
    template = (PROJECT_ROOT / ".dvc" / cfg["plots"]["html_template"]).resolve()
    assert template == (VENDOR / "dvc_plots_template.html").resolve() and template.is_file()


def test_template_is_self_contained_and_holds_the_listed_builds():
    page = (VENDOR / "dvc_plots_template.html").read_text(encoding="utf8")
    assert page.count("{plot_divs}") == 1 and "{scripts}" not in page  # DVC's CDN tags are never added
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=\"?https?:", page)
    inlined = re.findall(r"<script>/\* ([\w-]+)@([\d.]+) [^\n]*\n(.*?)\n</script>", page, flags=re.S)
    listed = re.findall(r"^\| ([\w-]+) \| ([\d.]+) \| `[^`]+` \| `([0-9a-f]{64})` \|$",
                        (VENDOR / "README.md").read_text(), flags=re.M)
    assert [(n, v, hashlib.sha256(code.encode()).hexdigest()) for n, v, code in inlined] == listed
    assert [n for n, _, _ in listed] == ["vega", "vega-lite", "vega-embed"]


def test_the_inlined_versions_are_the_ones_dvc_asks_the_cdn_for():
    from dvc_render.vega import VegaRenderer

    wanted = re.findall(r"npm/([\w-]+)@([\d.]+)", VegaRenderer.SCRIPTS)
    page = (VENDOR / "dvc_plots_template.html").read_text(encoding="utf8")
    assert wanted and re.findall(r"<script>/\* ([\w-]+)@([\d.]+) ", page) == wanted
