from ollama_openai_bridge.cli import main

raise SystemExit(main())
