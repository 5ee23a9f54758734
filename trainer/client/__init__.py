"""joulemeter's training-side client: register a run with the node's daemon and mark its phases.

    from trainer.client import TelemetryClient

    with TelemetryClient(name="bert-to-distilbert", config=hparams) as tc:
        with tc.phase("teacher_forward", step=step):
            ...

`trainer.client.hf_callback.TelemetryCallback` does the same for a Hugging Face `Trainer`;
`python -m trainer.client replay FILE` sends markers spooled while the daemon was away.
"""

from trainer.client.buffer import Phase
from trainer.client.client import TelemetryClient

__all__ = ["Phase", "TelemetryClient"]
