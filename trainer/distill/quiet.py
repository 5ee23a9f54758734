"""Keeps the terminal for the trainer's own progress bars and tables: the libraries' per-call progress bars (one
for every `map`, save and load) and their advisory warnings would bury them."""

from __future__ import annotations


def quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
