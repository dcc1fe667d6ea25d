"""The model, piece by piece: what notebooks 02–06 build, with Meta's parameter names.

config       ModelArgs (Meta's params.json fields) and the Llama 1/2 presets
calc         exact parameter counts, memory, FLOPs and the carbon table, from a ModelArgs
norm         RMSNorm (and LayerNorm, for comparison)
rope         rotary position embeddings: Meta's interleaved pairs, and the HF permutation
ffn          the SwiGLU feed-forward and its hidden size
attention    grouped-query attention with an explicit KV cache
transformer  the block and the model: one forward pass that builds the mask and RoPE rows once
"""
