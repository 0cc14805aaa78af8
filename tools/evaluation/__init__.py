"""Evaluation modules of issue #9: the volatility model fit, forecast and risk-flag scoring,
edge skill and micro-price checks. `tools.evaluate` calls them; each also runs on its own."""
