"""`python -m trainer`: the distillation trainer's command line."""

import sys

from trainer.cli import main

sys.exit(main())
