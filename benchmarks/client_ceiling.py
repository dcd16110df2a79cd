"""The most requests/s the bench's real clients can drive on this host.

The wrk and redis-benchmark rows of `python -m osvrt bench` (issues #17, #19,
#20) hold a server to >= 1.25x the requests/s of an asyncio.Protocol server
on uvloop.  Both clients run one thread, so a fast enough server leaves the
client as the bound: past it, no server gets more.  This script measures
that ceiling: the same client, run as the rows run it, against a server
written in C that runs no Python (nginx with one worker, giving the same
13-byte body; redis-server), in alternating rounds with the uvloop
Protocol server and the osvrt example the rows measure.  It prints each
server's median requests/s, its ratio to uvloop's, the client's p99 latency,
and the share of one CPU the client used (~1.0 against the C server: that server's rate is the
ceiling).  If the C server's ratio is under the target while the client used
about all of its CPU, the target cannot be met on this host with this
client, by any server.

    sudo .venv/bin/python -P benchmarks/client_ceiling.py [--only http,redis,aio,veth,udp,dns]
        [--rounds 5] [--seconds 3] [--requests 20000]

http:  wrk -t1 -c64 keep-alive on loopback: nginx, uvloop-P, and
       examples/http_hello.py on osvrt's default placement (the wrk_rps row).
redis: redis-benchmark -c50 -t set,get,ping on loopback: redis-server,
       uvloop-P, and examples/resp_server.py (the redis_rps row).
aio:   wrk -t1 -c64 as the aio_http row runs it (issue #20): the server
       process on the first CPU and wrk on the last, each pinned; nginx
       (pinned the same), the HttpProtocol server on uvloop, and the same
       server on osvrt.new_event_loop (osvrt.aio.bench).
veth:  wrk one veth hop away, in the user-space TCP rows' namespaces
       (usertcp_wrk_rps, issue #19): nginx beside the uvloop kernel-socket
       peer, that peer, and osvrt.net.user_stack.  Needs root (namespaces).
udp:   the UDP request/response rows (issue #18: udp_rr, one in flight, and
       udp_tps, 16 in flight, --requests each), with the bench's C client in
       three layouts: client and server on one CPU; apart (the rows'
       dedicated layout); unpinned (the osvrt.run placement).  Against a C
       echo on a kernel socket (osvrt.bench.net.CEchoServer, sleeping in
       recvmmsg), the rows' peer (a kernel socket served by a Python thread)
       and osvrt; ratios to that peer.  Where the C echo misses a target in a
       layout, no server meets it there: the layout, not the server, decides.
       Needs CAP_NET_RAW (osvrt.net) and 2 CPUs, as dns does.
dns:   dnsperf as the dnsperf_qps_dedicated row runs it, against the same C
       echo polling its socket (recvmmsg/sendmmsg, answering as dns_reply),
       the Python-thread peer and osvrt.

nginx (Debian package nginx) and redis-server (redis-server) are installed
with apt-get when missing and this runs as root, as the bench installs its
clients.  nginx's configuration and pid file go to a private temporary
folder, removed at the end; its errors go to stderr, which a failed start
reports.
"""
import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from osvrt.bench.net import find_tool
from osvrt.bench.rows import streams

NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process off;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{ default_type text/plain; return 200 "Hello, world!"; }}
    }}
}}
"""


def write_private(path, text):
    """Create path (never following a link, never over an existing file), mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def tool(name, package):
    path, why = find_tool(name, package)
    if path is None:
        sys.exit(why)
    return path


_confs = itertools.count()


def nginx_argv(folder, host, port):
    """The command line of an nginx serving the examples' response on host:port."""
    conf = os.path.join(folder, f"nginx-{next(_confs)}.conf")    # a fresh name: O_EXCL
    write_private(conf, NGINX_CONF.format(dir=folder, host=host, port=port))
    return [tool("nginx", "nginx"), "-p", folder, "-e", "stderr", "-c", conf]


