"""TCP echo on a user-space TCP/IP stack (osvrt.net.user_stack): the program
of the README's "TCP on a user-space stack" section, which also shows how to
make the veth pair and the peer namespace it needs (as root).

    python -P examples/echo_on_user_stack.py [INTERFACE [ADDRESS/PREFIX [PORT]]]

Defaults: osvrt0, 198.18.0.2/24, 7000.
"""
import sys

import osvrt
import osvrt.net


async def echo(stream):
    async with stream:
        try:
            while data := await stream.recv():
                await stream.sendall(data)
        except ConnectionError:
            pass                                  # the client reset the connection


async def main(interface, address, port):
    stack = await osvrt.net.user_stack(interface, address)
    async with await stack.tcp_listen(port) as listener:   # osvrt.net.tcp_listen(...) on the kernel's
        print(f"echo on {address.split('/')[0]}:{port} (user-space stack on {interface})",
              flush=True)
        while True:
            stream, addr = await listener.accept()
            osvrt.spawn(echo, stream)


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) > 3:
        sys.exit(__doc__)
    interface = args[0] if args else "osvrt0"
    address = args[1] if len(args) > 1 else "198.18.0.2/24"
    try:
        port = int(args[2]) if len(args) > 2 else 7000
    except ValueError:
        sys.exit(f"PORT must be a number, not {args[2]!r}")
    osvrt.run(main, interface, address, port, cpus=1)
