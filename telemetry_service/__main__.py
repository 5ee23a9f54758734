from telemetry_service.cli import main

raise SystemExit(main())
