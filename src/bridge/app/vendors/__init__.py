"""One module per vendor, each ending in its ``SPEC``; ``bridge.app.registry`` lists them."""
