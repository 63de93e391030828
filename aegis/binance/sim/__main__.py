"""``python -m aegis.binance.sim``: same as ``aegis-kernel simulate``."""

import sys

from aegis.binance.sim.cli import main

sys.exit(main())
