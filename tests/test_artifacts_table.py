"""The artifacts table (scripts/artifacts_table.py): built from the parity results of every
registered model, and README's copy of it is the one the committed metrics give."""

import json

import pytest

from conftest import REPO, run, script

import artifacts_table  # noqa: E402  (scripts/ is on sys.path via conftest)


def parity_result(keras_acc, int8_acc, float_bytes, int8_bytes, size_met, accuracy_met):
    artifact = {"agreement": 1.0, "max_abs_diff": 0.0, "latency_ms": 1.0, "throughput_img_s": 100.0}
    return {
        "model": "toy", "test_images": 20,
        "artifacts": {
            "keras": {**artifact, "accuracy": keras_acc, "bytes": 3 * float_bytes},
            "tflite_float32": {**artifact, "accuracy": keras_acc, "bytes": float_bytes, "target": "float"},
            "tflite_int8": {**artifact, "accuracy": int8_acc, "agreement": 0.9, "bytes": int8_bytes,
                            "target": "int8", "latency_ms": 0.25},
            "tfjs": {**artifact, "accuracy": keras_acc, "agreement": 0.99, "bytes": float_bytes, "target": "float",
                     "latency_ms": None},
        },
        "targets": {"int8_size_met": size_met, "int8_accuracy_met": accuracy_met},
        "hardware": {"cpu": "Test CPU", "cpu_count": 2},
    }


def write_registry(tmp_path, names):
    """The repository's params.yaml with a registry of `names` (each reusing the seed CNN's section)."""
    import yaml

    values = yaml.safe_load((REPO / "params.yaml").read_text())
    for name in values["models"]:  # only sections the registry names (or a stage reads) may be there
        if name != "cnn":
            values.pop(name, None)
    values.pop("fast", None)
    values["models"] = {name: {"module": "cnn", "label": f"the {name} model", "tta": 0}
                        for name in names}
    values.update({name: {} for name in names})  # each model's own section: no overrides of cnn's
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(values, sort_keys=False))
    return params


def test_rows_hold_each_artifacts_numbers_and_which_targets_it_misses(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "a.json").write_text(json.dumps(parity_result(0.9, 0.88, 1000, 320, False, False)))
    (metrics / "b.json").write_text(json.dumps(parity_result(0.8, 0.799, 1000, 250, True, True)))
    table, text = artifacts_table.render(metrics, write_registry(tmp_path, ["b", "a"]))
    assert [r["name"] for r in table][:1] == ["b"]  # registry order, not file order
    int8 = {r["name"]: r for r in table if r["key"] == "tflite_int8"}
    assert int8["a"]["vs_float32"] == 32.0 and int8["a"]["vs_keras_pp"] == -2.0
    assert int8["a"]["integer_only"] and not any(r["integer_only"] for r in table if r["key"] != "tflite_int8")
    assert int8["a"]["target"] == "int8: size **missed**, accuracy **missed**"
    assert int8["b"]["target"] == "int8: size met, accuracy met"
    tfjs = {r["name"]: r for r in table if r["key"] == "tfjs"}
    assert tfjs["a"]["target"] == "float: **missed**"  # 99% agreement < 99.9%
    assert "| the a model | TF-Lite int8 | LiteRT | yes | 88.00% | -2.00 pp | 90.00% | 0.00 MB | 32.0% | 0.25 ms |" in text
    assert "Test CPU, 2 cores" in text
    assert "stratified sample" not in text


