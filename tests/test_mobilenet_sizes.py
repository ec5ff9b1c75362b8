"""studies/mobilenet_sizes/mobilenet_sizes.py: the sweep's table comes from the experiments' own metrics."""

import mobilenet_sizes


def test_experiment_metrics_are_found_by_name_in_dvc_exp_show():
    def exp(name, accuracy):
        metrics = {mobilenet_sizes.METRICS: {"data": {"mobilenet": {"best_val_accuracy": accuracy}}}}
        return {"revs": [{"rev": "abc", "name": name, "data": {"metrics": metrics, "params": {}}}]}

    shown = [{"rev": "workspace", "name": None, "data": {"metrics": {}}},
             {"rev": "HEAD", "experiments": [exp("mobilenet-96px", 0.91), exp("mobilenet-32px", 0.7), exp("other", 0.5)]}]
    found = mobilenet_sizes.experiment_metrics(shown, {"mobilenet-32px", "mobilenet-96px", "mobilenet-160px"})
    assert found == {"mobilenet-96px": {"best_val_accuracy": 0.91}, "mobilenet-32px": {"best_val_accuracy": 0.7}}


def test_the_size_is_selected_on_val_never_on_test():
    rows = [{"input_size": 96, "best_val_accuracy": 0.918, "test_accuracy": 0.930, "train_minutes": 9.6},
            {"input_size": 128, "best_val_accuracy": 0.929, "test_accuracy": 0.925, "train_minutes": 20.0},
            {"input_size": 160, "best_val_accuracy": 0.929, "test_accuracy": 0.931, "train_minutes": 31.0}]
    chosen = mobilenet_sizes.select(rows)
    assert chosen["input_size"] == 128  # the best val; the tie goes to the faster; test plays no part
    assert [r["selected"] for r in rows] == [False, True, False]
