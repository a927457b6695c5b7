"""A real SMTP server on loopback for the tests: what a mail to the operator actually carried.

A small asyncio server speaking the part of SMTP (RFC 5321) that a client sending one message uses:
the greeting, EHLO/HELO, MAIL FROM, RCPT TO, DATA (with dot-unstuffing), RSET, NOOP and QUIT, and 502
for anything else (no STARTTLS, no AUTH: the tests' connections disable both). Each message is kept
whole (envelope and parsed headers and body) in :attr:`SMTPServer.messages`. It runs in a thread of
its own with its own event loop, so any client (Airflow's SMTP hook in another process included) talks
to it over a real socket.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage


@dataclass
class Received:
    mail_from: str
    rcpt_to: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        message = self.message
        part = message.get_body(preferencelist=("html", "plain")) or message
        return part.get_content()


class SMTPServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.host = host
        self.port = 0
        self.messages: list[Received] = []
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-server", daemon=True)

    def start(self) -> "SMTPServer":
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._session, self.host, 0), self._loop)
        self._server = future.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "SMTPServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.messages)} mails arrived, not {count}")
            time.sleep(0.2)
        return list(self.messages)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def say(line: str) -> None:
            writer.write(line.encode() + b"\r\n")

        mail_from, rcpt_to = None, []
        say("220 wheelwright-tests ESMTP")
        try:
            while True:
                line = await asyncio.wait_for(reader.readline(), timeout=60)
                if not line:
                    break
                command = line.decode("ascii", "replace").strip()
                verb = command.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    say("250-wheelwright-tests")
                    say("250 8BITMIME")
                elif verb == "HELO":
                    say("250 wheelwright-tests")
                elif verb == "MAIL":
                    mail_from, rcpt_to = command.split(":", 1)[1].strip().strip("<>").split(">")[0], []
                    say("250 OK")
                elif verb == "RCPT":
                    rcpt_to.append(command.split(":", 1)[1].strip().strip("<>"))
                    say("250 OK")
                elif verb == "DATA":
                    if mail_from is None or not rcpt_to:
                        say("503 need MAIL and RCPT first")
                        continue
                    say("354 end with <CRLF>.<CRLF>")
                    await writer.drain()
                    lines = []
                    while True:
                        data = await asyncio.wait_for(reader.readline(), timeout=60)
                        if data in (b".\r\n", b".\n", b""):
                            break
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    self.messages.append(Received(mail_from, rcpt_to, b"".join(lines)))
                    mail_from, rcpt_to = None, []
                    say("250 OK: queued")
                elif verb == "RSET":
                    mail_from, rcpt_to = None, []
                    say("250 OK")
                elif verb == "NOOP":
                    say("250 OK")
                elif verb == "QUIT":
                    say("221 bye")
                    await writer.drain()
                    break
                else:
                    say("502 command not implemented")
                await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
