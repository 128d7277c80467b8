"""The pure core: records, catalogue, settings, parser, ledger, events.

Nothing here imports asyncio, opens a file or a socket, or reads a clock (a clock is injected). The core
imports only the standard library and itself; ``tests/test_layers.py`` holds that.
"""
