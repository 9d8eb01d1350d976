import sys
from pathlib import Path

# Pulumi runs infra/__main__.py with infra/ on sys.path (Pulumi.yaml: main: infra/); the tests do the same.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra"))
