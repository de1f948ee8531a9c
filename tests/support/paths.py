from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: the cwd of every process we start
