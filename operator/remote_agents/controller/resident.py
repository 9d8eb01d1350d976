"""The operator's side of the resident protocol (docs/resident-protocol.md), shared by the agent
room (which starts and probes the resident process) and the task room (whose runs talk to it).

Both talk to the process through one small Python client run inside the sandbox (python3 is in
E2B's base image); its source travels in an environment variable, so nothing is written into the
sandbox first. As a task's command it posts the query and turns the answer stream into an
ordinary run: progress lines on stderr, the answer on stdout, exit 0 (1 on an error event,
UNREACHABLE_EXIT when nothing listens). As a probe (`health SECONDS`) it prints the process's pid
once GET /healthz answers 200, or exits 1 after SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import shlex

SERVER_LOG = "/home/user/.remote-agents/server.log"
UNREACHABLE_EXIT = 75  # EX_TEMPFAIL: the task's client found no resident process to ask
CLIENT = r'''
import io, os, sys, time
# The C halves of json and socket, not the modules: importing json (re, enum) and socket (enum,
# selectors) took 20-25 ms of the client's ~35 ms start-up (docs/benchmarks.md, stop 17).
try:
    from _json import encode_basestring_ascii as quote, make_scanner
    class Decoding:  # what the C scanner reads of the decoder that uses it: json.loads's defaults
        strict, object_hook, object_pairs_hook = True, None, None
        parse_float, parse_int, parse_constant = float, int, float
    scan = make_scanner(Decoding())
    def loads(raw):
        text = raw.decode().strip()
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if end != len(text):
            raise ValueError("not one JSON value")
        return value
except ImportError:  # a Python built without json's accelerator
    from json import loads
    from json.encoder import encode_basestring_ascii as quote
from _socket import AF_INET, SOCK_STREAM, socket
def dumps(fields):  # an object of strings (or None)
    return "{" + ", ".join(f"{quote(k)}: {'null' if v is None else quote(v)}" for k, v in fields.items()) + "}"
port = int(os.environ["AGENT_SERVER_PORT"])
def ask(method, path, body=b""):
    # Plain sockets, not http.client: its import (ssl, email) was most of this client's start-up.
    s = socket(AF_INET, SOCK_STREAM)
    s.connect(("127.0.0.1", port))
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    f = io.open(s.detach(), "rb")  # the reader owns the connection from here
    status = int(f.readline().split()[1])
    headers = {}
    while (line := f.readline()).strip():
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, f
def lines(headers, f):
    # The body's lines as they arrive: chunked, sized, or up to the close.
    if "chunked" in headers.get("transfer-encoding", "").lower():
        pending = b""
        while size := int(f.readline().split(b";")[0], 16):
            pending += f.read(size); f.readline()
            *done, pending = pending.split(b"\n")
            yield from done
        yield pending
    elif "content-length" in headers:
        yield from f.read(int(headers["content-length"])).split(b"\n")
    else:
        yield from f
if sys.argv[1:2] == ["health"]:
    deadline = time.monotonic() + float(sys.argv[2])
    while True:
        try:
            status, headers, f = ask("GET", "/healthz")
            if status == 200:
                pid = int(loads(b"".join(lines(headers, f)))["pid"])
                os.kill(pid, 0)  # ours: a process of this sandbox (not a neighbour's on a shared network)
                print(pid); sys.exit(0)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
        if time.monotonic() >= deadline:
            sys.exit(1)
        time.sleep(0.1)
request = dumps({"task": os.environ["AGENT_TASK"], "session": os.environ.get("AGENT_SESSION") or None,
                 "query": os.environ["AGENT_QUERY"]}).encode()
try:
    status, headers, f = ask("POST", "/query", request)
except (OSError, ValueError, IndexError) as error:
    print(f"the resident server does not answer on port {port}: {error}", file=sys.stderr); sys.exit(75)
if status != 200:
    print(f"the resident server answered {status}: {b''.join(lines(headers, f))[:2000]!r}", file=sys.stderr)
    sys.exit(1)
said = []  # what went to stderr, for the copy on the runner's stream
def err(text):
    print(text, file=sys.stderr, flush=True); said.append(text + "\n")
for raw in lines(headers, f):
    if not raw.strip():
        continue
    try:
        line = loads(raw)
    except ValueError:
        err(raw.decode(errors="replace").rstrip()); continue
    event = line.get("event") if isinstance(line, dict) else None
    if event == "progress":
        err(line.get("text", ""))
    elif event == "answer":
        text = line.get("text", "")
        sys.stdout.write(text); sys.stdout.flush()
        # The same texts on the runner's stream (fd 3), so that the operator needs no file read
        # for a short answer; the files stay the record.
        copy = dumps({"stdout": text, "stderr": "".join(said)})
        if os.environ.get("AGENT_ANSWER_FD") and len(copy) <= STREAMED_LIMIT:
            try:
                os.write(int(os.environ["AGENT_ANSWER_FD"]), b"\n" + MARK + copy.encode() + b"\n")
            except OSError:
                pass
        sys.exit(0)
    elif event == "error":
        print(line.get("message", "the resident server reported an error"), file=sys.stderr); sys.exit(1)
print("the resident server ended the stream without an answer or an error", file=sys.stderr); sys.exit(1)
'''
# A short answer's copy on the runner's stream: the line before the exit line, after this mark.
STREAMED_MARK = "\x1eremote-agents-answer "
STREAMED_LIMIT = 65536  # characters of its JSON; a longer answer is read from the files
CLIENT = CLIENT.replace("MARK", repr(STREAMED_MARK.encode())).replace("STREAMED_LIMIT", str(STREAMED_LIMIT))
# The task's command (the runner evals it); `exec`: signalling the run's group reaches the client.
CLIENT_COMMAND = 'exec python3 -I -S -c "$AGENT_RESIDENT_CLIENT"'  # -I -S: the standard library only, no site start-up


def port_of(port: int, agent_uid: str) -> int:
    """The port the agent's process serves: spec.server.port, or for 0 one derived from the uid."""
    if port:
        return port
    return 20000 + int(hashlib.sha256(agent_uid.encode()).hexdigest()[:8], 16) % 40000


