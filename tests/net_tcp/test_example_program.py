"""examples/echo_on_user_stack.py, the README's user-stack program, serves a
real client one veth hop away (in namespaces this test makes)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "echo_on_user_stack.py")

CLIENT = """
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(b"hello, user stack")
got = b""
while len(got) < 17:
    got += s.recv(64)
print(got.decode())
"""


def test_the_example_echoes_for_a_kernel_client(topo):
    server = subprocess.Popen(["ip", "netns", "exec", topo.stack_ns, sys.executable, "-P",
                               EXAMPLE, topo.stack_if, topo.cidr, "7000"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("echo on"), (line, server.stderr.read() if server.poll() else "")
        out = subprocess.run(["ip", "netns", "exec", topo.peer_ns, sys.executable, "-P", "-c",
                              CLIENT, topo.stack_ip, "7000"], capture_output=True, text=True,
                             timeout=60)
        assert out.stdout.strip() == "hello, user stack", out.stderr[-800:]
    finally:
        server.terminate()
        assert server.wait(20) == 143        # SIGTERM: its cleanup ran, status 143
