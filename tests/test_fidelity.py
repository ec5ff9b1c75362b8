"""make fidelity (studies/fidelity/fidelity.py): the seed CNN's readings against the seed's numbers,
chosen on val and train accuracy, never on test."""

import fidelity


def row(reading, val, best, train, test):
    return {"convs_per_block": reading, "val": dict(zip(fidelity.EPOCHS, val)), "best_val": best, "best_epoch": 22,
            "train": train, "test": test, "wall_time_s": 1500.0 * reading, "precision": "mixed_bfloat16",
            "environment": {"cpu": "AMD EPYC", "cpu_count": 2}}


def test_the_reading_closest_to_the_seed_on_val_and_train_is_chosen_never_by_test():
    literal = row(1, [0.390, 0.589, 0.776], 0.807, 0.843, 0.8870)  # a test accuracy nearer the seed's
    two = row(2, [0.573, 0.750, 0.873], 0.880, 0.9305, 0.8771)
    chosen = fidelity.choose([literal, two])
    assert chosen is two and two["distance_pp"] < literal["distance_pp"]
    # |0.573 - 0.4008|, |0.750 - 0.7611|, |0.873 - 0.8712|, |0.880 - 0.8712|, |0.9305 - 0.9241|: mean in points
    assert two["distance_pp"] == round((17.22 + 1.11 + 0.18 + 0.88 + 0.64) / 5, 2)
    text = fidelity.markdown([literal, two], chosen)
    assert "| the seed's text reports | 40.08% | 76.11% | 87.12% | 87.12% (23) | 92.41% | | | 86.73% |" in text
    assert "| 2 conv per block (chosen), mixed_bfloat16 | 57.30% | 75.00% | 87.30% | 88.00% (22) | 93.05% | 4.01 pp | 50.0 min" in text


def test_a_run_shorter_than_the_seeds_compares_the_epochs_it_has():
    short = row(1, [0.39, 0.59], 0.6, 0.7, 0.6)
    short["val"] = {1: 0.39, 6: 0.59}
    fidelity.choose([short])
    assert short["distance_pp"] == round(100 * (0.0108 + 0.1711 + 0.2712 + 0.2241) / 4, 2)
