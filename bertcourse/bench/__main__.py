"""python -m bertcourse.bench: see bertcourse/bench/__init__.py."""

from .cli import main

raise SystemExit(main())
