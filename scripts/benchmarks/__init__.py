"""The benchmarks, one module each, all run through `scripts/bench.py NAME` (see its --help):

- `network`: SmolLM2 over 3 workers and a coordinator against single-process transformers (speed, a SIGKILL
  mid-generation, the gas of a whole job), as a client of the OpenAI API sees it;
- `workers`: the worker data plane alone (client relay vs push mode, compute share, /health during a prefill);
- `hop`: one hop's data-plane cost through a worker whose block answers at once.
"""
