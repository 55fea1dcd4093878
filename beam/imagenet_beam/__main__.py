import sys

from imagenet_beam.cli import main

sys.exit(main())
