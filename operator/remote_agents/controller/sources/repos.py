"""One spelling per repository, so that a push payload, a spec and a ref lookup agree on which
repository they mean."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from remote_agents.controller.sources.git import GITHUB_SHORTHAND

# git's scp-like syntax, [user@]host:path, is recognised only when no slash precedes the colon.
SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")


def normalise_repo(url_or_name: str) -> str:
    """One spelling per repository, so a payload matches spec.source.repo by equality: the host
    (with any port) and path, lower-cased, without scheme, credentials, `.git` or slashes at the
    end; `owner/name` is GitHub. Local paths and file:// URLs become the absolute path.
    Raises ValueError for an empty or unparseable value."""
    text = url_or_name.strip()
    if GITHUB_SHORTHAND.match(text):
        host, path = "github.com", text
    elif "://" in text:
        parts = urlsplit(text)  # ValueError for e.g. a broken IPv6 host
        host, path = parts.netloc.rpartition("@")[2], parts.path
    elif scp := SCP_LIKE.match(text):
        host, path = scp["host"], scp["path"]
    else:
        host, path = "", text
    path = re.sub(r"/+", "/", path).rstrip("/").removesuffix(".git").rstrip("/")
    if not path.strip("/"):
        raise ValueError(f"not a repository: {url_or_name!r}")
    return (f"{host}/{path.lstrip('/')}" if host else path).lower()



def repo_key(repo: str) -> str:
    """The repository's one spelling (see `normalise_repo`); the value itself if it has none."""
    try:
        return normalise_repo(repo)
    except ValueError:
        return repo
