"""Code the pipeline's stages share.

Importing it quiets TensorFlow's start-up noise on machines without a GPU. TF_CPP_MIN_LOG_LEVEL=2
alone is not enough: TensorFlow 2.19 still prints seven CUDA-plugin lines on every import
(absl writes them before its logging is set up), so the first `import tensorflow` runs with
stderr captured and the known noise lines dropped. `CIFAR10_VERBOSE=1` turns this off, and so
does an NVIDIA driver, where those lines say why TensorFlow does not use its GPU."""

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
    """Capture file descriptor 2 (C++ logging writes there); on exit write back what is not `noise`."""
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
    """The first import of `tensorflow`, and its device discovery, under filtered_stderr."""

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
    import shutil

    return os.path.exists("/dev/nvidia0") or shutil.which("nvidia-smi") is not None


if os.environ.get("CIFAR10_VERBOSE", "0") in ("", "0") and "tensorflow" not in sys.modules and not _nvidia_machine():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.meta_path.insert(0, _QuietTensorFlowImport())
