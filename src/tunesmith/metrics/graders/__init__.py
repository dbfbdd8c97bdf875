"""Graders (OpenAI's JSON shapes, parsed by ``tunesmith.core.config.graders``) as pure scoring.

``grade`` / ``grade_all`` score samples (``make_sample(reply_text)``) against dataset items. Models a grader needs
(a judge for score_model / label_model, an encoder for cosine similarity) are injected through ``GradingContext``;
the python grader runs in its own limited process (``sandbox``).
"""

from tunesmith.metrics.graders.grade import Graded, GraderSetupError, GradingContext, grade, grade_all
from tunesmith.metrics.graders.model_graders import Conversation, Judge
from tunesmith.metrics.graders.templates import make_sample, render
from tunesmith.metrics.graders.text_checks import MissingResource, load_wordnet

__all__ = [
    "Conversation",
    "Graded",
    "GraderSetupError",
    "GradingContext",
    "Judge",
    "MissingResource",
    "grade",
    "grade_all",
    "load_wordnet",
    "make_sample",
    "render",
]
