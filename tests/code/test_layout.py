"""The README's Layout names every module of the package, and nothing that is gone; its links resolve."""

import re

from support import REPO


def test_readme_layout_lists_every_module():
    readme = (REPO / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    listed = set(re.findall(r"^  (\w+)\.py ", layout, re.M))
    modules = {p.stem for p in (REPO / "router_model").glob("*.py")} - {"__init__", "__main__"}
    assert modules - listed == set(), "modules missing from the README's Layout"
    assert listed - modules == set(), "the README's Layout names modules that are gone"


def test_readme_links_and_pictures_point_at_files_that_exist():
    readme = (REPO / "README.md").read_text()
    targets = {
        link.split("#")[0]
        for link in re.findall(r"\]\(([^)\s]+)\)", readme)
        if not re.match(r"[a-z]+:", link) and not link.startswith("#")
    }
    assert {"docs/waterfall.png", "notebooks/quickstart.ipynb"} <= targets
    assert sorted(t for t in targets if not (REPO / t).is_file()) == []
