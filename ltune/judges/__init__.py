"""AI labelers (RLAIF, Lee et al., 2023, arXiv:2309.00267): a pair's preference read from an LM's probabilities of
"1" and "2", averaged over both orders to remove position bias, and a 1-10 rating rescaled to [-1, 1] (d-RLAIF).

``LMJudge`` runs a local causal LM (any ``Backbone``: the tiny preset, a Hub id, a folder, the policy itself);
``APIJudge`` asks an OpenAI-compatible server (vLLM, TGI, llama.cpp, OpenAI) through the ``openai`` client.
"""

from ltune.judges.api import APIJudge
from ltune.judges.base import COT_REQUEST, ENDING, PREAMBLE, RATING_PREAMBLE, PairJudge
from ltune.judges.local import LMJudge
from ltune.judges.verifier import VerifierJudge

__all__ = ["COT_REQUEST", "ENDING", "PREAMBLE", "RATING_PREAMBLE", "APIJudge", "LMJudge", "PairJudge", "VerifierJudge"]
