"""REST clients that fetch what a stream missed during a gap (Polygon/Massive trades and quotes, Benzinga news)."""
