"""SparseMoE observability: a `fit` callback for the logs / History and the Fig. 4 plot.

`SparseMoE` writes its measurements into non-trainable variables in every training call
(`active_ratio`, per-token `router_active_ratio`, `l1_lambda`). `MoEMonitor` reads them:

- at the end of every epoch it adds, for every SparseMoE layer (keyed by the layer's path,
  e.g. `block_0/moe`), `moe/<path>/active_ratio`, `moe/<path>/l1_lambda` and (with
  `per_token=True`) `moe/<path>/token_<t>/active_ratio` to the epoch logs, so they show up in
  the progress bar, in `History.history` and in any logger that follows (CSVLogger,
  TensorBoard). The values are the epoch mean of the per-batch measurements it sampled, and
  the last lambda.
- every `every_n_batches` training batches it records a row (step, lambda, per-token active
  ratio per layer) in `self.records`, the data for `plot_active_ratio` (paper Fig. 4).

On the JAX backend the model variables are only synced back at the end of an epoch;
when sampling batches the monitor calls `model.jax_state_sync()` first (a device-to-host copy
of the state every `every_n_batches` steps; raise it for large models).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_rankmixer.layers.sparse_moe import SparseMoE
from keras_rankmixer.training.run_dir import pyplot


def find_moe_layers(model: keras.Model) -> dict[str, SparseMoE]:
    """All `SparseMoE` layers of `model`, keyed by their path (e.g. `"block_0/moe"`)."""
    found = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, SparseMoE):
            path = layer.path if getattr(layer, "path", None) else layer.name
            found[path] = layer
    return found


class MoEMonitor(keras.callbacks.Callback):
    """Puts SparseMoE active ratios and lambdas into `fit` logs and records them per step.

    Args:
        every_n_batches: Sample the measurements every this many training batches (>= 1).
        per_token: Also log the active ratio of every token (T entries per layer).

    Example:

    >>> import numpy as np, keras
    >>> from keras_rankmixer.layers import SparseMoE
    >>> inputs = keras.Input((4, 8))
    >>> out = keras.layers.Dense(1)(keras.layers.Flatten()(SparseMoE(4, name="moe")(inputs)))
    >>> model = keras.Model(inputs, out)
    >>> model.compile("adam", "mse")
    >>> monitor = MoEMonitor(every_n_batches=1)
    >>> history = model.fit(np.ones((16, 4, 8)), np.ones((16, 1)), batch_size=8, verbose=0,
    ...                     callbacks=[monitor])
    >>> sorted(k for k in history.history if k.startswith("moe/"))
    ['moe/moe/active_ratio', 'moe/moe/l1_lambda']
    """

    def __init__(self, every_n_batches: int = 10, per_token: bool = False) -> None:
        super().__init__()
        if not isinstance(every_n_batches, int) or every_n_batches < 1:
            raise ValueError(
                f"`every_n_batches` must be a positive int, got every_n_batches={every_n_batches!r}."
            )
        self.every_n_batches = every_n_batches
        self.per_token = bool(per_token)
        self.records: list[dict] = []
        self._step = 0
        self._epoch_samples: dict[str, list[np.ndarray]] = {}

    def _layers(self) -> dict[str, SparseMoE]:
        if not hasattr(self, "_moe_layers"):
            self._moe_layers = find_moe_layers(self.model)
        return self._moe_layers

    def _sync(self) -> None:
        if keras.backend.backend() == "jax" and hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()

    def _sample(self) -> dict[str, dict]:
        row = {}
        for path, layer in self._layers().items():
            stats = layer.moe_stats()
            row[path] = stats
            self._epoch_samples.setdefault(path, []).append(
                np.asarray(stats["router_active_ratio"], dtype="float64")
            )
        return row

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self._epoch_samples = {}

    def on_train_batch_end(self, batch, logs=None) -> None:
        self._step += 1
        if self._step % self.every_n_batches:
            return
        self._sync()
        row = self._sample()
        self.records.append(
            {
                "step": self._step,
                **{
                    path: {
                        "l1_lambda": s["l1_lambda"],
                        "active_ratio": s["active_ratio"],
                        "router_active_ratio": s["router_active_ratio"],
                    }
                    for path, s in row.items()
                },
            }
        )

    def on_epoch_end(self, epoch, logs=None) -> None:
        if logs is None:
            return
        for path, layer in self._layers().items():
            stats = layer.moe_stats()  # variables are synced at epoch end on every backend
            samples = self._epoch_samples.get(path) or [
                np.asarray(stats["router_active_ratio"], dtype="float64")
            ]
            per_token = np.mean(np.stack(samples), axis=0)
            logs[f"moe/{path}/active_ratio"] = float(per_token.mean())
            logs[f"moe/{path}/l1_lambda"] = stats["l1_lambda"]
            if self.per_token:
                for t, value in enumerate(per_token):
                    logs[f"moe/{path}/token_{t}/active_ratio"] = float(value)


def plot_active_ratio(
    records: Sequence[dict] | MoEMonitor,
    path: str,
    layers: Sequence[str] | None = None,
    target: float | None = None,
    title: str | None = None,
) -> str | None:
    """Plot active ratio per token over training steps (paper Fig. 4) to a PNG at `path`.

    Args:
        records: `MoEMonitor.records` (or the monitor itself).
        path: Output PNG file.
        layers: Layer paths to plot (one panel each); default all in the records.
        target: Draw the target active ratio as a dashed line.
        title: Figure title.

    Returns:
        `path`, or None when matplotlib (the `plots` extra) is missing: then nothing is
        drawn and a one-line note says so.
    """
    if isinstance(records, MoEMonitor):
        records = records.records
    if not records:
        raise ValueError("`records` is empty: run fit with a MoEMonitor first.")
    plt = pyplot(path)
    if plt is None:
        return None
    names = list(layers) if layers else [k for k in records[0] if k != "step"]
    steps = [r["step"] for r in records]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        ratios = np.array([r[name]["router_active_ratio"] for r in records])
        for t in range(ratios.shape[1]):
            ax.plot(steps, ratios[:, t], lw=1, label=f"token {t}")
        if target is not None:
            ax.axhline(target, color="k", ls="--", lw=1, label="target")
        ax.set_title(name)
        ax.set_xlabel("training step")
        ax.set_ylabel("active ratio")
        ax.set_ylim(0, 1)
    axes[0][-1].legend(fontsize=6, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
