"""The RLHF arc in miniature (paper §3.1-3.2): SFT, helpfulness and safety reward models, best-of-N
and PPO with a KL penalty, DPO as a later contrast; ``pipeline`` trains the shipped models, ``report``
writes their figures and cards."""
