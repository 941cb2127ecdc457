"""``python -m slm_mux``: the same as the ``slm-mux`` command."""

from slm_mux.cli import main

raise SystemExit(main())
