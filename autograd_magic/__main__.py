"""``python -m autograd_magic run script.py [args ...]``: see `autograd_magic.script`."""

import sys

from autograd_magic.script import main

sys.exit(main())
