"""The training side of joulemeter: the telemetry client that marks phases, and the distillation trainer."""
