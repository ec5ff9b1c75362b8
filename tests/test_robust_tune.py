"""studies/robust/robust_tune.py: the robust model's settings are chosen on corrupted val images,
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


def test_fast_candidates_are_measured_on_every_val_image_with_their_test_time_augmentation(pipeline, tmp_path):
    """studies/fast/fast_tune.py: the fast model's levers are judged on the whole val split,
    through the entry's TTA, beside their training time; the settings that differ head the table."""
    import yaml

    repo, env, _ = pipeline
    plain = candidate(repo, "fast", tmp_path / "plain")
    muon = candidate(repo, "fast", tmp_path / "muon")
    settings = yaml.safe_load((muon / "params.yaml").read_text())
    settings["fast"]["train"]["muon"] = {"learning_rate": 0.24, "momentum": 0.6, "newton_schulz_steps": 3}
    (muon / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    out = tmp_path / "study"
    command = ["python", script("fast_tune"), "--candidate", "sgd", str(plain), "--candidate", "muon", str(muon),
               "--out", str(out)]
    run(command, cwd=repo)
    rows = {row["label"]: row for row in json.loads((out / "tuning.json").read_text())["rows"]}
    val = json.loads((repo / "reports" / "metrics" / "prepare.json").read_text())["counts"]["val"]
    assert set(rows) == {"sgd", "muon"} and rows["sgd"]["tta"] == rows["muon"]["tta"] == 0  # the tiny pipeline's
    assert all(row["val_images"] == val for row in rows.values())
    assert rows["sgd"]["val_accuracy"] == rows["muon"]["val_accuracy"]  # the same model, two labels
    md = (out / "tuning.md").read_text()
    assert "train.muon" in md and "0.24" in md and "| sgd | null |" in md
    assert run(command, cwd=repo).stdout.count("measured already") == 2
