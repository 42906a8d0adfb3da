from pushsource.ops.cli import main

raise SystemExit(main())
