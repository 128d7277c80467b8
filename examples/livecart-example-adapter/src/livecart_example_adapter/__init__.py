"""An example third-party livecart adapter: ``example_ticker`` emits a configured list of comments.

It shows everything a plugin needs and nothing more:

* subclass :class:`livecart.plugin.Adapter`, set ``type`` and declare every config key in ``OPTIONS`` (the
  config loader validates a stream's ``[[adapters]]`` table against it and fills the defaults);
* do no I/O in ``__init__``; yield lists of :class:`livecart.core.records.Comment` from ``batches()``; return when
  the source ends;
* count bad input with ``self.stats.malformed(...)`` instead of raising;
* acknowledge to your source only what is durable: yield a :class:`livecart.plugin.Batch` and answer the
  sender (an ack, a 2xx, a cursor commit) from its settlement, which the engine calls once the journal has
  committed the batch (``error`` None) or cannot (``error`` set: keep those comments and send them again;
  a comment sent twice is processed once, by its id). Here the "sender" is the ticker itself, which counts
  what was confirmed (:attr:`TickerAdapter.durable`) and what must be sent again (:attr:`TickerAdapter.unsure`);
* register the class in the ``livecart.adapters`` entry-point group (see ``pyproject.toml``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar

from livecart.core.errors import MalformedInput
from livecart.core.records import Comment
from livecart.plugin import Adapter, AdapterStats, Batch, Option

__all__ = ["TickerAdapter"]


def _texts(value: Any) -> str | None:
    if not value or not all(isinstance(t, str) for t in value):
        return "must be a non-empty list of strings"
    return None


class TickerAdapter(Adapter):
    """Emits ``count`` comments cycling through ``texts``, one per ``interval`` seconds (0 = flat out)."""

    type = "example_ticker"
    OPTIONS: ClassVar[Mapping[str, Option]] = {
        "texts": Option(list, required=True, check=_texts, doc="comment texts to emit, in order, cycling"),
        "count": Option(int, 0, doc="comments to emit in all; 0 = each text once"),
        "interval": Option(float, 0.0, doc="seconds between comments; 0 = as fast as possible"),
        "platform": Option(str, "example", doc="platform of the comments"),
        "room": Option(str, "demo", doc="room of the comments"),
        "users": Option(int, 10, doc="comments come from this many distinct users"),
    }

    def __init__(self, options: Mapping[str, Any], *, name: str, stats: AdapterStats | None = None) -> None:
        merged = {k: o.default for k, o in self.OPTIONS.items()} | dict(options)
        super().__init__(merged, name=name, stats=stats)
        #: Comments the engine confirmed durable; comments it could not (a real source resends these).
        self.durable = 0
        self.unsure = 0

    def _settled(self, comments: Sequence[Comment], error: BaseException | None) -> None:
        # Called once per batch, in the event loop; must not block. A real adapter answers its sender here.
        if error is None:
            self.durable += len(comments)
        else:
            self.unsure += len(comments)

    def _batch(self, comments: list[Comment]) -> Batch:
        b = Batch(comments)
        b.when_settled(lambda error: self._settled(b, error))
        return b

    async def batches(self) -> AsyncIterator[Sequence[Comment]]:
        o = self.options
        texts: list[Any] = list(o["texts"])
        count = int(o["count"]) or len(texts)
        interval = float(o["interval"])
        users = max(1, int(o["users"]))
        batch: list[Comment] = []
        self.stats.connected = True  # delivering: /healthz, /api/state and /metrics show it
        for n in range(count):
            if self.closed:
                self.stats.connected = False
                return
            raw = {"id": f"t-{n}", "user": f"user-{n % users}", "text": texts[n % len(texts)], "ts": 1.0e9 + n}
            try:
                comment = Comment.from_mapping(raw, platform=o["platform"], room=o["room"])
            except MalformedInput as exc:  # e.g. a text over the contract's length limit
                self.stats.malformed(exc.reason, exc.detail, exc.sample)
                continue
            self.stats.received += 1
            batch.append(comment)
            if interval > 0:
                yield self._batch(batch)
                batch = []
                await asyncio.sleep(interval)
            elif len(batch) >= 256:
                yield self._batch(batch)
                batch = []
        if batch:
            yield self._batch(batch)
        self.stats.connected = False
