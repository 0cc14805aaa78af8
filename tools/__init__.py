"""Tools, the top layer: command-line programs.

What lives here: `replay` (captures to NDJSON/Parquet), `recorder`, the local exchange used to
test live mode (`fake_exchange/`), the market simulator (`simulate/`), the evaluation report
(`evaluate/`), the benchmarks (`bench`, `bench_live`, `bench_api`, `bench_soak`) and
`readme_example`. Each runs as ``python -m tools.<name>``.

What it may import: every layer below (`connectors`, `operators`, `flows`, `api`); nothing
imports `tools` but tests and other tools.
"""
