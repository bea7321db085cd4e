import sys

from fruitlens.cli import main

if __name__ == "__main__":  # not when a spawned picture process imports this module (fruitlens.batch.engine)
    sys.exit(main())
