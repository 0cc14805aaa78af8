"""A local fake Hyperliquid exchange: the public market-data WebSocket and ``POST /info``.

It serves a feed (a recorded capture or the seeded simulator, `tools.simulate`) over the same
protocol as ``wss://api.hyperliquid.xyz/ws`` and ``https://api.hyperliquid.xyz/info``, following
the measured behaviour of the real server (``../shared/reference/hyperliquid-api.md`` §0–§4), so the
project's live ingestion can be tested offline and a newcomer can try live mode without internet.
One process, one port: WebSocket ``/ws`` and ``POST /info``.

WebSocket ``/ws``: an optional legacy greeting ``Websocket connection established.`` (plain
text) on connect; ``subscribe``/``unsubscribe`` acks and errors; ``ping`` → ``{"channel":"pong"}``;
bad requests (non-JSON, unknown method or type, coin arrays, missing fields) →
``{"channel":"error","data":"Error parsing JSON into valid websocket request: <req>"}`` (the
socket stays open); channels ``trades`` (the first frame after each subscribe replays the coin's
last 30 trades), ``l2Book``, ``bbo``, ``candle`` (any of the 14 intervals), ``activeAssetCtx``
and ``allMids``; ``l2Book``, ``bbo``, ``candle``, ``activeAssetCtx`` and ``allMids`` send the
latest value right after the ack when one exists (the real ``l2Book`` does; assumed for the
others). Exchange times are re-stamped to the wall clock, so data looks fresh. A connection the
server has sent nothing to for ``idle_timeout_s`` (60 s) is dropped (1006).

The package, by concept (each module's docstring has the details):

- `protocol`: message texts, subscriptions (`Sub`) and client requests, number formatting;
- `feeds`: where frames come from (`CaptureFeed`, `SimFeed`, `ListFeed`) and the `Universe`;
- `pump`: replays a feed paced by its clock, pass after pass (warm-up, looping);
- `market`: the state the feed builds and the streams served from it (trades, l2Book, bbo,
  activeAssetCtx, allMids; re-stamping); `candles`: the candles of every interval;
- `subscriptions`: acks, the route table and the fan-out; `connections`: the client sockets;
- `faults`: `Faults` and the injector (drops, stalls, silence, malformed/unknown/error frames);
  `inject`: the ``--inject`` schedule of verbatim messages;
- `info`: ``POST /info`` and WebSocket ``post``; `limits`: the REST weight budget and the other
  limits; `stats`: the counters;
- `hub`: wires the parts together on the event loop; `server`: `FakeExchange` (uvicorn on a
  thread); `cli`: the command line (``__main__`` runs it).

Imports: `tools` is the top layer; this package may import `connectors`, `operators`, `flows`,
`api` and other tools (it uses `connectors` to read captures, `flows.startup` to check the port
and `tools.simulate`); only tests and other tools import it. Inside, imports go one way:
`protocol`, `limits` and `stats` import none of the others; then `feeds` and `faults`;
`connections` (and `inject` on it); `subscriptions`; `candles`; `market`; `pump` and `info`;
`hub`, which wires them all; `server`, the only user of `hub`; and `cli`, the only user of
`server` besides this ``__init__``.

Known differences from the real server:

- every ``l2Book`` variant is pushed at the feed's cadence (real 2026: default ~5.4 s, ``fast``
  ~0.54 s); aggregation merges the feed's ≤ 20 levels (so fewer levels) and adds no ``spread``;
- snapshots right after the ack for ``bbo``/``candle``/``activeAssetCtx``/``allMids`` are assumed
  (confirmed only for ``trades`` and ``l2Book``);
- no WebSocket limits (10 connections, 1000 subscriptions, 2000 messages/min) and no in-flight
  ``post`` limit; only the REST weight budget (per client IP, sliding 60 s) is enforced; the 429
  body text is a guess;
- first dex only: subscription types other than the six channels (user streams,
  ``fastAssetCtxs``, ``allDexsAssetCtxs``, …) get the parse error, ``allMids`` with a non-empty
  ``dex`` drops the socket, and ``meta`` lists no HIP-3/spot names, ``marginTables`` is empty;
- ``szDecimals``/``maxLeverage`` come from a small table or the sizes seen in the feed;
- at ``speed`` ≠ 1 exchange times are scaled (``1/speed``) to stay near the wall clock, so a candle
  bucket holds ``speed`` × more market time; relayed feed candles collapse into the current bucket;
- trades older than the last one already sent for a coin are dropped (loop passes, replays inside
  a capture), as are duplicates by ``(coin, time, tid)``;
- a drop closes the TCP connection without a close frame at once (real: ~0.1 s after the bad
  subscription); the idle timeout counts only messages the server sends (not WS pong frames).

Usage::

    python -m tools.fake_exchange --simulate --coins BTC,ETH,SOL --port 8765
    python -m tools.fake_exchange --capture data/sample.ndjson.gz --loop --speed 2 \\
        --silence l2Book:BTC --silence-after 30 --drop-every 120
    python -m tools.fake_exchange --simulate --inject bad_frames.ndjson

    with FakeExchange(SimFeed(SimConfig(coins=("BTC",))), faults=Faults(unknown_every=50)) as ex:
        ...  # connect to ex.ws_url, POST to ex.info_url
"""

from tools.fake_exchange.cli import build_parser, exchange_from_args, main
from tools.fake_exchange.faults import Faults
from tools.fake_exchange.feeds import CaptureFeed, Feed, FeedInfo, ListFeed, SimFeed
from tools.fake_exchange.inject import Injection, load_injections
from tools.fake_exchange.protocol import GREETING
from tools.fake_exchange.server import FakeExchange
from tools.fake_exchange.stats import ExchangeStats

__all__ = [
    "GREETING",
    "CaptureFeed",
    "ExchangeStats",
    "FakeExchange",
    "Faults",
    "Feed",
    "FeedInfo",
    "Injection",
    "ListFeed",
    "SimFeed",
    "build_parser",
    "exchange_from_args",
    "load_injections",
    "main",
]
