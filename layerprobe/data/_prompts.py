"""The LLaVA-1.5 evaluation prompts (user text only; the model adapter adds template and image).

    short_answer("What is on the plate?")   # "What is on the plate?\nAnswer the question using a single word or phrase."
    unanswerable("What time is it?")        # adds "When the provided information is insufficient, ..."
"""

SHORT_ANSWER = "Answer the question using a single word or phrase."
UNANSWERABLE = "When the provided information is insufficient, respond with 'Unanswerable'."


def short_answer(question: str, *lines: str) -> str:
    """The question, any extra lines (OCR tokens), then the short-answer instruction."""
    return "\n".join((question, *lines, SHORT_ANSWER))


def unanswerable(question: str) -> str:
    # VizWiz in LLaVA-1.5 and OK-VQA in lmms-eval: the model may decline.
    return short_answer(question, UNANSWERABLE)
