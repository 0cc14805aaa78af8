"""Seeded Hyperliquid market simulator: scripted regimes → a capture in the exchange's wire format.

The simulator replays nothing: it invents a market. Each coin follows a script of phases (one
regime label each); the price process, aggressor flow, spread, depth, trade rate, open interest and
premium follow the phase, and every stream is emitted exactly as Hyperliquid's public WebSocket
sends it (``../shared/reference/hyperliquid-api.md`` §1.3–1.4), wrapped in the archive envelope
``{"time": "<receive time, ISO UTC, ns>", "ver_num": 1, "raw": <frame>}``.

What a capture holds (per coin unless noted):

- ``subscriptionResponse`` acks first (trades, l2Book, bbo, candle 1m, activeAssetCtx per coin,
  then allMids), all before any data;
- ``trades``: the first frame replays the last 30 trades (times before the start, several block
  times in one frame); every later frame holds the fills of one ~100 ms block (one ``time``);
  ``tid`` is unique per coin across the whole capture (the replay included);
- ``bbo`` on every block where the best bid/ask (price, size or order count) changed;
- ``l2Book`` 20 levels a side, all coins on one push clock (``book_interval_ms``);
- ``candle`` 1m, re-pushed about once a second while it changes; the last push of a bucket equals
  the aggregate of that bucket's trades;
- ``activeAssetCtx`` about once a second, ``allMids`` (global) about every 5 s, ``pong`` (global)
  every 50 s; these three carry no exchange time.

Receive time = generation time + a simulated latency in [150, 500) ms; frames come out in receive
order and each stream (channel, coin) is strictly increasing in receive time.

The package, by concept (each module's docstring has the details):

- `regimes`: the labels, `Phase` scripts and how each label shapes the market;
- `config`: the coins' market parameters, `SimConfig` and the ground truth (`truth`);
- `wire`: the exchange's number strings;
- `book`: one coin's order book (touch, deeper levels; ``bbo``/``l2Book`` frames);
- `coin`: one coin's market model (price, trades, candles, asset context);
- `simulator`: the block clock, the periodic streams and receive-time order (`generate`);
- `market`: a whole market at once, N coins as renamed four-coin simulations merged by receive
  time (`generate_market`, ``--market N``);
- `capture`: the frame writers (`write_capture`); `cli`: the command line (``__main__`` runs it).

Imports: `tools` is the top layer; this package imports only the standard library and
``orjson``, and its command line `flows.startup`'s output-path check (it may import `connectors`,
`operators`, `flows` and `api`);
only tests and other tools (the fake exchange, the evaluation, the benchmarks) import it. Inside,
each module imports only those listed before it.

Usage::

    python -m tools.simulate --out data/sample.ndjson.gz --seconds 600 --seed 7 \\
        --coins BTC,ETH,SOL --book-interval-ms 1000 --truth data/sample.truth.json
"""

from tools.simulate.capture import write_capture
from tools.simulate.cli import main
from tools.simulate.config import SimConfig, truth
from tools.simulate.regimes import (
    CHAOTIC,
    DEFAULT_SCRIPTS,
    LABELS,
    LIQUIDATION_RISK,
    MEAN_REVERTING,
    TRENDING,
    Phase,
)
from tools.simulate.simulator import generate

__all__ = [
    "CHAOTIC",
    "DEFAULT_SCRIPTS",
    "LABELS",
    "LIQUIDATION_RISK",
    "MEAN_REVERTING",
    "TRENDING",
    "Phase",
    "SimConfig",
    "generate",
    "main",
    "truth",
    "write_capture",
]
