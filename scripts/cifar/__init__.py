"""Code the pipeline's stages share.

Importing the package also quiets TensorFlow's start-up noise on machines without a GPU: the
CUDA plugin lines ("Unable to register cuDNN factory", "failed call to cuInit", ...) that its
GPU build prints on every import. The first `import tensorflow` (direct, or through keras) runs
with the process's stderr captured; the known noise lines are dropped and anything else is
written back. TensorFlow's own INFO and WARNING logs are hidden (TF_CPP_MIN_LOG_LEVEL=2, unless
it is set already). The environment alone is not enough: with TensorFlow 2.19, even
TF_CPP_MIN_LOG_LEVEL=3 leaves seven lines on every import (absl writes the cuDNN, cuBLAS and
"computation placer" lines before its logging is set up), hence the capture. `CIFAR10_VERBOSE=1 dvc repro` turns all of this off: every log line shows, and so it is on a
machine with an NVIDIA driver, where those lines say why TensorFlow does not use its GPU.
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"Unable to register cu(DNN|FFT|BLAS) factory|failed call to cuInit|Could not find cuda drivers"
    r"|All log messages before absl::InitializeLog|computation placer already registered"
    r"|oneDNN custom operations are on|cpu_feature_guard|^To enable the following instructions"
)


@contextlib.contextmanager
def filtered_stderr(noise=NOISE):
    """Capture file descriptor 2 (C++ logging writes there directly); on exit write back the
    lines that do not match `noise`."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode(errors="replace").splitlines(keepends=True):
                if not noise.search(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A one-shot import hook: the first import of `tensorflow` runs under filtered_stderr, and
    so does the device discovery that prints the cuInit line."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            with filtered_stderr():
                execute(module)
                module.config.list_physical_devices()

        spec.loader.exec_module = exec_module
        return spec


# OpenCV decodes an image whole before the caller can look at its size, up to its own cap of 2**30
# pixels. OpenCV reads the cap from the environment once, when it is first used: set it here,
# before any module of the package imports cv2 (cifar.inference refuses larger images earlier,
# from the header; this is the second line).
OPENCV_MAX_PIXELS = 40_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_MAX_PIXELS))

def _nvidia_machine():
    """An NVIDIA driver is installed: then TensorFlow's CUDA lines are the diagnosis, not noise."""
    import shutil

    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


if os.environ.get("CIFAR10_VERBOSE", "0") in ("", "0") and "tensorflow" not in sys.modules and not _nvidia_machine():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _QuietTensorFlowImport())
