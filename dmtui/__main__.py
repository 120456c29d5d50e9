from dmtui.cli import main

raise SystemExit(main())
