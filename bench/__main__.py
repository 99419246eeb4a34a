"""``python -m bench``: the per-step benchmark suite (see bench/run.py)."""
from bench.run import main

raise SystemExit(main())
