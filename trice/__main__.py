from trice._cli import main

raise SystemExit(main())
