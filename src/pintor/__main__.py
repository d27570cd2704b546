import sys

from pintor.cli import main

sys.exit(main())
