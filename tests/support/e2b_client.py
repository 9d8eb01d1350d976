"""The real (sync) e2b SDK pointed at one e2b-local server, for assertions in tests."""

from __future__ import annotations

from e2b import Sandbox, SandboxQuery, Template


class E2BClient:
    def __init__(self, env: dict[str, str]):
        self.opts = {"api_key": env["E2B_API_KEY"], "api_url": env["E2B_API_URL"],
                     "sandbox_url": env["E2B_SANDBOX_URL"]}

    def sandboxes(self, **metadata: str) -> list:
        paginator = Sandbox.list(query=SandboxQuery(metadata=metadata or None), limit=100, **self.opts)
        found = []
        while paginator.has_next:
            found.extend(paginator.next_items())
        return found

    def by_uid(self, uid: str) -> list:
        return [s for s in self.sandboxes() if s.metadata.get("remoteagents.io/uid") == uid]

    def connect(self, sandbox_id: str) -> Sandbox:
        return Sandbox.connect(sandbox_id, **self.opts)

    def info(self, sandbox_id: str):
        return Sandbox.get_info(sandbox_id, **self.opts)

    def kill(self, sandbox_id: str) -> bool:
        return Sandbox.kill(sandbox_id, **self.opts)

    def read(self, sandbox_id: str, path: str) -> str:
        return self.connect(sandbox_id).files.read(path)

    def template_exists(self, name: str) -> bool:
        return Template.exists(name, **self.opts)
