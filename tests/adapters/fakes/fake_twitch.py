"""A fake Twitch IRC-over-WebSocket server: CAP/PASS/NICK/JOIN handshake, tagged PRIVMSG lines, PING, RECONNECT,
several CRLF-terminated lines per text frame, on a ``websockets`` server bound to 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import contextlib

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def privmsg(channel: str, login: str, text: str, *, msg_id: str, user_id: str, ts_ms: int,
            display: str | None = None) -> str:
    """A PRIVMSG line with the tags Twitch sends (display-name escaped as a tag value must be)."""
    name = (display or login).replace("\\", "\\\\").replace(" ", "\\s").replace(";", "\\:")
    tags = (f"@badge-info=;badges=;color=#0D4200;display-name={name};emotes=;first-msg=0;flags=;id={msg_id};"
            f"mod=0;returning-chatter=0;room-id=1337;subscriber=0;tmi-sent-ts={ts_ms};turbo=0;"
            f"user-id={user_id};user-type=")
    return f"{tags} :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}"


class FakeTwitch:
    """Speaks Twitch IRC. Queue raw frames (one or more CRLF lines) with :meth:`send`; ``None`` drops the link."""

    def __init__(self, *, valid_token: str = "oauth:good") -> None:
        self.valid_token = valid_token
        self.received: list[str] = []       # every line the client sent, across connections
        self.privmsgs: list[str] = []       # PRIVMSG lines the client sent
        self.pongs: list[str] = []
        self.connections = 0
        self.joined = asyncio.Event()
        self.pong_seen = asyncio.Event()
        self.privmsg_seen = asyncio.Event()
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()
        #: Frames sent as soon as connection number N (1-based) has joined, before anything queued.
        self.on_join: dict[int, list[str]] = {}
        self._server: Server | None = None
        self.url = ""

    async def __aenter__(self) -> FakeTwitch:
        self._server = await serve(self._handle, "127.0.0.1", 0)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def send(self, frame: str | None) -> None:
        self.outbox.put_nowait(frame)

    async def _handle(self, ws: ServerConnection) -> None:
        self.connections += 1
        number = self.connections
        self.joined.clear()
        reader = asyncio.create_task(self._read(ws))
        try:
            await asyncio.wait({asyncio.create_task(self.joined.wait()), reader},
                               return_when=asyncio.FIRST_COMPLETED)
            for frame in self.on_join.get(number, []):
                await ws.send(frame)
            while not reader.done():
                getter = asyncio.create_task(self.outbox.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return
                frame = getter.result()
                if frame is None:
                    await ws.close()
                    return
                await ws.send(frame)
        finally:
            reader.cancel()

    async def _read(self, ws: ServerConnection) -> None:
        password = ""
        nick = ""
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                assert isinstance(frame, str)
                for line in frame.split("\r\n"):
                    if not line:
                        continue
                    self.received.append(line)
                    word = line.split(" ", 2)
                    cmd = word[1] if line.startswith("@") else word[0]
                    if cmd == "CAP":
                        await ws.send(":tmi.twitch.tv CAP * ACK :twitch.tv/tags twitch.tv/commands\r\n")
                    elif cmd == "PASS":
                        password = word[1]
                    elif cmd == "NICK":
                        nick = word[1]
                        if password and password != self.valid_token:
                            await ws.send(":tmi.twitch.tv NOTICE * :Login authentication failed\r\n")
                            await ws.close()
                            return
                        await ws.send(f":tmi.twitch.tv 001 {nick} :Welcome, GLHF!\r\n"
                                      f":tmi.twitch.tv 376 {nick} :>\r\n")
                    elif cmd == "JOIN":
                        chan = word[1]
                        await ws.send(f":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN {chan}\r\n"
                                      f"@emote-only=0;room-id=1337 :tmi.twitch.tv ROOMSTATE {chan}\r\n")
                        self.joined.set()
                    elif cmd == "PONG":
                        self.pongs.append(line)
                        self.pong_seen.set()
                    elif cmd == "PRIVMSG":
                        self.privmsgs.append(line)
                        self.privmsg_seen.set()
