"""``python -m nsi_widgets``: the command line (also under ``torchrun ... -m nsi_widgets``)."""
import sys

from .cli import main

sys.exit(main())
