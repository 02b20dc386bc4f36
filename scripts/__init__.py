"""Operating woof: the stack supervisor behind `woof serve` (serve.py), the A/B benchmark behind `woof bench`
(bench.py), the gateway load test, and the report scripts (each runnable as `python scripts/NAME.py`)."""
