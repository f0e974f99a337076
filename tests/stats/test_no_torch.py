import subprocess
import sys


def test_stats_and_world_registry_import_without_torch():
    # stats/ is pure numpy/scipy, and validating a spec against the world registry must not
    # pay torch's import cost (seconds) in the server's request path.
    code = "import sys, stats, worlds; worlds.world_ids(); worlds.resolve; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
