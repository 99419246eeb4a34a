"""``python -m mfkern.distributed``: the sharded trainer's command line (:func:`mfkern.distributed.train_main`)."""
import sys

from .cli import train_main

sys.exit(train_main())
