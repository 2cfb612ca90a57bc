from ollama_openai_proxy.cli import main

raise SystemExit(main())
