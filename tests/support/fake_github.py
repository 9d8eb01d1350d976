"""An in-memory stand-in for exactly the part of GitHub's REST API that github_publish reaches
through PyGithub, served by aiohttp on a free loopback port from a background thread:

    POST /repos/{o}/{n}/issues/{number}/comments      GET  /repos/{o}/{n}/git/ref/heads/{branch}
    POST /repos/{o}/{n}/git/refs                      GET  /repos/{o}/{n}/contents/{path}?ref=
    PUT  /repos/{o}/{n}/contents/{path}               GET  /repos/{o}/{n}/pulls?state=&head=&base=
    POST /repos/{o}/{n}/pulls                         POST /app/installations/{id}/access_tokens

The installation-token endpoint takes a GitHub App's JWT (RS256, verified with the public key of
the App `add_app` made) and answers a token that expires after `token_lifetime_seconds`; an
expired token is refused (401) as GitHub refuses it. Answers carry the fields PyGithub reads (url, html_url, sha, ...) and GitHub's error shapes;
anything else is 404 and stays visible in `calls`."""

from __future__ import annotations

import base64
import hashlib
import itertools
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.background_http import BackgroundHttp

WEB = "https://github.com"


def blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    full_name: str
    default_branch: str
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> path -> content
    issues: set[int] = field(default_factory=set)  # issue and pull request numbers
    comments: list[dict] = field(default_factory=list)  # {"issue", "body"}
    pulls: list[dict] = field(default_factory=list)  # {"number", "head", "base", "title", "body", "state"}

    def file(self, branch: str, path: str) -> bytes | None:
        return self.files[self.branches[branch]].get(path)


REPO = web.RequestKey("repo", FakeRepo)


