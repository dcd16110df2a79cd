"""osvrt.run()'s main green thread is named after its function (issue 21,
Deliver): threads(), traces and `top` show "serve_forever", not "green-3"."""
import functools
import json

import osvrt


async def serve_forever():
    me = osvrt.current()
    infos = {i.id: i.name for i in osvrt.threads()}
    await osvrt.sleep(0.001)
    return me.name, infos[me.id]


def test_main_thread_is_named_after_its_function(tmp_path):
    path = tmp_path / "trace.json"
    assert osvrt.run(serve_forever, cpus=1, trace=path) == ("serve_forever", "serve_forever")
    doc = json.loads(path.read_text())
    names = {e.get("name") for e in doc["traceEvents"] if e.get("ph") == "X"}
    assert "serve_forever" in names, names


def test_a_partial_main_is_named_after_the_wrapped_function():
    async def handler(x):
        return osvrt.current().name, x
    assert osvrt.run(functools.partial(handler, 3), cpus=1) == ("handler", 3)


def test_a_callable_without_a_name_keeps_the_default():
    class Main:
        async def go(self):
            return osvrt.current().name

        def __call__(self):
            return self.go()
    assert osvrt.run(Main(), cpus=1).startswith("green-")
