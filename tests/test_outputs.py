"""cifar.outputs: an output is never half-written, private or wrongly typed (atomic_path), and
the host a number was measured on is named precisely enough to compare (hardware)."""

import os
import stat

import pytest

from cifar import outputs


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


def test_outputs_get_the_usual_permissions_not_mkdtemps_0700(tmp_path):
    os.umask(0o022)
    with outputs.atomic_path(tmp_path / "folder", is_dir=True) as tmp:
        tmp.joinpath("a").write_text("x")
    with outputs.atomic_path(tmp_path / "file.txt") as tmp:
        tmp.write_text("x")
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "file.txt").stat().st_mode) == 0o644


def test_a_file_output_never_replaces_a_folder(tmp_path):
    """`--model models` must not wipe models/: the path is wrong, and the error says so."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "cnn.keras").write_text("weights")
    with pytest.raises(outputs.StageError, match="models is a folder, but a file is to be written there"):
        with outputs.atomic_path(models) as tmp:
            tmp.write_text("x")
    assert (models / "cnn.keras").read_text() == "weights"
    (tmp_path / "report").write_text("mine")
    with pytest.raises(outputs.StageError, match="report is a file, but a folder is to be written there"):
        with outputs.atomic_path(tmp_path / "report", is_dir=True):
            pass
    assert (tmp_path / "report").read_text() == "mine"


def test_a_cloud_cpus_generic_name_carries_its_family_and_model(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    core = "processor\t: {}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
    cpuinfo.write_text(core.format(0) + "\n" + core.format(1).replace("17", "99"))
    assert outputs._cpu_name(cpuinfo) == "AMD EPYC (family 25, model 17)"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Intel Xeon\n")
    assert outputs._cpu_name(cpuinfo) == "Intel Xeon"
