"""Root pytest set-up: the package's docstring examples are collected as tests (`--doctest-modules`).

Modules that need an optional extra or a different Keras are left out of the doctest run here
(their own tests in tests/ cover them, with the set-up they need).
"""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite compiles hundreds of tiny XLA programs (on JAX every eager op is one; on TensorFlow
# each `jit_compile=True` step, and the subprocesses inherit this), and at test sizes LLVM's
# optimisation passes are most of their cost: level 0 took the JAX run's CPU time from 419 to
# 228 s (benchmarks/RESULTS.md, "Test-suite time"). Set here, before TensorFlow or JAX
# reads XLA_FLAGS; a level already in XLA_FLAGS wins (e.g. `--xla_backend_optimization_level=2`
# to test the default one).
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]
    ).strip()

import keras  # noqa: E402
import pytest  # noqa: E402

# keras_rankmixer.tfrs needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported.
collect_ignore = ["keras_rankmixer/tfrs.py"]
if importlib.util.find_spec("tensorflow_serving") is None:
    collect_ignore.append("keras_rankmixer/serving.py")
# SavedModel export and serving are TensorFlow features: their examples run on TensorFlow only.
if keras.backend.backend() != "tensorflow":
    collect_ignore += ["keras_rankmixer/export.py", "keras_rankmixer/serving.py"]


@pytest.fixture(autouse=True)
def _doctest_keras_state(request):
    """Every docstring example starts from float32 and a fixed seed, like the unit tests."""
    if isinstance(request.node, pytest.DoctestItem):
        keras.config.set_dtype_policy("float32")
        keras.utils.set_random_seed(1234)
    yield
