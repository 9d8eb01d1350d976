"""Load the envd Connect stubs that ship inside the e2b SDK without importing the SDK itself.

The stubs live in `e2b.envd.*`, but importing any submodule runs `e2b/__init__.py`, which imports
the whole client SDK (about 0.8 s, most of the server's start-up). The server needs only the stubs,
which import each other relatively, so in the server's own process `e2b` is registered as a bare
package over the same directory. Never call this where the real SDK is (or will be) used.
"""

from __future__ import annotations

import importlib.util
import sys
import types


def register_bare_sdk_package() -> None:
    if "e2b" in sys.modules:
        return  # the real SDK is loaded already: its submodules work as they are
    spec = importlib.util.find_spec("e2b")
    if spec is None or not spec.submodule_search_locations:
        return  # let the normal import fail with its own message
    package = types.ModuleType("e2b")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["e2b"] = package
