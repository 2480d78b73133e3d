import sys

from monitor_manager.cli import main

sys.exit(main())
