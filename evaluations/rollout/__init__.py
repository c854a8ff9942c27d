"""The rollout demo: two canary rollouts against the fake LLM (``rag rollout demo``)."""
