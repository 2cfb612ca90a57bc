"""``python -m ollama_openai_proxy``: the old name of ``python -m ollama_openai_bridge``."""

from ollama_openai_proxy import main

raise SystemExit(main())
