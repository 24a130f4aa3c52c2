"""`python -m wa_gateway`: the `wa-gateway` command."""

import sys

from .cli import main

sys.exit(main())
