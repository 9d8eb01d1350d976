"""The operator's side of the resident protocol (docs/resident-protocol.md), shared by the agent
room (which starts and probes the resident process) and the task room (whose runs talk to it).

Both talk to the process through one small Python client run inside the sandbox (python3 is in
E2B's base image); its source travels in an environment variable, so nothing is written into the
sandbox first. For a task it posts the query and turns the answer stream into an ordinary run:
progress lines on stderr, the answer on stdout, exit 0 (1 on an error event, UNREACHABLE_EXIT
when nothing listens, SERVER_LOST_EXIT when the connection ends before the answer). It does so in the relay (`relay PORT TOKENS`), started with the resident
process and living as long as it, to which the task's shell hands its run with builtins alone,
so that a task starts no process of its own; or, when no relay answers, as the task's command.
As a probe (`health SECONDS`) it prints the process's pid once GET /healthz answers 200, or
exits 1 after SECONDS.
"""

from __future__ import annotations

import hashlib
import json
import shlex

SERVER_LOG = "/home/user/.remote-agents/server.log"
# The relay's two tokens ("IN OUT"), rewritten by each relay once it listens; readable by the
# sandbox's user only, so only the sandbox's own runs can hand over, and only to its own relay.
RELAY_TOKENS = "/home/user/.remote-agents/relay.tokens"
UNREACHABLE_EXIT = 75  # EX_TEMPFAIL: the task's client found no resident process to ask
SERVER_LOST_EXIT = 76  # EX_PROTOCOL: the answer stream (or the relay) ended before the answer
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
def send(method, path, body=b"", opened=None):
    # Plain sockets, not http.client: its import (ssl, email) was most of this client's start-up.
    s = socket(AF_INET, SOCK_STREAM)
    if opened is not None:  # (the relay shuts it when the task's shell goes away)
        opened.append(s)
    s.connect(("127.0.0.1", port))
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return s
def receive(s):
    f = io.open(os.dup(s.fileno()), "rb")  # (the socket stays open too: the relay may shut it)
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
def put(fd, text):
    data = text.encode(errors="replace")
    while data:
        data = data[os.write(fd, data):]
def health(seconds):
    deadline = time.monotonic() + seconds
    while True:
        try:
            s = send("GET", "/healthz")
            status, headers, f = receive(s)
            try:
                if status == 200:
                    pid = int(loads(b"".join(lines(headers, f)))["pid"])
                    os.kill(pid, 0)  # ours: a process of this sandbox (not a neighbour's on a shared network)
                    print(pid); return 0
            finally:
                f.close(); s.close()  # (a _socket.socket is no context manager)
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.1)
def answer(env, out, err, copy=None, opened=None):
    """One task's query, from its environment: progress lines to fd `err`, the answer to fd `out`,
    and a short copy of both, as the line for the runner's stream, to `copy` (a function of
    bytes). Returns the run's exit code. `opened` gets the connection to the resident process."""
    request = dumps({"task": env["AGENT_TASK"], "session": env.get("AGENT_SESSION") or None,
                     "query": env["AGENT_QUERY"]}).encode()
    try:
        s = send("POST", "/query", request, opened)
    except OSError as error:
        put(err, f"the resident server does not answer on port {port}: {error}\n"); return UNREACHABLE_EXIT
    try:
        status, headers, f = receive(s)
    except (OSError, ValueError, IndexError) as error:  # (it has the query: it may be working on it)
        put(err, f"the resident server took the query but did not answer: {error!r}\n"); s.close()
        return SERVER_LOST_EXIT
    try:
        if status != 200:
            put(err, f"the resident server answered {status}: {b''.join(lines(headers, f))[:2000]!r}\n")
            return 1
        said = []  # what went to stderr, for the copy on the runner's stream
        try:
            for raw in lines(headers, f):
                if not raw.strip():
                    continue
                try:
                    line = loads(raw)
                except ValueError:
                    line = {"event": "progress", "text": raw.decode(errors="replace").rstrip()}
                event = line.get("event") if isinstance(line, dict) else None
                if event == "progress":
                    text = line.get("text", "") + "\n"
                    put(err, text); said.append(text)
                elif event == "answer":
                    text = line.get("text", "")
                    put(out, text)
                    # The same texts on the runner's stream, so that the operator needs no file
                    # read for a short answer; the files stay the record.
                    copied = dumps({"stdout": text, "stderr": "".join(said)})
                    if copy is not None and len(copied) <= STREAMED_LIMIT:
                        copy(b"\n" + MARK + copied.encode() + b"\n")
                    return 0
                elif event == "error":
                    put(err, line.get("message", "the resident server reported an error") + "\n"); return 1
        except (OSError, ValueError) as error:
            put(err, f"the connection to the resident server broke: {error}\n"); return SERVER_LOST_EXIT
        put(err, "the resident server ended the stream without an answer or an error\n"); return SERVER_LOST_EXIT
    finally:
        f.close(); s.close()
