import sys

from flowlog.cli import main

sys.exit(main())
