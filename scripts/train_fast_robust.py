"""Stage `train_fast_robust`: the fast CNN trained on AugMix for corrupted photos (registry entry `fast_robust`), resumable.

Usage: python scripts/train_fast_robust.py --name fast_robust --data data/prepared/cifar10.npz \
           --model models/trained/fast_robust.keras --history reports/history/fast_robust.csv \
           --metrics reports/metrics/train/fast_robust.json --live reports/live/fast_robust --state models/.resume

The fast model's network and recipe (cifar.models.fast), its settings params.yaml
`train_fast_robust`: the same as `train_fast` but for the augmentation, flip_translate then AugMix
(cifar.augmix), whose operations are disjoint from the robustness stage's corruptions. Writes
what train_fast writes; a killed run continues from its last finished epoch.
"""

from cifar import stage

if __name__ == "__main__":
    stage.main("train_fast_robust", lambda: stage.train(__doc__.splitlines()[0]))
