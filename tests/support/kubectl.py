"""Run the real kubectl against the test cluster."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from typing import Any


class Kubectl:
    def __init__(self, kubeconfig: str):
        self.kubeconfig = kubeconfig

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], input=input, text=True,
                                capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def apply(self, manifest: str, *extra: str) -> subprocess.CompletedProcess:
        return self.run("apply", "-f", "-", *extra, input=manifest)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
        result = self.run(*args, check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        return json.loads(result.stdout)

    def items(self, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
        return json.loads(self.run("get", kind, "-n", namespace, "-o", "json", *selector).stdout)["items"]


    def items_all(self, kind: str) -> list[dict[str, Any]]:
        """Every object of a kind, in all namespaces (a cluster-scoped kind too)."""
        return json.loads(self.run("get", kind, "--all-namespaces", "-o", "json").stdout)["items"]


def eventually(check: Callable[[], Any], timeout: float = 60, interval: float = 0.5, what: str = "condition") -> Any:
    """Poll until `check()` returns something truthy; fail with the last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except AssertionError as error:
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
