"""wrk, the HTTP client of the bench rows: its command line, and its report
read strictly.

A round whose report shows a socket error or a non-2xx/3xx answer fails
(RuntimeError naming them) instead of giving a figure: wrk's requests/s
counts error answers too, and it leaves timed-out requests out of its
latency percentiles, so such a round would flatter a failing server."""
import re

# A slow answer on a loaded host is a latency, not an error: wrk's default
# (2 s) would drop it from the percentiles as a timeout.
TIMEOUT = "10s"
_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def argv(url, seconds, connections, threads=1):
    """wrk's command line: keep-alive GETs of url for `seconds` (at least 1)."""
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", TIMEOUT, "--latency", url]


def read(done, what):
    """{"rps", "p50_ms", "p99_ms", "requests"} of a finished wrk run (a
    CompletedProcess); RuntimeError if wrk failed or saw any error."""
    out = done.stdout
    if done.returncode != 0:
        raise RuntimeError(f"wrk against {what} exited with status {done.returncode}: "
                           f"{(out + done.stderr)[-800:]!r}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", out)
    bad_answers = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if (socket_errors and any(int(n) for n in socket_errors.groups())) or bad_answers:
        seen = "; ".join(m.group(0) for m in (socket_errors, bad_answers) if m)
        raise RuntimeError(f"wrk saw errors against {what}: {seen}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    latency = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if rate is None or m is None:
            raise RuntimeError(f"wrk against {what} printed no requests/s or no {pct}% "
                               f"latency: {out[-500:]!r}")
        latency[pct] = float(m.group(1)) * _MS[m.group(2)]
    total = re.search(r"(\d+) requests in", out)
    return {"rps": float(rate.group(1)), "p50_ms": latency["50"], "p99_ms": latency["99"],
            "requests": int(total.group(1)) if total else None}
