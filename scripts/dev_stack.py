"""`python scripts/dev_stack.py ...`: the dev stack CLI (devstack.cli; README "Local development stack")."""
from devstack.cli import main

raise SystemExit(main())
