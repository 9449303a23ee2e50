"""``python -m elsmachine.bench CONFIG_JSON``: time one configuration (the benchmark's child)."""

import json
import sys

from .runner import BenchConfig, run_one

print(json.dumps(run_one(BenchConfig(**json.loads(sys.argv[1])))))
