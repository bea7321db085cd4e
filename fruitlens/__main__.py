import sys

from fruitlens.cli import main

sys.exit(main())
