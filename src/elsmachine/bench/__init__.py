"""The benchmark: configurations and the child-process runner (:mod:`.runner`), the work each
denoiser call does (:mod:`.work`), and the straightforward baseline (:mod:`.baseline`)."""

from .runner import BENCH_MACHINES, BenchConfig, bench_grid, run_benchmark

__all__ = ["BENCH_MACHINES", "BenchConfig", "bench_grid", "run_benchmark"]
