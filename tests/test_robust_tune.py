"""scripts/tools/robust_tune.py: the robust model's settings are chosen on corrupted val images,
never on the robustness stage's test figure."""

import json
import shutil

import pytest

from conftest import run, script

pytestmark = pytest.mark.e2e


def candidate(repo, name, folder):
    folder.mkdir(parents=True)
    shutil.copy(repo / "models" / "trained" / f"{name}.keras", folder)
    shutil.copy(repo / "reports" / "metrics" / "train" / f"{name}.json", folder)
    shutil.copy(repo / "params.yaml", folder)
    return folder


def test_candidates_are_measured_on_corrupted_val_images_and_a_rerun_skips_them(pipeline, tmp_path):
    repo, env, _ = pipeline
    plain = candidate(repo, "fast", tmp_path / "plain")
    robust = candidate(repo, "fast_robust", tmp_path / "robust")
    out = tmp_path / "study"
    command = ["python", script("robust_tune"), "--candidate", "plain", str(plain),
               "--candidate", "augmix", str(robust), "--images", "12", "--out", str(out)]
    first = run(command, cwd=repo)
    table = json.loads((out / "tuning.json").read_text())
    rows = {row["label"]: row for row in table["rows"]}
    assert set(rows) == {"plain", "augmix"} and {row["model"] for row in rows.values()} == {"fast", "fast_robust"}
    assert all(row["val_images"] == 12 and len(row["corruptions"]) == len(table["corruptions"]) == 15
               for row in rows.values())
    # The settings that differ between the candidates head the table: the augmentation policy.
    md = (out / "tuning.md").read_text()
    assert "augment.policy" in md and '"augmix"' in md and '"flip_translate"' in md
    assert "val clean" in md and "first 12 val images" in md
    assert "measured already" not in first.stdout
    assert run(command, cwd=repo).stdout.count("measured already") == 2


def test_a_folder_without_its_training_metrics_is_refused_before_any_work(pipeline, tmp_path):
    repo, env, _ = pipeline
    folder = candidate(repo, "fast", tmp_path / "plain")
    (folder / "fast.json").unlink()
    result = run(["python", script("robust_tune"), "--candidate", "plain", str(folder),
                  "--out", str(tmp_path / "study")], cwd=repo, check=False)
    assert result.returncode != 0 and "expected one NAME.keras with its NAME.json" in result.stderr
    assert not (tmp_path / "study").exists()
