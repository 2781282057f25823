"""Set-up shared by the SavedModel tests (test_export.py, test_serving.py, test_bad_requests.py):
the TensorFlow-only mark and a tiny exported ranker."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence

import keras
import pytest

#: `pytestmark` of the modules that export or serve SavedModels.
needs_tensorflow = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="SavedModel export and serving need TensorFlow"
)

#: The start of every script run in `keras_free_python()`: run as `python -S` with PYTHONPATH =
#: a copy of site-packages without keras, keras_rankmixer (and its editable-install hook) and
#: tf_keras; check they really fail to import.
NO_KERAS = textwrap.dedent(
    """
    for name in ("keras_rankmixer", "keras", "tf_keras"):
        try:
            __import__(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"{name} is importable: the test would prove nothing")
    """
)


def export_tiny(
    tmp_path_factory,
    folder: str,
    features: Sequence,
    tasks: Sequence[str],
    seed: int,
    /,
    prepare: Callable[[keras.Model], None] | None = None,
    **export_kwargs,
) -> tuple[keras.Model, object, str]:
    """The `tiny` preset ranker on `features` (built after `set_random_seed(seed)`, then
    `prepare(model)` if given) exported as model "ranker" into a new folder `folder`.

    Returns `(model, ExportResult, base folder)`; `export_kwargs` go to `export_saved_model`
    (`features` among them: the arguments before `/` are positional only).
    """
    from keras_rankmixer import build_from_preset
    from keras_rankmixer.export import export_saved_model

    keras.utils.set_random_seed(seed)
    model = build_from_preset("tiny", features, tasks=tasks)
    if prepare is not None:
        prepare(model)
    base = str(tmp_path_factory.mktemp(folder))
    return model, export_saved_model(model, base, "ranker", **export_kwargs), base
