"""Readers for the deployment files (Dockerfile, nginx config) and helpers for local processes.

Small, strict parsers: they understand exactly the syntax our files use and fail loudly on
anything else, so a test can never pass because a parser skipped what it did not understand.
"""

from __future__ import annotations

import functools
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.modelcard import DIGEST_SUFFIX, MODEL_FILENAME

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE_FILE = REPO / "docker-compose.yml"
NGINX_DIR = REPO / "deploy" / "nginx"
NGINX_RULES = NGINX_DIR / "actlab.conf"
NGINX_COMPOSE = NGINX_DIR / "compose.conf"
K8S_DIR = REPO / "deploy" / "k8s"
README = REPO / "README.md"


# ---------------------------------------------------------------------------------- Dockerfile


@dataclass
class Instruction:
    keyword: str  # upper case: RUN, COPY, CMD, ...
    args: str  # the rest of the logical line, continuations joined

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD (else ValueError)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = text.split(" CMD ", 1)[1] if " CMD " in f" {text}" else ""
            text = text.strip()
        if not text.startswith("["):
            raise ValueError(f"{self.keyword} is in shell form: {self.args!r}")
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{self.keyword} is not a JSON array of strings: {self.args!r}")
        return value

    def options(self) -> dict[str, str]:
        """``--flag=value`` options at the start of the arguments (COPY --from, HEALTHCHECK ...)."""
        found: dict[str, str] = {}
        for token in shlex.split(self.args):
            if not token.startswith("--"):
                break
            key, _, value = token[2:].partition("=")
            found[key] = value
        return found

    def positional(self) -> list[str]:
        """Arguments after the ``--options`` (shell-split)."""
        tokens = shlex.split(self.args)
        while tokens and tokens[0].startswith("--"):
            tokens.pop(0)
        return tokens


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        if not found:
            raise LookupError(f"stage {self.name!r} has no {keyword}")
        return found[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]  # global ARGs with defaults, before the first FROM
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise LookupError(f"no stage named {name!r}; stages: {[s.name for s in self.stages]}")

    def resolved_base(self, stage: Stage) -> str:
        """The image a stage starts from, following ``FROM <stage>`` and ``${ARG}`` defaults."""
        base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: self.args[m[1] or m[2]], stage.base)
        names = {s.name for s in self.stages}
        if base in names:
            return self.resolved_base(self.stage(base))
        return base

    def chain(self, name: str) -> list[Stage]:
        """Every stage whose content can reach the target: FROM parents and COPY --from sources."""
        seen: list[Stage] = []

        def visit(stage_name: str) -> None:
            stage = self.stage(stage_name)
            if stage in seen:
                return
            seen.append(stage)
            names = {s.name for s in self.stages}
            if stage.base in names:
                visit(stage.base)
            for copy in stage.all("COPY"):
                source = copy.options().get("from")
                if source:
                    if source not in names:
                        raise ValueError(f"COPY --from={source} is not a stage of this file")
                    visit(source)

        visit(name)
        return seen


def parse_dockerfile(text: str) -> Dockerfile:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue  # comment lines inside a continuation are dropped by Docker too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    if current:
        raise ValueError("Dockerfile ends inside a line continuation")

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            if len(parts) == 3 and parts[1].upper() == "AS":
                stages.append(Stage(base=parts[0], name=parts[2]))
            elif len(parts) == 1:
                stages.append(Stage(base=parts[0], name=None))
            else:
                raise ValueError(f"unexpected FROM line: {line!r}")
        elif not stages:
            if keyword != "ARG":
                raise ValueError(f"only ARG may precede the first FROM, got {line!r}")
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, rest))
    return Dockerfile(args=args, stages=stages)


def read_dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE.read_text())


def dockerignore_includes(patterns: list[str], path: str) -> bool:
    """Whether ``path`` (relative, '/'-separated) is sent to the build context.

    Docker semantics: the last matching pattern wins, ``!`` re-includes, a pattern matching a
    directory matches everything below it, ``*`` stays within one path element, ``**`` spans any.
    """

    def to_regex(pattern: str) -> re.Pattern[str]:
        out = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                out += ".*"
                i += 2
            elif pattern[i] == "*":
                out += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                out += "[^/]"
                i += 1
            else:
                out += re.escape(pattern[i])
                i += 1
        return re.compile(out + r"\Z")

    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    included = True
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip().strip("/")
        regex = to_regex(pattern)
        if any(regex.match(prefix) for prefix in prefixes):
            included = negate
    return included


