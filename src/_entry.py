"""Imported first by every entry script in src/: the scripts then run from a checkout, with or
without `pip install -e .` (src/ goes on sys.path), and conf/paths finds the repository root
(PROJECT_ROOT)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
