"""Data: the synthetic click-log generator (and, later, file readers)."""

from keras_rankmixer.data.synthetic import SyntheticClickData, make_click_data

__all__ = ["SyntheticClickData", "make_click_data"]
