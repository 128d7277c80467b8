"""The runtime: asyncio shells around the core — pipeline, daemon, replies, hooks, control, status, metrics."""
