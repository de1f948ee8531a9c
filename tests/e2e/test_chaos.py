"""The short chaos run: every kind of fault at least once, then every invariant checked."""
import json
import subprocess
import sys

import pytest

from tests.support.paths import ROOT


@pytest.mark.timeout(400)
def test_every_invariant_holds_through_a_short_chaos_run(tmp_path):
    run = subprocess.run([sys.executable, "-m", "chaos", "--quick", "--var-dir", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=380)
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["broken"] == []
    rows = {what: value for what, value, _ in report["rows"]}
    assert rows["orders"] == 80 and rows["confirmed"] + rows["failed"] == 80
    assert rows["worker restarts"] >= 4  # the junk count is checked exactly in the report
