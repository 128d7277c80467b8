"""JSON comment payloads made into comments, for adapter plugins (docs/writing-an-adapter.md).

:class:`Decoder` takes one payload (a frame, a message, a request body, a line: one comment object or an
array of them) and gives the comments in it, with the size limit, a ``fields`` map for feeds whose names
differ (``{"text": "content", "user": "sender.uid"}``), millisecond timestamps, and every bad element
counted in the adapter's stats (``oversized``, ``bad_json``, ``not_an_object``, ``missing_field``,
``bad_field``) instead of raised. :class:`FieldMap` is the ``fields`` map alone.

This is the public name of what the built-in websocket, mqtt, webhook and replay adapters use; their own
module, :mod:`livecart.adapters._codec`, is private and may change.
"""

from __future__ import annotations

from livecart.adapters._codec import DEFAULT_MAX_BYTES, TS_UNITS, Decoder, FieldMap

__all__ = ["DEFAULT_MAX_BYTES", "TS_UNITS", "Decoder", "FieldMap"]
