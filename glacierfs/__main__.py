import sys

from glacierfs.cli import main

sys.exit(main())
