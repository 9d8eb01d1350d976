"""Real git repositories served by `git daemon` on loopback (git://127.0.0.1:PORT/NAME.git)."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from remote_agents_local import processes

AUTHOR = ["-c", "user.name=Test Author", "-c", "user.email=author@example.test"]


class GitServer:
    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = processes.free_port()
        self.process = subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}", f"--port={self.port}",
             "--listen=127.0.0.1", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("git daemon did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def create(self, name: str, files: dict[str, str], branch: str = "main") -> "Repo":
        bare = self.root / f"{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(bare)], check=True)
        work = self.root / "work" / name
        subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
        subprocess.run(["git", "-C", str(work), "checkout", "-q", "-b", branch], check=True)
        repo = Repo(url=f"git://127.0.0.1:{self.port}/{name}.git", work=work, branch=branch)
        repo.commit(files, "initial")
        return repo


class Repo:
    def __init__(self, url: str, work: Path, branch: str):
        self.url, self.work, self.branch = url, work, branch

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.work), *AUTHOR, *args], check=True, capture_output=True,
                              text=True).stdout.strip()

    def commit(self, files: dict[str, str], message: str, branch: str | None = None) -> str:
        """Write files, commit and push; returns the new commit's SHA."""
        branch = branch or self.branch
        if branch != self._git("symbolic-ref", "--short", "HEAD"):
            self._git("checkout", "-q", "-B", branch)
        for path, content in files.items():
            target = self.work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        self._git("add", "-A")
        self._git("commit", "-q", "-m", message)
        self._git("push", "-q", "origin", f"HEAD:refs/heads/{branch}")
        return self._git("rev-parse", "HEAD")
