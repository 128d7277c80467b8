"""livecart's built-in adapters: generic feeds (replay, websocket, mqtt, webhook) and platform protocols
(douyin, bilibili, twitch, youtube), plus the shared reconnect loop they use.

Each is registered in the ``livecart.adapters`` entry-point group in ``pyproject.toml``, exactly like a
third-party plugin; the engine never imports this package directly.
"""