def relay(relay_port, tokens_path):
    """Takes tasks' queries from their runs' shells, so that a task starts no process of its own:
    a shell proves it is of this sandbox (the IN token), hears back that this is its relay (OUT),
    and waits for the exit code; its pid gives its environment: the query, and the run's files
    (opened by name: while the shell writes to the relay, its own fds 1 and 2 are not the run's).
    The copy for the runner's stream goes to $RUN_FILES.copy, for the shell to pass on: the stream
    is a pipe of envd's (root's), which no other process of the sandbox's user may open. The
    relay lives as long as its parent, the resident process."""
    import hmac, socket, threading
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    parent, deadline = os.getppid(), time.monotonic() + 10
    while True:  # the relay of the process this one replaces may hold the port for a moment
        try:
            listener.bind(("127.0.0.1", relay_port)); break
        except OSError as error:
            if time.monotonic() > deadline or os.getppid() != parent:
                print(f"relay: port {relay_port} stays taken ({error}); each task starts its own client",
                      file=sys.stderr, flush=True)
                return 0
            time.sleep(0.2)
    listener.listen(64)
    token_in, token_out = os.urandom(16).hex().encode(), os.urandom(16).hex().encode()
    fd = os.open(tokens_path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, token_in + b" " + token_out + b"\n"); os.close(fd)
    os.replace(tokens_path + ".new", tokens_path)
    def hand_over(conn):
        fds = []
        with conn:
            try:
                said = b""
                while not said.endswith(b"\n") and len(said) < 256:
                    chunk = conn.recv(256)
                    if not chunk:
                        return
                    said += chunk
                token, pid = said.split()
                if not hmac.compare_digest(token, token_in):
                    raise ValueError("not this sandbox's token")
                with open(f"/proc/{int(pid)}/environ", "rb") as f:
                    env = dict(os.fsdecode(item).partition("=")[::2] for item in f.read().split(b"\0") if item)
                fds += [os.open(env["RUN_FILES"] + name, os.O_WRONLY | os.O_APPEND) for name in (".stdout", ".stderr")]
            except (OSError, ValueError, KeyError) as error:
                try:
                    conn.sendall(b"refused\n")  # (the shell starts its own client)
                except OSError:
                    pass
                print(f"relay: refused a run: {error}", file=sys.stderr, flush=True)
                return
            try:
                conn.sendall(token_out + b"\n")
                opened = []
                def abandon():  # the shell went away (its run was signalled): so does its query
                    try:
                        conn.recv(1)
                    except OSError:
                        pass
                    for s in opened:
                        try:
                            s.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                threading.Thread(target=abandon, daemon=True).start()
                copies = []
                code = answer(env, fds[0], fds[1], copies.append if env.get("AGENT_ANSWER_FD") else None, opened)
                while fds:
                    os.close(fds.pop())
                if copies:
                    fd = os.open(env["RUN_FILES"] + ".copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    put(fd, copies[0].decode()); os.close(fd)
                conn.sendall(f"{code}{' copy' if copies else ''}\n".encode())
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                for fd in fds:
                    os.close(fd)
    listener.settimeout(0.5)
    while os.getppid() == parent:  # its parent is the resident process: its end is the relay's
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            time.sleep(0.1); continue
        conn.settimeout(None)
        threading.Thread(target=hand_over, args=(conn,), daemon=True).start()
    return 0
if sys.argv[1:2] == ["health"]:
    sys.exit(health(float(sys.argv[2])))
if sys.argv[1:2] == ["relay"]:
    sys.exit(relay(int(sys.argv[2]), sys.argv[3]))
def stream(data):
    try:
        os.write(int(os.environ["AGENT_ANSWER_FD"]), data)
    except OSError:
        pass  # (the operator reads the files instead)
sys.exit(answer(os.environ, 1, 2, stream if os.environ.get("AGENT_ANSWER_FD") else None))
'''
# A short answer's copy on the runner's stream: the line before the exit line, after this mark.
STREAMED_MARK = "\x1eremote-agents-answer "
STREAMED_LIMIT = 65536  # characters of its JSON; a longer answer is read from the files
CLIENT = CLIENT.replace("MARK", repr(STREAMED_MARK.encode())).replace("STREAMED_LIMIT", str(STREAMED_LIMIT)) \
    .replace("UNREACHABLE_EXIT", str(UNREACHABLE_EXIT)).replace("SERVER_LOST_EXIT", str(SERVER_LOST_EXIT))
# The task's command (the runner evals it in the run's subshell, whose pid is $BASHPID): it hands
# the run to the relay, builtins only, passes on the copy for the runner's stream the relay left
# in $RUN_FILES.copy, and exits with the code the relay gives back; without a
# relay that answers with its token it becomes the client itself (`exec`: signalling the run's
# group reaches it). SIGPIPE ignored: a relay gone mid-handover is a fallback, not a killed run.
CLIENT_COMMAND = r"""trap '' PIPE
if { exec 4<>"/dev/tcp/127.0.0.1/$AGENT_RELAY_PORT"; } 2>/dev/null \
   && read -r token_in token_out 2>/dev/null < "$AGENT_RELAY_TOKENS" \
   && printf '%s %s\n' "$token_in" "$BASHPID" >&4 2>/dev/null && read -r -t 10 said <&4 && [ "$said" = "$token_out" ]; then
  read -r code copied <&4 || { echo "the resident relay ended before the answer" >&2; exit SERVER_LOST_EXIT; }
  [ -z "$copied" ] || { IFS= read -r -d '' copy < "$RUN_FILES.copy"; printf '%s' "$copy" >&3; }
  exit "$code"
fi
exec 4>&- python3 -I -S -c "$AGENT_RESIDENT_CLIENT"
"""
CLIENT_COMMAND = CLIENT_COMMAND.replace("SERVER_LOST_EXIT", str(SERVER_LOST_EXIT))
PYTHON_CLIENT = 'python3 -I -S -c "$AGENT_RESIDENT_CLIENT"'  # -I -S: the standard library only, no site start-up


def port_of(port: int, agent_uid: str) -> int:
    """The port the agent's process serves: spec.server.port, or for 0 one derived from the uid."""
    if port:
        return port
    return 20000 + int(hashlib.sha256(agent_uid.encode()).hexdigest()[:8], 16) % 40000


def relay_port_of(server_port: int, agent_uid: str) -> int:
    """The port of the agent's relay: derived from the uid (sandboxes may share a network, as
    e2b-local's do), never the server's own."""
    port = port_of(0, agent_uid + "/relay")
    return port + 1 if port == server_port else port


def client_env(port: int, relay_port: int | None = None, task: str | None = None,
               session: str | None = None) -> dict[str, str]:
    env = {"AGENT_RESIDENT_CLIENT": CLIENT, "AGENT_SERVER_PORT": str(port)}
    if relay_port is not None:
        env["AGENT_RELAY_PORT"] = str(relay_port)
        env["AGENT_RELAY_TOKENS"] = RELAY_TOKENS
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
    return f'exec {PYTHON_CLIENT} health {float(wait_seconds):g}'


def server_command(workdir: str) -> str:
    """Starts $AGENT_SERVER_COMMAND in the working directory, its output appended to SERVER_LOG
    (read back when it does not come up), with the relay as its child (client_env with a relay
    port gives what the relay needs; the process itself does not see it). `exec`: the process's
    pid is the one the start call reports."""
    log = shlex.quote(SERVER_LOG)
    return (f'mkdir -p {shlex.quote(SERVER_LOG.rsplit("/", 1)[0])} && cd {shlex.quote(workdir)} || exit\n'
            f'{PYTHON_CLIENT} relay "$AGENT_RELAY_PORT" "$AGENT_RELAY_TOKENS" >> {log} 2>&1 &\n'
            f'unset AGENT_RESIDENT_CLIENT AGENT_RELAY_PORT AGENT_RELAY_TOKENS\n'
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
