"""`fit` callbacks of a resumable run: exact-AUC early stopping, best weights, history, backup.

Resume: `training_callbacks` includes `keras.callbacks.BackupAndRestore(<run_dir>/backup)`,
which saves the model, optimizer and epoch counter at the end of every epoch. If the
process is interrupted (Ctrl-C, killed), running the same command again restores that state
and continues from the next epoch; `HistoryLogger` appends to `history.json`, so the history
of the interrupted epochs is kept. When training finishes, Keras deletes the backup.

Validation AUC: Keras' `AUC` metric is a 200-threshold approximation; `ExactAUC` computes the
exact (rank-based, ties averaged) AUC and logloss of the validation set after every epoch and
logs them as `val_auc_exact` / `val_logloss_exact`, which early stopping monitors.
"""

from __future__ import annotations

import itertools
import os
import time

import keras
import numpy as np

from keras_rankmixer.layers._checks import check_positive
from keras_rankmixer.training.metrics import logloss, predict_with_labels, roc_auc
from keras_rankmixer.training.run_dir import (
    BACKUP_DIR,
    BEST_WEIGHTS_FILE,
    HISTORY_FILE,
    PLOT_FILE,
    load_history,
    plot_history,
    write_json,
)


class ExactAUC(keras.callbacks.Callback):
    """Log the exact validation AUC/logloss as `val_auc_exact` / `val_logloss_exact`.

    Put it before `EarlyStopping` / `ModelCheckpoint` in the callback list so they can monitor
    it. With several tasks the logged value is the mean over tasks (and each task's value is
    logged as `val_<task>_auc_exact`).
    """

    def __init__(
        self, validation_data, batch_size: int = 8192, validation_steps: int | None = None
    ) -> None:
        super().__init__()
        check_positive("validation_steps", validation_steps, allow_none=True, integer=True)
        self.validation_data = validation_data
        self.batch_size = batch_size
        self.validation_steps = validation_steps
        self._iterator = None

    def _batches(self):
        """The validation data of one epoch: with `validation_steps` (a repeating dataset,
        `data.repeat_epochs`), that many batches of one iterator kept across epochs."""
        if self.validation_steps is None:
            return self.validation_data
        if self._iterator is None:
            self._iterator = iter(self.validation_data)
        return self._take(self._iterator, self.validation_steps)

    @staticmethod
    def _take(iterator, steps: int):
        n = 0
        for batch in itertools.islice(iterator, steps):
            n += 1
            yield batch
        if n < steps:
            raise ValueError(
                f"`validation_steps={steps}`, but the validation data gave {n} batch(es) this "
                "epoch: pass a repeating dataset (`keras_rankmixer.data.repeat_epochs`)."
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        labels, preds = predict_with_labels(self.model, self._batches(), self.batch_size)
        aucs, losses = [], []
        for task in labels:
            auc = roc_auc(labels[task], preds[task])
            loss = logloss(labels[task], preds[task])
            if len(labels) > 1:
                logs[f"val_{task}_auc_exact"] = auc
                logs[f"val_{task}_logloss_exact"] = loss
            aucs.append(auc)
            losses.append(loss)
        logs["val_auc_exact"] = float(np.mean(aucs))
        logs["val_logloss_exact"] = float(np.mean(losses))


class KeepBest(keras.callbacks.Callback):
    """Save the weights whenever `monitor` beats every earlier epoch; restore them at the end.

    Unlike `EarlyStopping(restore_best_weights=True)` this survives a resume: the best value
    so far is read from the run's history file (all epochs, including those before an
    interruption) and the best weights live on disk.
    """

    def __init__(self, weights_path: str, history_path: str, monitor: str, mode: str) -> None:
        super().__init__()
        self.weights_path = weights_path
        self.history_path = history_path
        self.monitor = monitor
        self.mode = mode

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        earlier = [
            h[self.monitor]
            for h in load_history(self.history_path)
            if h.get("epoch", -1) < epoch and h.get(self.monitor) is not None
        ]
        better = min if self.mode == "min" else max
        if not earlier or better(earlier + [float(value)]) == float(value):
            self.model.save_weights(self.weights_path)

    def on_train_end(self, logs=None) -> None:
        if os.path.exists(self.weights_path):
            self.model.load_weights(self.weights_path)


class HistoryLogger(keras.callbacks.Callback):
    """Append each epoch's logs (plus epoch index, wall time, learning rate) to a JSON file.

    On resume, epochs already in the file at or after the resumed epoch are replaced, so the
    file always holds one entry per completed epoch. Optionally redraws the curves PNG.
    """

    def __init__(self, path: str, plot_path: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.plot_path = plot_path
        self._start = None

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self._start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        history = load_history(self.path)
        history = [h for h in history if h.get("epoch", -1) < epoch]
        entry = {"epoch": int(epoch)}
        for k, v in (logs or {}).items():
            try:
                entry[k] = float(v)
            except (TypeError, ValueError):
                continue
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if lr is not None:
            try:
                entry["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
            except (TypeError, ValueError):
                pass
        entry["epoch_seconds"] = round(time.time() - (self._start or time.time()), 3)
        history.append(entry)
        write_json(self.path, history)
        if self.plot_path and plot_history(history, self.plot_path) is None:
            self.plot_path = None  # no matplotlib: one note, not one per epoch


def training_callbacks(
    run_dir: str,
    validation_data=None,
    *,
    monitor: str = "val_auc_exact",
    patience: int | None = 2,
    reduce_lr_on_plateau: bool = False,
    validation_steps: int | None = None,
    resume: bool = True,
    plot: bool = True,
    min_delta: float = 1e-4,
) -> list[keras.callbacks.Callback]:
    """The callbacks of a resumable run: exact validation AUC, early stopping, history, backup.

    Order matters: `ExactAUC` first (it adds `val_auc_exact` to the logs), then
    `ReduceLROnPlateau` / `EarlyStopping` / `KeepBest` (which read it; at the end of training
    the best epoch's weights are restored), then `HistoryLogger` and last
    `BackupAndRestore` (so a restored run has the full history on disk).

    Args:
        run_dir: The run directory.
        validation_data: `(features, labels)` or a dataset; None disables validation callbacks.
        monitor: The logged value to maximise for early stopping.
        patience: Early-stopping patience in epochs (None: no early stopping).
        reduce_lr_on_plateau: Divide the learning rate by 10 when `monitor` does not improve
            (as FuxiCTR/BARS do).
        validation_steps: With a repeating validation dataset (`data.repeat_epochs`), its
            batches per pass: each epoch scores that many through one iterator.
        resume: Add `BackupAndRestore(run_dir/backup)`.
        plot: Redraw `curves.png` after every epoch.
        min_delta: The smallest change of `monitor` that counts as an improvement, for early
            stopping and the learning-rate schedule alike (default 1e-4, Keras's
            `ReduceLROnPlateau` default: without it a run whose AUC creeps up by 1e-6 an
            epoch at the minimum learning rate never stops).

    Example:

    >>> import tempfile
    >>> [type(c).__name__ for c in training_callbacks(tempfile.mkdtemp(), ({}, {}))]
    ['ExactAUC', 'EarlyStopping', 'KeepBest', 'HistoryLogger', 'BackupAndRestore']
    """
    os.makedirs(run_dir, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = []
    mode = "min" if "loss" in monitor else "max"
    if validation_data is not None:
        callbacks.append(ExactAUC(validation_data, validation_steps=validation_steps))
        if reduce_lr_on_plateau:
            callbacks.append(
                keras.callbacks.ReduceLROnPlateau(
                    monitor=monitor,
                    mode=mode,
                    factor=0.1,
                    patience=1,
                    min_lr=1e-6,
                    min_delta=min_delta,
                    verbose=1,
                )
            )
        if patience is not None:
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=monitor, mode=mode, patience=patience, min_delta=min_delta, verbose=1
                )
            )
        callbacks.append(
            KeepBest(
                os.path.join(run_dir, BEST_WEIGHTS_FILE),
                os.path.join(run_dir, HISTORY_FILE),
                monitor,
                mode,
            )
        )
    callbacks.append(
        HistoryLogger(
            os.path.join(run_dir, HISTORY_FILE),
            os.path.join(run_dir, PLOT_FILE) if plot else None,
        )
    )
    if resume:
        callbacks.append(keras.callbacks.BackupAndRestore(os.path.join(run_dir, BACKUP_DIR)))
    return callbacks
