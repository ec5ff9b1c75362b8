"""Training, every model's: one resumable fit (`fit`), its devices and strategy (`distribute`), the
seed's recipe (`recipe`), the callbacks, the resume state and the precision."""

from cifar.training.callbacks import (  # noqa: F401
    BestValidatedCheckpoint, EpochSeeds, EpochTimes, LiveLog, ResumeMonitors, cut_history, read_history)
from cifar.training.distribute import (  # noqa: F401
    cluster_resolver, configure_devices, device_report, make_strategy, nvidia_gpu, worker_role)
from cifar.training.fit import TrainingError, combine_phases, fit  # noqa: F401
from cifar.training.recipe import compile_for, decay_schedule  # noqa: F401
from cifar.training import precision  # noqa: F401
from cifar.training.resume import ResumeState, digest  # noqa: F401
from cifar.outputs import StageError  # noqa: F401
