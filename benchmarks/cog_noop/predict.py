"""No-op Cog predictor used by ``benchmarks/serving_overhead.py``.

Mirrors fluxserve's ``fluxserve-fixtures/noop`` fixture: it returns its prompt
unchanged, so a benchmark against it measures serving overhead only.
"""

from cog import BasePredictor


class Predictor(BasePredictor):
    def setup(self) -> None:
        pass

    def predict(self, prompt: str = "") -> str:
        return prompt