# ------------------------------------------------------------------------------- nginx config


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        return find_directives(self.block or [], name)


_NGINX_TOKEN = re.compile(
    r"""\s+|#[^\n]*|'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|([{};])|([^\s{};'"#]+)"""
)


def parse_nginx(text: str) -> list[Directive]:
    tokens: list[tuple[str, bool]] = []  # (value, is_punctuation)
    pos = 0
    while pos < len(text):
        match = _NGINX_TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"cannot tokenise nginx config at {text[pos : pos + 30]!r}")
        pos = match.end()
        single, double, punct, word = match.groups()
        if punct is not None:
            tokens.append((punct, True))
        elif word is not None:
            tokens.append((word, False))
        elif single is not None:
            tokens.append((single, False))
        elif double is not None:
            tokens.append((double, False))

    def block(index: int, closing: bool) -> tuple[list[Directive], int]:
        directives: list[Directive] = []
        words: list[str] = []
        while index < len(tokens):
            value, punct = tokens[index]
            index += 1
            if not punct:
                words.append(value)
            elif value == ";":
                if not words:
                    raise ValueError("empty nginx directive")
                directives.append(Directive(words[0], words[1:]))
                words = []
            elif value == "{":
                if not words:
                    raise ValueError("nginx block without a name")
                inner, index = block(index, closing=True)
                directives.append(Directive(words[0], words[1:], inner))
                words = []
            else:  # "}"
                if not closing or words:
                    raise ValueError("unbalanced '}' or a directive without ';' in nginx config")
                return directives, index
        if closing or words:
            raise ValueError("nginx config ends inside a block or directive")
        return directives, index

    parsed, _ = block(0, closing=False)
    return parsed


def find_directives(directives: list[Directive], name: str) -> list[Directive]:
    """Every directive called ``name``, at any depth."""
    found: list[Directive] = []
    for directive in directives:
        if directive.name == name:
            found.append(directive)
        if directive.block:
            found.extend(find_directives(directive.block, name))
    return found


def nginx_size_bytes(value: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", value)
    if match is None:
        raise ValueError(f"not an nginx size: {value!r}")
    return int(match[1]) * units[match[2].lower()]


def nginx_seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)(ms|s|m|h|)", value)
    if match is None:
        raise ValueError(f"not an nginx time: {value!r}")
    return int(match[1]) * units[match[2]]


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def render_local_lb_config(workdir: Path, upstream_ports: list[int], listen_port: int) -> Path:
    """nginx.conf for a local run: compose.conf with only its upstream servers, listen address
    and include path swapped for local ones, so the rules under test are the ones compose ships.
    """
    site = NGINX_COMPOSE.read_text()

    def swap(pattern: str, replacement: str, text: str) -> str:
        new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != 1:
            raise AssertionError(f"compose.conf: expected one match of {pattern!r}, got {count}")
        return new

    server_line = re.search(r"^\s*server api:8000 resolve ([^;]*);", site, re.MULTILINE)
    if server_line is None:
        raise AssertionError("compose.conf has no 'server api:8000 resolve ...;' line")
    params = server_line[1]
    local_servers = "\n".join(f"    server 127.0.0.1:{port} {params};" for port in upstream_ports)
    site = swap(r"^\s*server api:8000 resolve [^;]*;", local_servers, site)
    # Docker's DNS resolver has no meaning outside compose.
    site = swap(r"^\s*resolver 127\.0\.0\.11[^;]*;\n", "", site)
    site = swap(r"^\s*resolver_timeout [^;]*;\n", "", site)
    site = swap(r"^\s*listen 8080;", f"    listen 127.0.0.1:{listen_port};", site)
    site = swap(r"^\s*include /etc/nginx/actlab/actlab\.conf;", f"    include {NGINX_RULES};", site)
    (workdir / "site.conf").write_text(site)

    user = ""
    if os.geteuid() == 0:  # workers would otherwise drop to 'nobody' and lose the temp dirs
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name};"
    temp = workdir / "temp"
    temp.mkdir(exist_ok=True)
    main = f"""
{user}
daemon off;
master_process on;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log info;
events {{ worker_connections 512; }}
http {{
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
    log_format upstreams '$status $request_method $request_uri '
                         'upstream=[$upstream_addr] upstream_status=[$upstream_status]';
    access_log {workdir}/access.log upstreams;
    include {workdir}/site.conf;
}}
"""
    path = workdir / "nginx.conf"
    path.write_text(main)
    return path


