"""`make demo`: the whole loop under the real Airflow scheduler (devstack.demo)."""
from devstack.demo import main

raise SystemExit(main())
