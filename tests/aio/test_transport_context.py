"""The Context each protocol callback of the osvrt loop's socket transports
runs in (osvrt/_engine/aiotx.c, "Contexts"): the same as on asyncio's own
loop, checked by running one scenario on both and comparing what each
callback saw.

asyncio runs a transport's reading in a copy of the Context current when
its reader was added (the transport's start, then each resume_reading) and
its flushing in a copy of the one current at the write() that began to
buffer; the C data path ran them all in the loop thread's own Context, so
one connection's callbacks saw another's variables and none saw those set
before create_server or create_connection."""
import asyncio
import contextvars

import pytest

import osvrt

BOUND = 20.0

cv = contextvars.ContextVar("cv", default="unset")


class Rec(asyncio.Protocol):
    """Logs the value of cv each callback finds (a change from the last one
    of the same callback), then sets it to the callback's own name: whether
    that value reaches a later callback shows which Context they share."""

    def __init__(self, role, log):
        self.role, self.log = role, log
        self.buf = bytearray()
        self.got = asyncio.Event()
        self.resumed = asyncio.Event()
        self.paused = False
        self.made = asyncio.get_running_loop().create_future()
        self.lost = asyncio.get_running_loop().create_future()

    def see(self, name):
        """Called first by every callback."""
        seen = self.log.setdefault(f"{self.role}.{name}", [])
        v = cv.get()
        if not seen or seen[-1] != v:
            seen.append(v)
        cv.set(f"{self.role}.{name}")

    def connection_made(self, t):
        self.see("connection_made")
        self.t = t
        self.made.set_result(None)

    def data_received(self, data):
        self.see("data_received")
        self.took(data)

    def took(self, data):
        self.buf += data
        if self.buf == b"ping":
            self.t.write(b"pong")
        self.got.set()

    def eof_received(self):
        self.see("eof_received")

    def pause_writing(self):
        self.see("pause_writing")
        self.paused = True

    def resume_writing(self):
        self.see("resume_writing")
        self.paused = False
        self.resumed.set()

    def connection_lost(self, exc):
        self.see("connection_lost")
        self.lost.set_result(exc)

    async def wait_bytes(self, n):
        while len(self.buf) < n:
            self.got.clear()
            await self.got.wait()


class BufRec(Rec, asyncio.BufferedProtocol):
    def get_buffer(self, hint):
        self.see("get_buffer")
        self.mem = bytearray(65536)
        return self.mem

    def buffer_updated(self, n):
        self.see("buffer_updated")
        self.took(bytes(self.mem[:n]))


async def scenario(buffered):
    """A connection through create_server/create_connection: a ping and its
    echo; reading paused and resumed from another task; a flood from a task
    until pause_writing, drained after the server resumes reading; then
    write_eof, and both ends lose the connection.  Returns the log."""
    loop = asyncio.get_running_loop()
    log = {}
    servers = []

    def server_factory():
        p = (BufRec if buffered else Rec)("server", log)
        servers.append(p)
        return p

    cv.set("before-server")
    srv = await loop.create_server(server_factory, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    cv.set("before-client")
    t, client = await loop.create_connection(lambda: Rec("client", log), "127.0.0.1", port)
    cv.set("main")
    while not servers:
        await asyncio.sleep(0)
    server = servers[0]
    await server.made
    t.write(b"ping")
    await server.wait_bytes(4)
    await client.wait_bytes(4)

    async def pause_resume():
        cv.set("resumer")
        server.t.pause_reading()
        server.t.resume_reading()

    await asyncio.create_task(pause_resume())
    t.write(b"more")
    await server.wait_bytes(8)
    server.t.pause_reading()

    async def flood():
        cv.set("writer")
        n = 0
        while not client.paused:
            t.write(b"x" * 65536)
            n += 65536
        return n

    n = await asyncio.create_task(flood())
    server.t.resume_reading()
    await client.resumed.wait()
    await server.wait_bytes(8 + n)
    t.write_eof()
    await server.lost
    await client.lost
    srv.close()
    await srv.wait_closed()
    log["main.end"] = [cv.get()]
    return log


def run(factory, buffered, debug=False):
    with asyncio.Runner(loop_factory=factory, debug=debug) as r:
        return r.run(asyncio.wait_for(scenario(buffered), BOUND))


@pytest.mark.parametrize("debug", [False, True], ids=["C-turn", "debug"])
@pytest.mark.parametrize("buffered", [False, True], ids=["Protocol", "BufferedProtocol"])
def test_protocol_callbacks_see_the_context_asyncio_gives_them(buffered, debug):
    # debug: asyncio's own turn, whose selector hands the fd to the same C path
    on_asyncio = run(asyncio.new_event_loop, buffered, debug)
    on_osvrt = run(osvrt.new_event_loop, buffered, debug)
    # what asyncio gives (a var set before create_server/create_connection
    # reaches the callbacks; none set in them reaches the caller)
    assert on_asyncio["server.connection_made"] == ["before-server"]
    assert on_asyncio["client.connection_made"] == ["before-client"]
    assert on_asyncio["main.end"] == ["main"]
    assert on_osvrt == on_asyncio


def test_the_writers_context_is_let_go_once_its_output_is_sent():
    """asyncio drops its writer Handle, and so its Context, when the buffer
    empties; the transport kept its copy (and what its variables held)."""
    import gc
    import socket
    import weakref

    class Held:
        pass

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        b.setblocking(False)
        transport, proto = await loop.connect_accepted_socket(asyncio.Protocol, a)
        refs = []

        async def burst():
            held = Held()
            refs.append(weakref.ref(held))
            cv.set(held)
            while transport.get_write_buffer_size() == 0:   # until it buffers
                transport.write(bytes(65536))

        await asyncio.create_task(burst())
        with b:
            while transport.get_write_buffer_size():
                await loop.sock_recv(b, 1 << 20)
            await asyncio.sleep(0)
            gc.collect()
            alive = refs[0]() is not None
            transport.close()
        return alive

    assert run_main(asyncio.new_event_loop, main) is False
    assert run_main(osvrt.new_event_loop, main) is False


def run_main(factory, main):
    with asyncio.Runner(loop_factory=factory) as r:
        return r.run(asyncio.wait_for(main(), BOUND))
