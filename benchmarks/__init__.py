"""The workbench: benchmarks of stephctl, run as modules from the repository root.

    python -m benchmarks.run [--quick]            # every bench_*.py, one JSON
    python -m benchmarks.bench_train --quick      # one of them

They import stephctl's public API only (the installed ``steph`` and ``stephctl`` packages) and
each other through this package; figures are documented in docs/benchmarks.md, earlier sessions'
results in ``benchmarks/archive/``.
"""
