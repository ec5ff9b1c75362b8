"""The newcomer path, exactly as the README writes it: its offline `make quick` line, run in a
fresh copy of the repository with ../shared beside it."""

import re

import pytest

from conftest import MIRROR, REPO, STAND_IN_WEIGHTS, copy_repo, require_shared, run, MODEL_NAMES
import readme_results

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]


def readme_line(prefix):
    """The one line of a README code block that starts with `prefix`."""
    blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    found = [line for line in lines if line.startswith(prefix)]
    assert len(found) == 1, f"the README should show one `{prefix} ...` line, found {found}"
    return found[0]


def test_the_readme_offline_quick_line_works_as_written(tmp_path):
    require_shared(MIRROR, STAND_IN_WEIGHTS)
    line = readme_line("make quick CIFAR10_ARCHIVE=")
    assert "../shared/data/cifar-10-python.tar.gz" in line  # relative, as a newcomer types it
    (tmp_path / "shared").symlink_to(REPO.parent / "shared", target_is_directory=True)
    repo = copy_repo(tmp_path / "clone")
    (repo / ".venv").symlink_to(REPO / ".venv", target_is_directory=True)  # `make setup` is done

    proc = run(["bash", "-c", line], cwd=repo, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "Ran experiment(s)" in out + proc.stderr
    table = out[re.search(r"^model +test accuracy", out, re.M).start():].splitlines()
    assert re.match(r"model\s+test accuracy\s+reference\s+floats agree\s+int8 size\s+int8 drop$", table[0])
    for name in MODEL_NAMES:
        row = next(r for r in table if r.startswith(name + " "))
        assert re.search(r"\d+\.\d\d%\s+-\s+\d+\.\d\d% (met|MISSED)", row), row  # no reference in a fresh copy
    assert max(len(r) for r in table) <= 100, max(table, key=len)  # fits a terminal, unlike `dvc exp show`
    # The experiment ran in a temporary copy: the workspace holds no results.
    assert not (repo / "models" / "trained" / "cnn.keras").exists() and not (repo / "dvc.lock").exists()
    assert "failed call to cuInit" not in out + proc.stderr and "Unable to register" not in out + proc.stderr


def test_the_readme_shows_results_first_as_the_committed_metrics_give_them():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- results-table:.*?-->\n(.*?)<!-- /results-table -->", readme, re.S)
    assert block, "README lacks its results table"
    assert block.group(1) == readme_results.block(REPO), "run make readme"
    small = re.search(r"<!-- small-folders:.*?-->\n(.*?)<!-- /small-folders -->", readme, re.S)
    assert small and small.group(1) == readme_results.small_folders(REPO), "run make readme"
    sections = re.findall(r"^## (.+)$", readme, re.M)
    assert sections[0] == "Results" and readme.index("reports/charts/accuracy_vs_training_time.png") < readme.index("## Requirements")
    assert len(readme.splitlines()) <= 250


def test_the_links_of_the_readme_docs_and_summary_resolve_in_a_clone():
    """The charts are git-tracked (evaluate writes them with cache: false), so every image and
    file link resolves for a reader browsing the repository."""
    for page in (REPO / "README.md", REPO / "reports" / "summary.md", *sorted((REPO / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(REPO)} links {target}, which does not exist"
    for chart in ("accuracy_vs_training_time.png", "robustness.png"):
        size = (REPO / "reports" / "charts" / chart).stat().st_size
        assert 5_000 < size < 80_000, (chart, size)


def test_the_readme_shows_the_mediapipe_snippet_the_parity_check_runs():
    import textwrap

    source = (REPO / "scripts" / "tools" / "mediapipe_tasks.py").read_text()
    snippet = textwrap.dedent(re.search(r"# README snippet start\n(.*?)\n\s*# README snippet end", source, re.S).group(1))
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert any(snippet.replace("\n\n", "\n") in block for block in blocks), snippet
