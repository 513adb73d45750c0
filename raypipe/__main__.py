from raypipe.run import main

raise SystemExit(main())
