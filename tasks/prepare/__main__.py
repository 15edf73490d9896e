import sys

from tasks.prepare import main

sys.exit(main())