def client_env(port: int, task: str | None = None, session: str | None = None) -> dict[str, str]:
    env = {"AGENT_RESIDENT_CLIENT": CLIENT, "AGENT_SERVER_PORT": str(port)}
    if task is not None:
        env["AGENT_TASK"] = task
        env["AGENT_SESSION"] = session or ""
        env["AGENT_ANSWER_FD"] = "3"  # the runner's stream (tasks/runner.py)
    return env


def streamed_answer(stream: str) -> tuple[str, str] | None:
    """(stdout, stderr) of a run whose client copied them onto the runner's stream (the line
    before the exit line, which ends `stream`), or None."""
    before = stream[:stream.rfind("\n", 0, -1) + 1].rstrip("\n")
    last = before[before.rfind("\n") + 1:]
    if not last.startswith(STREAMED_MARK):
        return None
    try:
        copy = json.loads(last[len(STREAMED_MARK):])
        return str(copy["stdout"]), str(copy["stderr"])
    except (ValueError, KeyError, TypeError):
        return None


def health_command(wait_seconds: float) -> str:
    """Prints the pid of the process answering /healthz, waiting up to `wait_seconds` for it."""
    return f'{CLIENT_COMMAND} health {float(wait_seconds):g}'


def server_command(workdir: str) -> str:
    """Starts $AGENT_SERVER_COMMAND in the working directory, its output appended to SERVER_LOG
    (read back when it does not come up). `exec`: its pid is the one the start call reports."""
    log = shlex.quote(SERVER_LOG)
    return (f'mkdir -p {shlex.quote(SERVER_LOG.rsplit("/", 1)[0])} && cd {shlex.quote(workdir)} && '
            f'exec bash -c "$AGENT_SERVER_COMMAND" >> {log} 2>&1')


def stop_command(pid: int) -> str:
    """Ends the process (TERM, then KILL after 5 s) and returns once it is gone."""
    return (f"kill -TERM {pid} 2>/dev/null; for i in $(seq 50); do kill -0 {pid} 2>/dev/null || exit 0; "
            f"sleep 0.1; done; kill -KILL {pid} 2>/dev/null; true")


def log_tail_command(chars: int) -> str:
    return f"tail -c {chars} {shlex.quote(SERVER_LOG)} 2>/dev/null; true"


def parse_pid(stdout: str) -> int | None:
    text = stdout.strip().splitlines()[-1:] if stdout.strip() else []
    return int(text[0]) if text and text[0].isdigit() else None
