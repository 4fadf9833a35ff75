"""The problems behind the embedded tasks: a seeded generator of short arithmetic and string problems.

Every problem has one checkable answer and a worked solution in a single regular format,
``"{expression}={answer}. The answer is {answer}."`` (e.g. ``"23+58=81. The answer is 81."``). The ``sum`` category
(requested by name) writes a running-sum trace as its expression, in an order drawn per problem
(``"12+5=17, 17+7=24. The answer is 24."``): the one category where samples can reach an answer along different paths.

Splits are disjoint by construction: a problem belongs to ``train``, ``val`` or ``test`` according to
a stable hash (SHA-256) of its category and question, whatever the seed. The seed only decides which
problems of that split are drawn and in what order. :class:`ltune.datamodules.EmbeddedTasks` turns them into rows.

Modules: ``generate`` (the generator and the phrasings) and ``solve`` (a question's answer from its text alone).
"""

from ltune.problems.generate import (
    CATEGORIES,
    DIFFICULTIES,
    PHRASINGS,
    TRACE_CATEGORIES,
    Problem,
    generate_problems,
    split_of,
)
from ltune.problems.solve import solve

__all__ = [
    "CATEGORIES",
    "DIFFICULTIES",
    "PHRASINGS",
    "TRACE_CATEGORIES",
    "Problem",
    "generate_problems",
    "solve",
    "split_of",
]
