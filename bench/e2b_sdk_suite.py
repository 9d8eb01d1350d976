"""Run E2B's own Python SDK tests, unmodified, against e2b-local and print the tally.

    python bench/e2b_sdk_suite.py PATH_TO_E2B_CHECKOUT [--templates] [--show-output] [-- PYTEST_ARGS...]

PATH is a checkout of github.com/e2b-dev/E2B (never committed here). The tests are copied to a
temporary directory (the checkout is not touched), one e2b-local is started with the launcher,
and pytest runs the sandbox lifecycle, commands, files and list/info/kill tests, sync and async,
with the suite's own pytest.ini, pointed at e2b-local through E2B_API_URL / E2B_SANDBOX_URL /
E2B_API_KEY. Prints passed/failed/errors/skipped and the failing test ids. `--templates` runs
the template build tests instead (sync and async template_*/ and shared/template/).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from remote_agents_local.e2b_local import launcher

# What e2b-local emulates: lifecycle, commands, files, list/info/kill (not templates, volumes,
# secrets, git helpers, PTY, metrics, network or snapshots of memory).
SELECTED = [
    "{kind}/api_{kind}/test_sbx_info.py", "{kind}/api_{kind}/test_sbx_kill.py", "{kind}/api_{kind}/test_sbx_list.py",
    "{kind}/sandbox_{kind}/commands", "{kind}/sandbox_{kind}/files",
    "{kind}/sandbox_{kind}/test_create.py", "{kind}/sandbox_{kind}/test_connect.py",
    "{kind}/sandbox_{kind}/test_kill.py", "{kind}/sandbox_{kind}/test_timeout.py",
    "{kind}/sandbox_{kind}/test_secure.py", "{kind}/sandbox_{kind}/test_snapshot_filesystem_only.py",
]
SELECTED_TEMPLATES = ["{kind}/template_{kind}", "shared/template"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--show-output", action="store_true", help="print pytest's own report too")
    parser.add_argument("--templates", action="store_true", help="the template build tests instead")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    args.pytest_args = extra
    tests = args.checkout / "packages" / "python-sdk" / "tests"
    ini = args.checkout / "packages" / "python-sdk" / "pytest.ini"
    if not tests.is_dir() or not ini.is_file():
        print(f"{args.checkout} is not a checkout of e2b-dev/E2B (no packages/python-sdk/tests)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "python-sdk"
        shutil.copytree(tests, copy / "tests")
        shutil.copy(ini, copy / "pytest.ini")
        chosen = SELECTED_TEMPLATES if args.templates else SELECTED
        selected = [str(copy / "tests" / s.format(kind=kind)) for kind in ("sync", "async") for s in chosen]
        selected = [s for s in dict.fromkeys(selected) if Path(s).exists()]
        with launcher.start(Path(tmp) / "e2b-local", extra_args=["--max-running", "100"]) as server:
            env = {k: v for k, v in os.environ.items() if k != "E2B_DEBUG"}
            env.update(server.env)
            run = subprocess.run(
                [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE", "--no-header",
                 "-o", "timeout=60", *selected, *args.pytest_args],
                cwd=copy, env=env, capture_output=True, text=True)
    output = run.stdout + run.stderr
    failing = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.M)
    summary = re.findall(r"^=*\s*(\d+ (?:passed|failed|errors?|skipped).*) in [\d.]+s", output, re.M)
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)",
                                                      summary[-1] if summary else "")}
    for test in failing:
        print(f"miss: {test.split('/tests/', 1)[-1]}")
    total = sum(counts.values())
    print(f"tally: {counts.get('passed', 0)} passed of {total} "
          f"({', '.join(f'{v} {k}' for k, v in counts.items())})")
    if args.show_output or not summary:
        print(output[-20000:] if args.show_output else output[-3000:])
    return 0 if counts and counts.get("passed", 0) == total else 1


if __name__ == "__main__":
    sys.exit(main())
