import sys

from llamavid_eval.tasks.prepare import main

sys.exit(main())
