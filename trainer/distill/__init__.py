"""Knowledge distillation of Hugging Face sequence classifiers, every phase measured by the telemetry daemon."""
