"""Training, every model's: one resumable fit, split by concern.

- `distribute`: the devices and the distribution strategy (one device, mirrored, multi-worker);
- `recipe`: the seed's recipe, the default of a model without its own, and `compile_for`;
- `callbacks`: the callbacks every fit runs (epoch times, the best validated checkpoint, seeds
  per epoch, the resume replay, DVCLive's log);
- `resume`: the state a run keeps between attempts;
- `fit`: the loop itself.

The names used across the project are re-exported here.
"""

from cifar.training.callbacks import (  # noqa: F401
    BestValidatedCheckpoint, EpochSeeds, EpochTimes, LiveLog, ResumeMonitors, read_history)
from cifar.training.distribute import (  # noqa: F401
    cluster_resolver, configure_devices, device_report, make_strategy, nvidia_gpu, worker_role)
from cifar.training.fit import TrainingError, combine_phases, fit  # noqa: F401
from cifar.training.recipe import compile_for, decay_schedule  # noqa: F401
from cifar.training import precision  # noqa: F401
from cifar.training.resume import ResumeState, digest  # noqa: F401
from cifar.outputs import StageError  # noqa: F401
