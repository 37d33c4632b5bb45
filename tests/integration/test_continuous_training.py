"""The continuous-training example's story, as a user runs it: first
training, normal data, no drift, then shifted data -> drift -> retrain ->
a new champion (dag-examples/continuous-training/story.sh)."""
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from loomtest import BUILD, SOURCE  # noqa: E402

STORY = os.path.join(SOURCE, "dag-examples", "continuous-training", "story.sh")


def have_sklearn():
    return subprocess.run(["/usr/bin/python3", "-c", "import sklearn"],
                          capture_output=True).returncode == 0


class ContinuousTraining(unittest.TestCase):
    def test_the_story(self):
        # scripts/install-deps.sh installs it; say so rather than skip.
        self.assertTrue(have_sklearn(), "Debian's python3-sklearn is missing: run "
                                        "scripts/install-deps.sh")
        p = subprocess.run(["bash", STORY, BUILD], capture_output=True, text=True,
                           timeout=240)
        out = p.stdout
        self.assertEqual(p.returncode, 0, out[-4000:] + p.stderr[-2000:])
        self.assertIn("story: the drift-triggered retrain became the champion", out)
        # Step 3: no drift -> filtered; step 4: drift -> started.
        self.assertIn("churn-train: filtered (when: event.drift is false", out)
        self.assertIn("started by event churn-drift", out)
        self.assertIn("registered as model churn version", out)


if __name__ == "__main__":
    unittest.main()
