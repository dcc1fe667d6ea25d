"""What the notebooks use and nothing else imports: the learner checks, static figures, widgets,
the attention explorer and the student copies.

    checks    check a learner's component against the package, with a hint that names the mistake
    viz       static figures for notebooks 00–05
    widgets   the component explorers (norm, RoPE, activations, GQA, config)
    explorer  the attention explorer and the sampling playground (notebook 08)
    student   student copies of the notebooks, without the tagged solutions
"""
