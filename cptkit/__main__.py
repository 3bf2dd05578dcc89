"""`python -m cptkit ...` (what torchrun runs: `torchrun ... -m cptkit train CONFIG`)."""

import sys

from cptkit.cli import main

sys.exit(main())
