"""`python -m avatar_meta.world`: the same as the `avatar-meta-world` executable."""

import sys

from avatar_meta.world.launcher import main

if __name__ == "__main__":
    sys.exit(main())
