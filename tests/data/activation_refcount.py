"""How tests/data/activation_torch_reference.csv was made (not run by the test suite: it
needs PyTorch, which clusteropt does not depend on).

    /tmp/refvenv/bin/python tests/data/activation_refcount.py > tests/data/activation_torch_reference.csv
    (torch 2.13.0+cpu)

One transformer layer on one tensor-parallel rank, written out op by op in the Megatron-LM
structure (LayerNorm -> Q, K, V linears -> scores -> softmax -> dropout -> AV -> output
projection -> dropout -> residual -> LayerNorm -> fc1 -> GeLU (or SwiGLU) -> fc2 ->
dropout -> residual), is run forward in bf16 under ``torch.autograd.graph.saved_tensors_hooks``;
the bytes of every distinct tensor autograd saves for the backward (deduplicated by
storage, parameters excluded) are summed. Dropout keeps a 1-byte boolean mask, as CUDA's
native_dropout does. ``flash`` uses ``F.scaled_dot_product_attention`` (causal, with
``enable_gqa``), which keeps Q, K, V, O and the fp32 log-sum-exp. ``per_token_stats_bytes``
are LayerNorm's mean/rstd, which Korthikanti et al. 2022 leave out.
"""

import torch
import torch.nn.functional as F

torch.manual_seed(0)


def drop(x, p=0.1):
    mask = torch.rand(x.shape) >= p          # a bool mask, like CUDA native_dropout
    return x * mask / (1 - p)


def layer_saved_bytes(s, b, h, a, f, t=1, kv=None, dropout=True, gated=False, flash=False):
    dt = torch.bfloat16
    kv = kv or a
    dh = h // a
    ah, kvh, fh = a // t, max(kv // t, 1), f // t
    p = lambda *shape: torch.randn(*shape, dtype=dt, requires_grad=True)  # noqa: E731
    ln1w, ln1b, ln2w, ln2b = p(h), p(h), p(h), p(h)
    wq, wk, wv, wo = p(ah * dh, h), p(kvh * dh, h), p(kvh * dh, h), p(h, ah * dh)
    w1, w2 = p(2 * fh if gated else fh, h), p(h, fh)
    params = {x.data_ptr() for x in (ln1w, ln1b, ln2w, ln2b, wq, wk, wv, wo, w1, w2)}
    x = torch.randn(s, b, h, dtype=dt, requires_grad=True)
    saved = {}

    def pack(tensor):
        if tensor.data_ptr() not in params and tensor.data_ptr() not in saved:
            saved[tensor.data_ptr()] = (tensor.numel() * tensor.element_size(), tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t_: t_):
        y = F.layer_norm(x, (h,), ln1w, ln1b)
        q = F.linear(y, wq).view(s, b * ah, dh).transpose(0, 1)
        k = F.linear(y, wk).view(s, b * kvh, dh).transpose(0, 1)
        v = F.linear(y, wv).view(s, b * kvh, dh).transpose(0, 1)
        if flash:
            ctx = F.scaled_dot_product_attention(q.view(b, ah, s, dh), k.view(b, kvh, s, dh),
                                                 v.view(b, kvh, s, dh), is_causal=True,
                                                 enable_gqa=kvh != ah).reshape(b * ah, s, dh)
        else:
            if kvh != ah:   # repeat KV heads to the query heads (Megatron-Core / HF repeat_kv)
                k = k.reshape(b, kvh, 1, s, dh).expand(b, kvh, ah // kvh, s, dh).reshape(b * ah, s, dh)
                v = v.reshape(b, kvh, 1, s, dh).expand(b, kvh, ah // kvh, s, dh).reshape(b * ah, s, dh)
            probs = torch.softmax(torch.bmm(q, k.transpose(1, 2)) / dh ** 0.5, dim=-1)
            if dropout:
                probs = drop(probs)
            ctx = torch.bmm(probs, v)
        o = F.linear(ctx.transpose(0, 1).reshape(s, b, ah * dh), wo)
        x2 = x + (drop(o) if dropout else o)
        u = F.linear(F.layer_norm(x2, (h,), ln2w, ln2b), w1)
        if gated:
            g, up = u.chunk(2, dim=-1)
            act = F.silu(g) * up
        else:
            act = F.gelu(u)
        z = F.linear(act, w2)
        _ = x2 + (drop(z) if dropout else z)
    total = sum(v_[0] for v_ in saved.values())
    stats = sum(v_[0] for v_ in saved.values() if v_[1][-1] == 1)
    return total, stats


CONFIGS = [
    dict(s=512, b=2, h=256, a=8, f=1024),
    dict(s=512, b=2, h=256, a=8, f=1024, t=4),
    dict(s=512, b=2, h=256, a=8, f=1024, kv=2),
    dict(s=512, b=2, h=256, a=8, f=1024, dropout=False),
    dict(s=512, b=2, h=256, a=8, f=768, gated=True, dropout=False),
    dict(s=512, b=2, h=256, a=8, f=1024, flash=True),
    dict(s=512, b=2, h=256, a=8, f=768, kv=2, gated=True, dropout=False, flash=True),
    dict(s=256, b=1, h=512, a=16, f=2048, t=2, kv=4, flash=True),
]

if __name__ == "__main__":
    print("seq_len,micro_batch,hidden,heads,ffn_size,tp,kv_heads,dropout,gated,flash,saved_bytes,per_token_stats_bytes")
    for c in CONFIGS:
        tot, st = layer_saved_bytes(**c)
        print(f"{c['s']},{c['b']},{c['h']},{c['a']},{c['f']},{c.get('t', 1)},{c.get('kv', c['a'])},"
              f"{'yes' if c.get('dropout', True) else 'no'},{'yes' if c.get('gated') else 'no'},"
              f"{'yes' if c.get('flash') else 'no'},{tot},{st}")