def test_a_sampled_artifact_is_marked_and_compared_with_keras_on_its_sample(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    result = parity_result(0.9, 0.88, 1000, 320, False, False)
    result["artifacts"]["tfjs"].update(accuracy=0.95, keras_accuracy=0.95, images=2995, sample="stratified")
    (metrics / "a.json").write_text(json.dumps(result))
    table, text = artifacts_table.render(metrics, write_registry(tmp_path, ["a"]))
    tfjs = next(r for r in table if r["key"] == "tfjs")
    assert tfjs["vs_keras_pp"] == 0.0 and tfjs["sample_images"] == 2995
    assert "| 95.00%* | +0.00 pp |" in text and "\\* On a stratified sample of 2,995 test images" in text


def test_a_model_without_parity_results_is_named_with_the_stage_to_run_and_a_broken_one_stops_it(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "a.json").write_text(json.dumps(parity_result(0.9, 0.88, 1000, 320, False, False)))
    (metrics / "b.json").write_text('{"model": "b"}')
    with pytest.raises(artifacts_table.TableError, match=r"b\.json is not a parity result.*parity@b"):
        artifacts_table.render(metrics, write_registry(tmp_path, ["a", "b"]))
    _, text = artifacts_table.render(metrics, write_registry(tmp_path, ["a", "c"]))
    assert "| the a model | Keras" in text and "| the c model |" not in text
    assert text.endswith("Not exported yet, so not in the tables: the c model; run `dvc repro parity@c`.\n")
    with pytest.raises(artifacts_table.TableError, match=r"no parity results for any of c, d.*make export"):
        artifacts_table.render(metrics, write_registry(tmp_path, ["c", "d"]))


def test_the_stage_writes_table_plot_and_readme_block_and_nothing_on_error(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "a.json").write_text(json.dumps(parity_result(0.9, 0.88, 1000, 320, False, False)))
    params = write_registry(tmp_path, ["a"])
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{artifacts_table.BEGIN}\nstale\n{artifacts_table.END}\noutro\n")
    table, plot = tmp_path / "out" / "artifacts.md", tmp_path / "out" / "artifacts.csv"
    args = ["python", script("artifacts_table"), "--metrics", str(metrics), "--table", str(table),
            "--plot", str(plot), "--params", str(params)]
    run([*args, "--readme", str(readme)], cwd=REPO)
    text = readme.read_text()
    assert "stale" not in text and text.startswith("intro\n") and text.endswith("outro\n")
    assert artifacts_table.block_of(text) in table.read_text()
    assert plot.read_text().splitlines()[0] == "artifact,test_accuracy,latency_ms,megabytes,throughput_img_s"
    assert "a/tflite_int8,88.0,0.25," in plot.read_text()
    # A README without the markers: an error naming them, and no file is touched.
    table.unlink()
    readme.write_text("no markers here\n")
    proc = run([*args, "--readme", str(readme)], cwd=REPO, check=False)
    assert proc.returncode != 0 and "needs exactly one" in proc.stderr
    assert not table.exists() and readme.read_text() == "no markers here\n"


def test_readme_shows_the_table_the_committed_parity_results_give():
    _, text = artifacts_table.render(REPO / "reports" / "metrics" / "export", REPO / "params.yaml",
                                     REPO / "reports" / "metrics" / "demo")
    readme = (REPO / "docs" / "export.md").read_text()
    assert artifacts_table.block_of(readme) == text, (
        "docs/export.md's artifacts table is stale: run `make readme`")
    assert (REPO / "reports" / "artifacts.md").read_text().endswith(text)


def test_the_page_table_holds_the_default_model_to_its_latency_target(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    page = {"backend": "wasm", "threads": 2, "renderer": None, "load_ms": 812.4, "browser": "headless Chromium 156"}
    accurate, small = parity_result(0.9, 0.9, 1000, 250, True, True), parity_result(0.8, 0.8, 1000, 250, True, True)
    (metrics / "a.json").write_text(json.dumps(accurate))
    (metrics / "b.json").write_text(json.dumps(small))
    pages = tmp_path / "demo"  # demo@NAME's files: the page's numbers, apart from parity's
    pages.mkdir()
    (pages / "a.json").write_text(json.dumps({"page": {**page, "latency_ms": 61.0}}))  # the page's default: the most accurate
    (pages / "b.json").write_text(json.dumps({"page": {**page, "latency_ms": 4.0, "one_thread_latency_ms": 6.5}}))
    registry = write_registry(tmp_path, ["a", "b"])
    _, text = artifacts_table.render(metrics, registry, pages)
    assert "| the a model | wasm, 2 threads | 812 ms | 61.0 ms |  | default model: <= 50 ms **missed** |" in text
    assert "| the b model | wasm, 2 threads | 812 ms | 4.0 ms | 6.5 ms |  |" in text
    assert "Browser: headless Chromium 156." in text
    for name in ("a", "b"):  # a machine without Chromium: the table says so, and why
        (pages / f"{name}.json").write_text(json.dumps({"page": {"skipped": "needs Debian's chromium"}}))
    _, text = artifacts_table.render(metrics, registry, pages)
    assert "The demo page was not measured: needs Debian's chromium." in text
