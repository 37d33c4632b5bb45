"""The web UI in a real browser: headless Chromium (Debian's /usr/bin/chromium)
driven by playwright-core (tests/browser) against a real loomd and agent.

This file sets up the cluster and the runs; tests/browser/ui.test.mjs drives
the browser, creating the files the tasks wait on one by one, and fails with
the step that broke. scripts/install-deps.sh installs chromium and runs
`npm ci` in tests/browser."""
import json
import os
import subprocess
import tempfile
import unittest

from loomtest import SOURCE, ClusterTest, DEADLINE

BROWSER = os.path.join(SOURCE, "tests", "browser")
CHROMIUM = os.environ.get("LOOM_CHROMIUM", "/usr/bin/chromium")

GATED = """pipeline: gated
env:
  GATE: {gate}
tasks:
  t1:
    run: "while [ ! -e $GATE/t1 ]; do sleep 0.02; done; seq 1 3000 > out.bin"
    outputs: [out.bin]
  t2:
    needs: t1
    run: "while [ ! -e $GATE/t2 ]; do sleep 0.02; done"
  t3:
    needs: t1
    run: "while [ ! -e $GATE/t3 ]; do sleep 0.02; done"
  t4:
    needs: [t2, t3]
    run: "while [ ! -e $GATE/t4 ]; do sleep 0.02; done"
  logger:
    run: |
      for i in 1 2 3; do
        while [ ! -e $GATE/line$i ]; do sleep 0.02; done
        echo "line $i of the live log"
      done
"""


def wide_dag(name, layers, width, run="true"):
    """layers x width tasks; each needs two tasks of the layer before."""
    lines = ["pipeline: %s" % name, "tasks:"]
    for l in range(layers):
        for i in range(width):
            lines.append("  l%02d_t%02d:" % (l, i))
            lines.append("    run: %s" % json.dumps(run))
            if l:
                a, b = (i * 7) % width, (i * 13 + 5) % width
                needs = sorted({"l%02d_t%02d" % (l - 1, a), "l%02d_t%02d" % (l - 1, b)})
                lines.append("    needs: [%s]" % ", ".join(needs))
    return "\n".join(lines) + "\n"


class BrowserTest(ClusterTest):
    AGENTS = {"a1": 4}

    def test_ui_in_chromium(self):
        for what, path in (("chromium", CHROMIUM),
                           ("playwright-core", os.path.join(BROWSER, "node_modules",
                                                            "playwright-core"))):
            if not os.path.exists(path):
                self.fail("%s is missing (%s): run scripts/install-deps.sh" % (what, path))
        gate = tempfile.mkdtemp(prefix="gate-", dir=self.c.tmp)
        self.c.submit(GATED.format(gate=gate))
        gated = self.c.start_run("gated")
        # 1,000 tasks: ui.test.mjs starts its run once the gated run is done.
        self.c.submit(wide_dag("big", 40, 25))
        scenario = {"url": self.c.url, "token": self.c.token, "gate": gate,
                    "gated_run": gated, "big_pipeline": "big", "chromium": CHROMIUM,
                    "downloads": os.path.join(self.c.tmp, "downloads")}
        p = subprocess.run(["node", os.path.join(BROWSER, "ui.test.mjs")],
                           input=json.dumps(scenario), text=True, capture_output=True,
                           timeout=DEADLINE * 6)
        print(p.stdout)
        if p.returncode != 0:
            self.fail("ui.test.mjs exited %d:\n%s" % (p.returncode, p.stderr))


if __name__ == "__main__":
    unittest.main()
