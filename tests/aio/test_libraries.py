"""Real asyncio/anyio libraries on osvrt.new_event_loop, against local servers.

httpx reaches the loop through anyio; aiohttp is both client and server on the
osvrt loop; uvicorn runs an ASGI app with --loop osvrt:new_event_loop in a
subprocess and a real HTTP client hits it.  Loopback only."""
import asyncio
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import osvrt

BOUND = 30.0


def run(coro_fn, *args):
    with asyncio.Runner(loop_factory=osvrt.new_event_loop) as r:
        return r.run(asyncio.wait_for(coro_fn(*args), BOUND))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def thread_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()
    th.join(10)


def test_httpx_through_anyio_on_the_osvrt_loop(thread_server):
    anyio = pytest.importorskip("anyio")
    httpx = pytest.importorskip("httpx")

    async def main():
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient() as client:
            async with anyio.create_task_group() as tg:
                results = {}

                async def get(i):
                    r = await client.get(f"{thread_server}/item/{i}")
                    results[i] = r.json()["path"]

                for i in range(10):
                    tg.start_soon(get, i)
        return type(loop).__name__, results

    name, results = anyio.run(main, backend="asyncio",
                              backend_options={"loop_factory": osvrt.new_event_loop})
    assert name == "OsvrtEventLoop"
    assert results == {i: f"/item/{i}" for i in range(10)}


def test_aiohttp_server_and_client_on_the_osvrt_loop():
    web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")

    async def hello(request):
        return web.json_response({"name": request.match_info["name"],
                                  "loop": type(asyncio.get_running_loop()).__name__})

    async def ws(request):
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(msg.data.upper())
        return sock

    async def main():
        app = web.Application()
        app.router.add_get("/hello/{name}", hello)
        app.router.add_get("/ws", ws)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, reuse_port=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            async with aiohttp.ClientSession() as s:
                got = []
                for name in ("a", "b"):
                    async with s.get(f"http://127.0.0.1:{port}/hello/{name}") as r:
                        got.append(await r.json())
                async with s.ws_connect(f"http://127.0.0.1:{port}/ws") as w:
                    await w.send_str("ping")
                    echo = (await w.receive()).data
            return got, echo
        finally:
            await runner.cleanup()

    got, echo = run(main)
    assert got == [{"name": "a", "loop": "OsvrtEventLoop"},
                   {"name": "b", "loop": "OsvrtEventLoop"}]
    assert echo == "PING"


_ASGI_APP = '''
import asyncio

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    loop = type(asyncio.get_running_loop()).__name__.encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": loop + b" " + scope["path"].encode()
                + b" " + body})
'''


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_serves_an_asgi_app_on_the_osvrt_loop(tmp_path):
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    (tmp_path / "asgi_app.py").write_text(_ASGI_APP)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "uvicorn", "--loop", "osvrt:new_event_loop", "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "asgi_app:app"],
        # cwd: uvicorn puts its --app-dir (default '.') first on sys.path, and the
        # checkout's unbuilt osvrt/ must not shadow the installed one
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + BOUND
        while True:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/echo", content=b"payload", timeout=5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("uvicorn did not serve: "
                                         + proc.stdout.read().decode(errors="replace"))
                time.sleep(0.1)
        assert r.status_code == 200
        assert r.content == b"OsvrtEventLoop /echo payload"
        with httpx.Client() as c:      # keep-alive: several requests on one connection
            assert all(c.get(f"http://127.0.0.1:{port}/k{i}").content.endswith(f"/k{i} ".encode())
                       for i in range(20))
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=BOUND)
    # uvicorn's own graceful shutdown: its SIGINT handler (installed because
    # the loop's code runs in the main thread) runs while the worker idles.
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"Shutting down" in out and b"Finished server process" in out, out.decode()