class FakeGitHub(BackgroundHttp):
    def __init__(self, tokens: tuple[str, ...] = ("ghp_good",), token_lifetime_seconds: float = 3600):
        super().__init__(self._app, "fake-github")
        self.tokens = set(tokens)
        self.token_lifetime_seconds = token_lifetime_seconds
        self.app_keys: dict[int, rsa.RSAPublicKey] = {}  # app id -> public key
        self.installations: dict[int, int] = {}  # installation id -> app id
        self.installation_tokens: dict[str, float] = {}  # token -> when it expires (epoch), in order made
        self.used_tokens: list[tuple[str, str]] = []  # (path, token) of each request let through
        self.repos: dict[str, FakeRepo] = {}
        self.calls: list[tuple[str, str]] = []  # (method, path), in order
        self.fail_next: list[int] = []  # statuses (with an error body) for the next authenticated requests
        self._ids = itertools.count(1001)

    def add_repo(self, full_name: str, default_branch: str = "main", issues: tuple[int, ...] = (1,),
                 files: dict[str, str] | None = None) -> FakeRepo:
        repo = FakeRepo(full_name, default_branch, issues=set(issues))
        commit = self._commit(repo, {path: text.encode() for path, text in (files or {"README.md": "hi\n"}).items()})
        repo.branches[default_branch] = commit
        self.repos[full_name.lower()] = repo
        return repo

    def add_app(self, app_id: int, installation_id: int) -> str:
        """A GitHub App installed once; returns its private key (PEM), as GitHub hands it out."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.app_keys[app_id] = key.public_key()
        self.installations[installation_id] = app_id
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption()).decode()

    def expired(self, token: str) -> bool:
        return time.time() >= self.installation_tokens[token]

    def _commit(self, repo: FakeRepo, files: dict[str, bytes]) -> str:
        commit = hashlib.sha1(f"{repo.full_name}:{next(self._ids)}".encode()).hexdigest()
        repo.files[commit] = files
        return commit

    # -- serving --------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        repo = "/repos/{owner}/{name}"
        app.router.add_post(repo + "/issues/{number:[0-9]+}/comments", self._create_comment)
        app.router.add_get(repo + "/git/ref/heads/{branch:.+}", self._get_ref)
        app.router.add_post(repo + "/git/refs", self._create_ref)
        app.router.add_get(repo + "/contents/{path:.+}", self._get_contents)
        app.router.add_put(repo + "/contents/{path:.+}", self._put_contents)
        app.router.add_get(repo + "/pulls", self._list_pulls)
        app.router.add_post(repo + "/pulls", self._create_pull)
        app.router.add_post("/app/installations/{installation:[0-9]+}/access_tokens", self._create_installation_token)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if request.path.startswith("/app/"):
            return await handler(request)  # authenticated by the App's JWT, checked there
        if scheme.lower() not in ("token", "bearer") or not self._valid(token):
            return _error(401, "Bad credentials")
        self.used_tokens.append((request.path, token))
        if self.fail_next:
            return _error(self.fail_next.pop(0), "Server Error")
        if "owner" in request.match_info:
            found = self.repos.get(f"{request.match_info['owner']}/{request.match_info['name']}".lower())
            if found is None:
                return _error(404, "Not Found")
            request[REPO] = found
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, "Not Found")

    def _valid(self, token: str) -> bool:
        if token in self.installation_tokens:
            return not self.expired(token)
        return token in self.tokens

    # -- endpoints ------------------------------------------------------------------------------

    async def _create_installation_token(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        installation = int(request.match_info["installation"])
        app_id = self.installations.get(installation)
        if scheme.lower() != "bearer" or app_id is None:
            return _error(401, "A JSON web token could not be decoded")
        try:  # GitHub checks the signature, iss and the expiry (at most 10 minutes ahead)
            claims = jwt.decode(token, self.app_keys[app_id], algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError as error:
            return _error(401, f"A JSON web token could not be decoded ({type(error).__name__})")
        if str(claims["iss"]) != str(app_id) or claims["exp"] - claims["iat"] > 660:
            return _error(401, "'Expiration time' claim ('exp') is too far in the future")
        made = f"ghs_{hashlib.sha1(f'{installation}:{next(self._ids)}'.encode()).hexdigest()[:36]}"
        expires = time.time() + self.token_lifetime_seconds
        self.installation_tokens[made] = expires
        stamp = datetime.fromtimestamp(expires, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return web.json_response({"token": made, "expires_at": stamp, "permissions": {"issues": "write"},
                                  "repository_selection": "all"}, status=201)


    async def _create_comment(self, request: web.Request) -> web.Response:
        repo, number = request[REPO], int(request.match_info["number"])
        if number not in repo.issues:
            return _error(404, "Not Found")
        payload = await _json(request)
        if not isinstance(payload.get("body"), str) or not payload["body"]:
            return _error(422, "Validation Failed", [{"resource": "IssueComment", "code": "missing_field",
                                                     "field": "body"}])
        comment_id = next(self._ids)
        repo.comments.append({"issue": number, "body": payload["body"]})
        api = _api(request, repo)
        return web.json_response({
            "id": comment_id, "node_id": f"IC_{comment_id}", "url": f"{api}/issues/comments/{comment_id}",
            "html_url": f"{WEB}/{repo.full_name}/issues/{number}#issuecomment-{comment_id}",
            "issue_url": f"{api}/issues/{number}", "body": payload["body"], "user": _user(request),
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "author_association": "OWNER"}, status=201)

    async def _get_ref(self, request: web.Request) -> web.Response:
        repo, branch = request[REPO], request.match_info["branch"]
        if branch not in repo.branches:
            return _error(404, "Not Found")
        return web.json_response(_ref(request, repo, branch))

    async def _create_ref(self, request: web.Request) -> web.Response:
        repo, payload = request[REPO], await _json(request)
        ref, commit = payload.get("ref"), payload.get("sha")
        if not isinstance(ref, str) or not ref.startswith("refs/heads/") or ref.endswith("/") or ".." in ref:
            return _error(422, f"{ref} is not a valid ref name.")
        if commit not in repo.files:
            return _error(422, "Object does not exist")
        branch = ref.removeprefix("refs/heads/")
        if branch in repo.branches:
            return _error(422, "Reference already exists")
        repo.branches[branch] = commit
        return web.json_response(_ref(request, repo, branch), status=201)

    async def _get_contents(self, request: web.Request) -> web.Response:
        repo, path = request[REPO], request.match_info["path"]
        branch = request.query.get("ref", repo.default_branch)
        if branch not in repo.branches:
            return _error(404, "Not Found")
        content = repo.file(branch, path)
        if content is not None:
            return web.json_response(_content(request, repo, branch, path, content))
        inside = {name: data for name, data in repo.files[repo.branches[branch]].items() if name.startswith(path + "/")}
        if not inside:
            return _error(404, "Not Found")
        return web.json_response([_content(request, repo, branch, name, data) for name, data in inside.items()])

    async def _put_contents(self, request: web.Request) -> web.Response:
        repo, path, payload = request[REPO], request.match_info["path"], await _json(request)
        branch = payload.get("branch", repo.default_branch)
        if not isinstance(payload.get("message"), str) or not isinstance(payload.get("content"), str):
            return _error(422, "Invalid request.\n\n\"message\" and \"content\" are required.")
        if branch not in repo.branches:
            return _error(404, f"Branch {branch} not found")
        current = repo.file(branch, path)
        if current is not None and "sha" not in payload:
            return _error(422, "Invalid request.\n\n\"sha\" wasn't supplied.")
        if current is not None and payload["sha"] != blob_sha(current):
            return _error(409, f"{path} does not match {payload['sha']}")
        content = base64.b64decode(payload["content"])
        commit = self._commit(repo, {**repo.files[repo.branches[branch]], path: content})
        repo.branches[branch] = commit
        api = _api(request, repo)
        return web.json_response({
            "content": _content(request, repo, branch, path, content),
            "commit": {"sha": commit, "node_id": f"C_{commit[:8]}", "url": f"{api}/git/commits/{commit}",
                       "html_url": f"{WEB}/{repo.full_name}/commit/{commit}", "message": payload["message"]},
        }, status=200 if current is not None else 201)

    async def _list_pulls(self, request: web.Request) -> web.Response:
        repo, query = request[REPO], request.query
        owner = repo.full_name.split("/")[0].lower()
        wanted = [pull for pull in repo.pulls
                  if query.get("state", "open") in ("all", pull["state"])
                  and ("base" not in query or query["base"] == pull["base"])
                  and ("head" not in query or query["head"].lower() == f"{owner}:{pull['head'].lower()}")]
        return web.json_response([_pull(request, repo, pull) for pull in wanted])

    async def _create_pull(self, request: web.Request) -> web.Response:
        repo, payload = request[REPO], await _json(request)
        base, head, title = payload.get("base"), payload.get("head"), payload.get("title")
        if not all(isinstance(value, str) and value for value in (base, head, title)):
            return _error(422, "Validation Failed", [{"resource": "PullRequest", "code": "missing_field"}])
        if base not in repo.branches or head not in repo.branches:
            return _error(422, "Validation Failed", [{"resource": "PullRequest", "code": "invalid",
                                                     "field": "base" if base not in repo.branches else "head"}])
        if repo.branches[base] == repo.branches[head]:
            return _error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                     "message": f"No commits between {base} and {head}"}])
        if any(pull["head"] == head and pull["base"] == base and pull["state"] == "open" for pull in repo.pulls):
            owner = repo.full_name.split("/")[0]
            return _error(422, "Validation Failed", [{"resource": "PullRequest", "code": "custom",
                                                     "message": f"A pull request already exists for {owner}:{head}."}])
        number = max(repo.issues, default=0) + 1
        repo.issues.add(number)
        pull = {"number": number, "head": head, "base": base, "title": title, "body": payload.get("body") or "",
                "state": "open"}
        repo.pulls.append(pull)
        return web.json_response(_pull(request, repo, pull), status=201)


async def _json(request: web.Request) -> dict:
    try:
        payload = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"message": "Problems parsing JSON"}', content_type="application/json")
    if not isinstance(payload, dict):
        raise web.HTTPBadRequest(text='{"message": "Problems parsing JSON"}', content_type="application/json")
    return payload


def _error(status: int, message: str, errors: list[dict] | None = None) -> web.Response:
    body: dict = {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}
    if errors:
        body["errors"] = errors
    return web.json_response(body, status=status)


def _api(request: web.Request, repo: FakeRepo) -> str:
    # PyGithub only follows URLs on the host it was given, so API URLs point back at this server.
    return f"{request.scheme}://{request.host}/repos/{repo.full_name}"


def _user(request: web.Request) -> dict:
    return {"login": "octo-bot", "id": 1, "type": "User", "url": f"{request.scheme}://{request.host}/users/octo-bot",
            "html_url": f"{WEB}/octo-bot"}


def _ref(request: web.Request, repo: FakeRepo, branch: str) -> dict:
    api, commit = _api(request, repo), repo.branches[branch]
    return {"ref": f"refs/heads/{branch}", "node_id": f"REF_{branch}", "url": f"{api}/git/refs/heads/{branch}",
            "object": {"sha": commit, "type": "commit", "url": f"{api}/git/commits/{commit}"}}


def _content(request: web.Request, repo: FakeRepo, branch: str, path: str, content: bytes) -> dict:
    api, sha = _api(request, repo), blob_sha(content)
    encoded = base64.encodebytes(content).decode()  # GitHub wraps the base64 at 60 columns; PyGithub copes
    return {"type": "file", "encoding": "base64", "size": len(content), "name": path.rsplit("/", 1)[-1],
            "path": path, "content": encoded, "sha": sha, "url": f"{api}/contents/{path}?ref={branch}",
            "git_url": f"{api}/git/blobs/{sha}", "html_url": f"{WEB}/{repo.full_name}/blob/{branch}/{path}",
            "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{branch}/{path}"}


def _pull(request: web.Request, repo: FakeRepo, pull: dict) -> dict:
    api, number, owner = _api(request, repo), pull["number"], repo.full_name.split("/")[0]
    return {"id": 5000 + number, "node_id": f"PR_{number}", "number": number, "state": pull["state"],
            "title": pull["title"], "body": pull["body"], "url": f"{api}/pulls/{number}",
            "html_url": f"{WEB}/{repo.full_name}/pull/{number}", "issue_url": f"{api}/issues/{number}",
            "user": _user(request), "draft": False, "merged": False,
            **{side: {"ref": pull[side], "sha": repo.branches[pull[side]], "label": f"{owner}:{pull[side]}"}
               for side in ("head", "base")}}
