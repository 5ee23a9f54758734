"""Measure any Hugging Face `Trainer` with one line: `trainer.add_callback(TelemetryCallback())`.

Phases recorded (names as the energy report shows them):
  `train` (on_train_begin .. on_train_end), `epoch` (step = epoch index), `train_step` (on_step_begin ..
  on_step_end, step = the optimizer step just completed, i.e. `state.global_step`), `evaluate` (from the end of the
  step or epoch that triggered it, after its log, to on_evaluate; step = global_step, attrs = the scalar eval
  metrics), `save` (from the step, epoch or evaluation that triggered it to on_save), and instants `log` (the
  logged scalars as attrs).

The Trainer has no hook before an evaluation or a save starts; the callback opens them where the Trainer decides to
run them (its `control` flags, which the DefaultFlowCallback sets before this callback runs). An evaluation called
directly (`trainer.evaluate()`) starts at its first prediction step, so its first batch is not counted.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from trainer.client.buffer import Phase
from trainer.client.client import TelemetryClient
from trainer.client.payload import scalar


class TelemetryCallback(TrainerCallback):
    def __init__(self, client: TelemetryClient | None = None, name: str | None = None, **client_kwargs: Any) -> None:
        """With `client`, marks phases on it (starting it if the caller has not) and leaves stopping it to the
        caller. Without, starts its own client at on_train_begin (name: `name`, else the run name in
        TrainingArguments; config: the TrainingArguments; `client_kwargs`: TelemetryClient's other arguments) and
        stops it at on_train_end with the last evaluation's metrics."""
        self.client = client
        self._owns = client is None
        self._name = name
        self._client_kwargs = client_kwargs
        self._train: Phase | None = None
        self._epoch: Phase | None = None
        self._step: Phase | None = None
        self._eval_from: float | None = None
        self._save_from: float | None = None
        self._evaluating = False  # between the first prediction step and on_evaluate
        self._epoch_index = 0
        self.eval_metrics: dict[str, Any] = {}
        self.train_metrics: dict[str, Any] = {}

    def _now(self) -> float:
        assert self.client is not None
        return self.client._instant()

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self._owns and (self.client is None or self.client.status is not None):  # none yet, or a past train()'s
            name = self._name or getattr(args, "run_name", None) or "hf-trainer"
            self.client = TelemetryClient(name=name, config=args, **self._client_kwargs)
        assert self.client is not None
        self.client.start()  # a no-op for a client already started
        self._epoch_index = 0
        self._train = self.client.begin("train", step=state.global_step, max_steps=state.max_steps)

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.client is not None:
            self._epoch = self.client.begin("epoch", step=self._epoch_index)

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                      **kwargs: Any) -> None:
        if self.client is not None:
            self._step = self.client.begin("train_step")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.client is None or self._step is None:
            return
        self._step.step = state.global_step
        self.client.end(self._step)
        self._step = None
        self._plan(control)

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.client is None or self._epoch is None:
            return
        self.client.end(self._epoch)
        self._epoch = None
        self._epoch_index += 1
        self._plan(control)

    def _plan(self, control: TrainerControl) -> None:
        """After a step or an epoch the Trainer logs, then evaluates, then saves, as its control flags say."""
        now = self._now()
        self._eval_from = now if control.should_evaluate else None
        self._save_from = now if control.should_save and not control.should_evaluate else None

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.client is None:
            return
        values = {k: scalar(v) for k, v in (logs or {}).items()}
        self.client.mark("log", step=state.global_step, **values)
        # The Trainer logs its training summary (train_loss, train_runtime, ...) just before it ends: kept for the run.
        self.train_metrics.update({k: v for k, v in values.items() if k.startswith("train_")})
        if self._evaluating:  # an evaluation logging its metrics
            return
        now = self._now()
        if self._eval_from is not None:  # the evaluation starts after the step's log
            self._eval_from = now
        elif self._save_from is not None:
            self._save_from = now

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                           **kwargs: Any) -> None:
        if self.client is None or self._evaluating:
            return
        self._evaluating = True
        if self._eval_from is None:  # trainer.evaluate() called directly
            self._eval_from = self._now()

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if self.client is None:
            return
        end = self._now()
        start = self._eval_from if self._eval_from is not None else end
        attrs = {k: scalar(v) for k, v in (metrics or {}).items()}
        self.client.record(("evaluate", start, end, state.global_step, attrs or None))
        self.eval_metrics = attrs
        self._eval_from = None
        self._evaluating = False
        if control.should_save:  # the save follows the evaluation
            self._save_from = end

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if self.client is None:
            return
        end = self._now()
        start = self._save_from if self._save_from is not None else end
        self.client.record(("save", start, end, state.global_step, None))
        self._save_from = None

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        if self.client is None:
            return
        if self._train is not None:
            self._train.attrs = {**(self._train.attrs or {}), "steps": state.global_step}
            self.client.end(self._train)
            self._train = None
        if self._owns:
            self.client.stop(metrics={**self.train_metrics, **self.eval_metrics})
