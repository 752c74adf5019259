"""One module per vendor, each ending in its ``FeedSpec`` (``SPEC``); ``bridge.app.registry`` lists them.

A vendor module holds, in this order: its settings class (fields declared with ``setting(...)``,
read from ``BRIDGE_<VENDOR>_<FIELD>``; ``needed=`` names what the feed cannot run without,
``selects=True`` the settings whose presence turns the feed on), the factories of its feed and
normalizer, its ``bridge check`` probe, its simulator for ``bridge demo``/``bridge simulate``, and the
spec. A requirement that one field cannot express (either a token or a refresh token) goes in the
spec's ``extra_problems``.
"""
