"""``python -m llama2_lab.cli``: the ``llama2-lab`` command (what ``torchrun ... -m llama2_lab.cli`` runs)."""

import sys

from . import main

sys.exit(main())
