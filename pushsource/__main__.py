from pushsource.cli import main

raise SystemExit(main())
