"""cifar.outputs: an output is never missing, half-written, private or wrongly typed (atomic_path), and
the host a number was measured on is named precisely enough to compare (hardware)."""

import os
import stat
import subprocess
import sys

import pytest

from cifar import outputs
from conftest import REPO


def test_a_file_replaces_the_old_one_and_a_failure_keeps_it(tmp_path):
    final = tmp_path / "metrics.json"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with outputs.atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert final.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]
    with outputs.atomic_path(final) as tmp:
        tmp.write_text("new")
    assert final.read_text() == "new" and os.listdir(tmp_path) == ["metrics.json"]


def test_a_folder_is_never_missing_while_it_is_replaced(tmp_path, monkeypatch):
    """The old folder is renamed aside before the new one is renamed in: at no rename does the
    final path stop existing for longer than one rename, and nothing is deleted before."""
    final = tmp_path / "export"
    final.mkdir()
    (final / "model.bin").write_text("old")
    seen = []
    real_replace = os.replace

    def replace(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst), final.is_dir() and (final / "model.bin").exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with outputs.atomic_path(final, is_dir=True) as tmp:
        tmp.joinpath("model.bin").write_text("new")
    # First the old folder goes aside (it was still complete), then the new one comes in.
    assert [s[2] for s in seen] == [True, False] and seen[0][0] == "export" and seen[1][1] == "export"
    assert (final / "model.bin").read_text() == "new" and os.listdir(tmp_path) == ["export"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    final = tmp_path / "export"
    final.mkdir()
    (final / "model.bin").write_text("old")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError("no space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError):
        with outputs.atomic_path(final, is_dir=True) as tmp:
            tmp.joinpath("model.bin").write_text("new")
    assert (final / "model.bin").read_text() == "old" and os.listdir(tmp_path) == ["export"]


def test_outputs_get_the_usual_permissions_not_mkdtemps_0700(tmp_path):
    os.umask(0o022)
    with outputs.atomic_path(tmp_path / "folder", is_dir=True) as tmp:
        tmp.joinpath("a").write_text("x")
    with outputs.atomic_path(tmp_path / "file.txt") as tmp:
        tmp.write_text("x")
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == 0o644


def test_leftovers_of_a_killed_writer_are_cleaned_by_the_next_write(tmp_path):
    """A writer killed mid-write (SIGKILL: no finally runs) leaves .NAME.PID.*.tmp behind; the
    next write of the same output removes it. A live writer's temporaries are left alone."""
    code = ("import os, sys; sys.path.insert(0, sys.argv[1]); from cifar import outputs\n"
            "with outputs.atomic_path(sys.argv[2], is_dir=True) as tmp:\n"
            "    (tmp / 'part').write_text('x'); os.kill(os.getpid(), 9)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "scripts"), str(tmp_path / "export")])
    assert proc.returncode == -9
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".export.") and left[0].endswith(".tmp")
    alive = tmp_path / f".export.{os.getpid()}.keep.tmp"
    alive.mkdir()
    with outputs.atomic_path(tmp_path / "export", is_dir=True) as tmp:
        tmp.joinpath("model").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["export", alive.name])


def test_a_file_output_never_replaces_a_folder(tmp_path):
    """`--model models` must not wipe models/: the path is wrong, and the error says so."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "cnn.keras").write_text("weights")
    with pytest.raises(outputs.OutputError, match="models is a folder, but a file is to be written there"):
        with outputs.atomic_path(models) as tmp:
            tmp.write_text("x")
    assert (models / "cnn.keras").read_text() == "weights"
    (tmp_path / "report").write_text("mine")
    with pytest.raises(outputs.OutputError, match="report is a file, but a folder is to be written there"):
        with outputs.atomic_path(tmp_path / "report", is_dir=True):
            pass
    assert (tmp_path / "report").read_text() == "mine"


def test_a_stage_given_a_folder_as_its_model_path_stops_with_one_line(tmp_path):
    """Checked at stage start, before any training: the stage says why, the folder survives."""
    from conftest import run, script

    target = tmp_path / "models"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    proc = run(["python", script("train"), "--name", "cnn", "--data", str(tmp_path / "none.npz"), "--model", str(target),
                "--metrics", str(tmp_path / "m.json"),
                "--state", str(tmp_path / "state")], cwd=REPO, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert f"train@cnn: error: {target} is a folder, but a file is to be written there" in proc.stderr
    assert (target / "keep.txt").read_text() == "keep"


def test_a_cloud_cpus_generic_name_carries_its_family_and_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    core = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(core.format(0) + "\n" + core.format(1).replace("17", "99"))
    assert outputs._cpu_name(cpuinfo) == "AMD EPYC (family 25, model 17)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel Xeon\n")
    assert outputs._cpu_name(cpuinfo) == "Intel Xeon"
