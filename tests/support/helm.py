"""A real `helm`, built from the Go module proxy and cached per user like the control plane.

    python -m tests.support.helm build    # CI (.ci/run) and first-time set-up; a no-op when cached

The chart tests need it and FAIL (never skip) when it is missing, naming the command above.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from remote_agents_local.cache import cache_root

HELM_VERSION = "v3.22.0"
MODULE = "helm.sh/helm/v3"
COMMAND = f"{MODULE}/cmd/helm"


class HelmMissing(RuntimeError):
    pass


def cache_dir() -> Path:
    return cache_root() / "helm" / HELM_VERSION


def binary() -> Path:
    return cache_dir() / "helm"


def build() -> Path:
    path = binary()
    if path.is_file():
        print(f"[helm build] cached: {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOBIN": str(path.parent), "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    print(f"[helm build] go install {COMMAND}@{HELM_VERSION} (minutes, once)", flush=True)
    subprocess.run(["go", "install", "-trimpath", "-ldflags", _ldflags(env), f"{COMMAND}@{HELM_VERSION}"],
                   env=env, check=True)
    return path


def _ldflags(env: dict[str, str]) -> str:
    """What helm's Makefile sets: its version, and the Kubernetes version of its client modules
    (without it `helm template` assumes Kubernetes 1.20 and refuses charts that need more)."""
    download = subprocess.run(["go", "mod", "download", "-json", f"{MODULE}@{HELM_VERSION}"], env=env, check=True,
                              capture_output=True, text=True)
    go_mod = Path(json.loads(download.stdout)["GoMod"]).read_text()
    minor = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", go_mod, re.MULTILINE).group(1)
    flags = [f"-X {MODULE}/internal/version.version={HELM_VERSION}"]
    for package in ("pkg/lint/rules", "pkg/chartutil"):
        flags += [f"-X {MODULE}/{package}.k8sVersionMajor=1", f"-X {MODULE}/{package}.k8sVersionMinor={minor}"]
    return " ".join(flags)


def require() -> Path:
    path = binary()
    if not path.is_file():
        raise HelmMissing(f"helm {HELM_VERSION} is not built at {path}: run `python -m tests.support.helm build`")
    return path


class Helm:
    def __init__(self, kubeconfig: str | None = None):
        self.path = require()
        self.kubeconfig = kubeconfig

    def run(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        argv = [str(self.path), *args] + (["--kubeconfig", self.kubeconfig] if self.kubeconfig else [])
        # Helm's own state (repositories, cache) in a throwaway place, never the user's.
        env = {**os.environ, "HELM_CACHE_HOME": "/tmp/remote-agents-helm/cache",
               "HELM_CONFIG_HOME": "/tmp/remote-agents-helm/config", "HELM_DATA_HOME": "/tmp/remote-agents-helm/data"}
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
        return result

    def template(self, chart: Path, *args: str) -> list[dict]:
        rendered = self.run("template", "remote-agents", str(chart), *args).stdout
        return [doc for doc in yaml.safe_load_all(rendered) if doc]

    def manifest(self, release: str, namespace: str) -> list[dict]:
        """What an installed release declares (its rendered manifest; CRDs are not part of it)."""
        text = self.run("get", "manifest", release, "-n", namespace).stdout
        return [doc for doc in yaml.safe_load_all(text) if doc]

    def status(self, release: str, namespace: str) -> dict:
        return json.loads(self.run("status", release, "-n", namespace, "-o", "json").stdout)


if __name__ == "__main__":
    if sys.argv[1:] != ["build"]:
        sys.exit("usage: python -m tests.support.helm build")
    build()