@dataclass
class AccessLogLine:
    status: int
    method: str
    uri: str
    upstreams: list[str]  # every replica tried, in order
    upstream_statuses: list[str]


def read_access_log(path: Path) -> list[AccessLogLine]:
    pattern = re.compile(r"^(\d{3}) (\S+) (\S+) upstream=\[(.*)\] upstream_status=\[(.*)\]$")

    def split(field: str) -> list[str]:
        return [] if field in ("", "-") else [part.strip() for part in field.split(", ")]

    lines = []
    for raw in path.read_text().splitlines():
        match = pattern.match(raw)
        if match is None:
            raise ValueError(f"unexpected access log line: {raw!r}")
        lines.append(
            AccessLogLine(
                status=int(match[1]),
                method=match[2],
                uri=match[3],
                upstreams=split(match[4]),
                upstream_statuses=split(match[5]),
            )
        )
    return lines


# ---------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str,
    *,
    timeout_s: float,
    process: subprocess.Popen[bytes] | None = None,
    expect_status: int = 200,
    log_path: Path | None = None,
) -> None:
    """Poll ``url`` until it answers ``expect_status``; fail early if ``process`` exits.
    A failure message ends with the tail of ``log_path`` (the process's output)."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"

    def log_tail() -> str:
        if log_path is None or not log_path.exists():
            return ""
        return "\n--- " + str(log_path.name) + " ---\n" + log_path.read_text()[-3000:]

    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"process exited with {process.returncode} while waiting for {url}{log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == expect_status:
                    return
                last = f"status {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"status {exc.code}"
            if exc.code == expect_status:
                return
        except OSError as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise AssertionError(
        f"{url} did not answer {expect_status} within {timeout_s} s ({last}){log_tail()}"
    )


def stop_process(process: subprocess.Popen[bytes], *, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time (only the process we started)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)


def uvicorn_args_from_dockerfile(host: str, port: int) -> list[str]:
    """The api image's CMD after ``uvicorn``, with host and port replaced: a local replica runs
    the very command line the container runs."""
    cmd = read_dockerfile().stage("api").last("CMD").exec_form()
    if "uvicorn" not in cmd:
        raise AssertionError(f"api CMD does not run uvicorn: {cmd}")
    args = cmd[cmd.index("uvicorn") + 1 :]
    for flag, value in (("--host", host), ("--port", str(port))):
        if flag not in args:
            raise AssertionError(f"api CMD has no {flag}: {cmd}")
        args[args.index(flag) + 1] = value
    return args


# ----------------------------------------------------------------------------------- the app


def published_models(models_dir: Path) -> dict[str, Path]:
    """name → the latest version's model.onnx (versions are integers; a digest sits beside it)."""
    latest: dict[str, Path] = {}
    for path in sorted(models_dir.glob(f"*/*/{MODEL_FILENAME}")):
        if (
            not path.parent.name.isdigit()
            or not path.with_name(MODEL_FILENAME + DIGEST_SUFFIX).exists()
        ):
            continue
        name = path.parent.parent.name
        if name not in latest or int(path.parent.name) > int(latest[name].parent.name):
            latest[name] = path
    return latest


@functools.cache
def _app() -> Any:
    from service.app import create_app
    from service.settings import Settings

    return create_app(Settings(models_dir=Path("/nonexistent-models-dir")))


def app_serves(method: str, path: str) -> bool:
    """Whether ``create_app``'s router fully matches this method and concrete path (e.g.
    'POST /v1/models/tiny-relu/classify'), asked the way Starlette routes a request; no models
    are loaded."""
    from starlette.routing import Match

    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] == Match.FULL for route in _app().router.routes)


def url_path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


def start_replica(
    python: str, port: int, models_dir: Path, log_path: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """One api replica on 127.0.0.1:port, run with the api image's own uvicorn command line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACTLAB_")}
    env.update({"ACTLAB_MODELS_DIR": str(models_dir), "PYTHONUNBUFFERED": "1"})
    env.update({f"ACTLAB_{key.upper()}": value for key, value in settings.items()})
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [python, "-m", "uvicorn", *uvicorn_args_from_dockerfile("127.0.0.1", port)],
            env=env,
            cwd=log_path.parent,  # not the repo: the replica must not import from the source tree
            stdout=log,
            stderr=subprocess.STDOUT,
        )