def start_local(name, kind, folder):
    """(process, port) of server `name` on loopback."""
    if name == "c_server":
        port = streams.free_port()
        if kind == "http":
            argv = nginx_argv(folder, "127.0.0.1", port)
        else:
            argv = [tool("redis-server", "redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--dir", folder, "--daemonize", "no"]
        return streams.launch(argv, port, os.path.basename(argv[0])), port
    return streams.start(name, kind)


def one_round(name, kind, folder, seconds, requests):
    proc, port = start_local(name, kind, folder)
    try:
        if kind == "http":
            return streams.wrk_round(port, seconds, server_pid=proc.pid)
        return streams.redis_round(port, requests, server_pid=proc.pid)
    finally:
        streams.stop(proc)


def report(title, results, peer="uvloop_protocol"):
    base = statistics.median(r["rps"] for r in results[peer])
    print(title)
    for name, rounds in results.items():
        rps = statistics.median(r["rps"] for r in rounds)
        share = statistics.median(r["client_cpu_share"] for r in rounds)
        p99 = statistics.median(r["p99_ms"] for r in rounds)
        print(f"  {name:16s} {rps:10,.0f} req/s  {rps / base:5.2f}x {peer}  p99 {p99:.3f} ms  "
              f"client CPU {share:.2f}  rounds {[round(r['rps']) for r in rounds]}")


def alternate(names, rounds, one):
    """{name: [one(name) per counted round]}: the servers in turn, round
    after round; round 0 warms up and is not counted."""
    results = {n: [] for n in names}
    for r in range(rounds + 1):
        for n in names:
            out = one(n)
            if r:
                results[n].append(out)
    return results


def loopback(kind, rounds, seconds, requests, folder):
    results = alternate(("c_server", "uvloop_protocol", "osvrt"), rounds,
                        lambda n: one_round(n, kind, folder, seconds, requests))
    label = "nginx" if kind == "http" else "redis-server"
    report(f"{'wrk -t1 -c64' if kind == 'http' else 'redis-benchmark -c50'} on loopback "
           f"(c_server: {label})", results)


def aio_round(name, seconds, folder, server_cpu, client_cpu):
    """One round of the aio_http row's layout against server `name`: nginx
    ("c_server"), or osvrt.aio.bench's server on loop `name`."""
    from osvrt.aio import bench as aio
    from osvrt.bench import wrk
    from osvrt.bench.client_cpu import run_client
    if name != "c_server":
        rps, p99_s, cpu = aio.wrk_round(name, server_cpu, client_cpu, seconds)
        return {"rps": rps, "p99_ms": p99_s * 1e3, **cpu}
    port = streams.free_port()
    proc = streams.launch(["taskset", "-c", str(server_cpu),
                           *nginx_argv(folder, "127.0.0.1", port)], port, "nginx")
    try:
        done, cpu = run_client(["taskset", "-c", str(client_cpu),
                                *wrk.argv(f"http://127.0.0.1:{port}/", seconds, 64)],
                               proc.pid, timeout=seconds + 60)
    finally:
        streams.stop(proc)
    r = wrk.read(done, "nginx")
    return {"rps": r["rps"], "p99_ms": r["p99_ms"], **cpu}


def aio_layout(rounds, seconds, folder):
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        sys.exit(f"--only aio: the server and wrk on 2 CPUs; this process may run on {cpus}")
    server_cpu, client_cpu = cpus[0], cpus[-1]
    results = alternate(("c_server", "uvloop", "osvrt"), rounds,
                        lambda n: aio_round(n, seconds, folder, server_cpu, client_cpu))
    report(f"wrk -t1 -c64 on CPU {client_cpu}, the server on CPU {server_cpu} (the aio_http "
           "row; c_server: nginx; osvrt: osvrt.new_event_loop)", results, peer="uvloop")


def veth(rounds, seconds, folder):
    from osvrt.bench import usertcp
    from osvrt.bench.rows.usertcp import PORT, _Servers
    tool("wrk", "wrk")
    servers = _Servers()
    nginx = None
    err = tempfile.TemporaryFile()           # nginx's stderr: read if it does not start
    try:
        t = servers.topo
        nginx_port = PORT + 11
        nginx = t.popen_in(t.kernel_ns, nginx_argv(folder, t.kernel_ip, nginx_port),
                           stdout=subprocess.DEVNULL, stderr=err)
        time.sleep(1.0)                      # its listen, in the namespace (no probe from here)
        if nginx.poll() is not None:
            err.seek(0)
            sys.exit(f"nginx did not start in {t.kernel_ns} (exit {nginx.returncode}): "
                     f"{err.read()[-600:].decode(errors='replace')}")
        where = {"c_server": (t.kernel_ip, nginx_port, nginx.pid),
                 "uvloop_kernel": (servers.host("uvloop_kernel"), PORT + 1,
                                   servers.pid("uvloop_kernel")),
                 "osvrt": (servers.host("osvrt"), PORT + 1, servers.pid("osvrt"))}
        results = alternate(tuple(where), rounds, lambda n: usertcp.wrk_round(
            t.peer_ns, where[n][0], where[n][1], seconds, server_pid=where[n][2]))
        report("wrk -t1 -c64 one veth hop away (c_server: nginx beside the uvloop kernel-socket "
               "peer; osvrt: osvrt.net.user_stack)", results, peer="uvloop_kernel")
    finally:
        if nginx is not None:
            nginx.kill()
            nginx.wait()
        err.close()
        servers.close()


def _udp_layouts():
    """The layouts of the UDP floors: (name, osvrt.bench.placement.Placement)."""
    from dataclasses import replace
    from osvrt.bench import placement as P
    dedicated = P.placement("dedicated")
    c = dedicated.client_cpu
    same = replace(dedicated, name="same", label=f"client, server and osvrt's one worker on CPU {c}",
                   server_cpu=c, runtime_cpus=[c], net_options={"drain": "workers"})
    return [("same CPU", same), ("apart", dedicated), ("unpinned", P.placement("run"))]


def udp_server_round(name, pl, client, dns=False):
    """One round of client(addr) against server `name` placed as pl: "c_echo"
    (C, no Python: CEchoServer, polling when dns), "python_thread" (the
    rows' peer: a kernel socket served by a Python thread) or "osvrt"."""
    from osvrt.bench import net, placement as P
    if name == "osvrt":
        return P.osvrt_echo_round(pl, client, net.dns_reply if dns else None)
    if name == "c_echo":
        server = net.CEchoServer(cpu=pl.server_cpu, busy=dns, dns=dns)
    else:
        server = P.kernel_server(pl, net.dns_reply if dns else None)
    try:
        return client(server.addr)
    finally:
        server.close()


def report_ratios(title, results, key, peer="python_thread"):
    """Per server: the median figure and the median [min-max] of its
    per-round ratios to the peer's figure in the same round."""
    print(title)
    for name, rounds in results.items():
        ratios = sorted(r[key] / p[key] for r, p in zip(rounds, results[peer]))
        print(f"  {name:14s} {statistics.median(r[key] for r in rounds):12,.1f} {key}  "
              f"{statistics.median(ratios):5.2f}x {peer} [{ratios[0]:.2f}-{ratios[-1]:.2f}]")


def udp_floors(rounds, requests):
    """The UDP request/response rows (udp_rr, udp_tps) in three layouts,
    against a C echo that runs no Python: where a kernel socket's server,
    however fast, stands against the rows' Python-thread peer."""
    from osvrt.bench import placement as P
    for window, key in ((1, "ns"), (16, "per_s")):
        for layout, pl in _udp_layouts():
            client = P.rr_client(pl, requests, window)
            results = alternate(("c_echo", "python_thread", "osvrt"), rounds,
                                lambda n: udp_server_round(n, pl, client))
            report_ratios(f"UDP, {window} in flight, {layout} ({pl.label}); "
                          f"{'mean round trip' if key == 'ns' else 'transactions/s'}",
                          results, key)


def dns_ceiling(rounds, seconds):
    """dnsperf in the dedicated layout (the dnsperf_qps_dedicated row) against
    a C echo polling its socket with recvmmsg/sendmmsg, the Python-thread peer
    and osvrt."""
    from osvrt.bench import placement as P
    tool("dnsperf", "dnsperf")
    pl = P.placement("dedicated")
    client, _reply = P.real_client(pl, "dnsperf", seconds)
    results = alternate(("c_echo", "python_thread", "osvrt"), rounds,
                        lambda n: udp_server_round(n, pl, client, dns=True))
    report_ratios(f"dnsperf, {pl.label}", results, "qps")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="http,redis,aio,veth,udp,dns")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=20_000)
    a = ap.parse_args(argv)
    parts = a.only.split(",")
    known = ("http", "redis", "aio", "veth", "udp", "dns")
    bad = [p for p in parts if p not in known]
    if bad:
        ap.error(f"--only {a.only!r}: unknown {bad}; one or more of {', '.join(known)}")
    for name, value, least in (("--rounds", a.rounds, 1), ("--seconds", a.seconds, 1),
                               ("--requests", a.requests, 1000)):
        if value < least:
            ap.error(f"{name} must be >= {least}, not {value}")
    if "veth" in parts:
        from osvrt.bench import netns
        ok, why = netns.can_make_namespaces()
        if not ok:
            ap.error(f"--only veth: {why}")
    for part in ("udp", "dns"):
        if part in parts:
            from osvrt.bench.peers import udp_unavailable
            why = udp_unavailable()              # osvrt's contender is an osvrt.net echo
            if why is None and len(os.sched_getaffinity(0)) < 2:
                why = "its layouts need 2 CPUs"
            if why is not None:
                ap.error(f"--only {part}: {why}")
    folder = tempfile.mkdtemp(prefix="osvrt-ceiling-")      # mode 0700
    try:
        if "http" in parts:
            tool("wrk", "wrk")
            loopback("http", a.rounds, a.seconds, a.requests, folder)
        if "redis" in parts:
            tool("redis-benchmark", "redis-tools")
            loopback("redis", a.rounds, a.seconds, a.requests, folder)
        if "aio" in parts:
            tool("wrk", "wrk")
            aio_layout(a.rounds, a.seconds, folder)
        if "veth" in parts:
            veth(a.rounds, a.seconds, folder)
        if "udp" in parts:
            udp_floors(a.rounds, a.requests)
        if "dns" in parts:
            dns_ceiling(a.rounds, a.seconds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
