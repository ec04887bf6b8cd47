"""Storage for a training run: dataset bytes, data-loading bandwidth, checkpoint capacity,
tier bandwidth and storage cost (issue 10, 'Storage and data loading').

Conventions: bytes, bytes/s, seconds, USD; TB = 1e12 bytes, TiB = 2^40 bytes (tiers that
scale with capacity quote MB/s per TiB). Every function accepts scalars or numpy arrays.
"""

from __future__ import annotations

import numpy as np

from optimizer.errors import ClusteroptError
from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out
from optimizer.units import GB, MB, TB, TIB

BYTES_PER_TOKEN_UINT16 = 2.0
"""Token ids stored as uint16 (vocabularies < 65,536: Megatron-LM's indexed dataset, nanoGPT's
``train.bin``). Larger vocabularies (Llama 3: 128,256) need uint32: 4 bytes/token."""
BYTES_PER_TOKEN_RAW_TEXT = 4.0
"""Raw UTF-8 text: about 4 characters (bytes) per BPE token for English (OpenAI tokenizer
documentation: 'one token generally corresponds to ~4 characters of text')."""
SECONDS_PER_MONTH = 365.25 / 12 * 86400.0




def bytes_per_token_for_vocab(vocab_size: int) -> float:
    """Smallest unsigned integer width holding every token id: 2 bytes up to 65,536 ids, else 4."""
    if vocab_size < 1:
        raise ClusteroptError("vocab_size", f"must be >= 1 (got {vocab_size!r})", "allowed: >= 1")
    return BYTES_PER_TOKEN_UINT16 if vocab_size <= 2**16 else 4.0


def dataset_bytes(tokens, bytes_per_token=BYTES_PER_TOKEN_UINT16, epochs=1.0):
    """Bytes of the training data on disk: unique tokens x bytes per token.

    ``tokens`` is the number of tokens trained on; with ``epochs`` > 1 the data is repeated,
    so the stored set is tokens / epochs. Units: bytes.
    """
    t = _arr("tokens", tokens)
    b = _arr("bytes_per_token", bytes_per_token, lo_open=True)
    e = _arr("epochs", epochs, lo_open=True)
    return _out(t / e * b)


def read_bytes_per_s_per_node(tokens_per_s, n_nodes, bytes_per_token=BYTES_PER_TOKEN_UINT16):
    """Data-loading read bandwidth each node needs to keep up: tokens/s x bytes/token / nodes.

    Every token of the global batch is read once per step (data-parallel ranks read disjoint
    shards); TP/PP/CP ranks of one replica share it, which this per-node average covers.
    """
    tps = _arr("tokens_per_s", tokens_per_s)
    n = _arr("n_nodes", n_nodes, lo_open=True)
    return _out(tps * _arr("bytes_per_token", bytes_per_token, lo_open=True) / n)


def checkpoint_capacity_bytes(checkpoint_total_bytes, retained=3):
    """Capacity for the K most recent checkpoints kept (plus the one being written, which
    must fit before the oldest is deleted): (K + 1) x checkpoint bytes."""
    c = _arr("checkpoint_total_bytes", checkpoint_total_bytes)
    k = _arr("retained", retained, lo=1.0)
    return _out((k + 1.0) * c)


def tier_bandwidth_bytes_per_s(n_nodes, node_network_bytes_per_s, *, per_client_bytes_per_s=None,
                               aggregate_bytes_per_s=None, mb_per_s_per_tib=None, capacity_bytes=None,
                               local_bytes_per_s_per_node=None):
    """Bandwidth a job of ``n_nodes`` nodes gets from a storage tier, bytes/s:

        per node  = min(node network to storage, tier per-client limit)
        tier      = fixed aggregate, or MB/s per TiB x provisioned TiB (capacity-scaled tiers,
                    e.g. FSx for Lustre), or unlimited (object storage)
        bandwidth = min(n_nodes x per node, tier).
    Node-local NVMe: n_nodes x the node's drive bandwidth (no network, no shared limit).
    """
    n = _arr("n_nodes", n_nodes, lo_open=True)
    if local_bytes_per_s_per_node is not None:
        return _out(n * _arr("local_bytes_per_s_per_node", local_bytes_per_s_per_node, lo_open=True))
    per_node = _arr("node_network_bytes_per_s", node_network_bytes_per_s, lo_open=True)
    if per_client_bytes_per_s is not None:
        per_node = np.minimum(per_node, _arr("per_client_bytes_per_s", per_client_bytes_per_s, lo_open=True))
    bw = n * per_node
    if aggregate_bytes_per_s is not None:
        bw = np.minimum(bw, _arr("aggregate_bytes_per_s", aggregate_bytes_per_s, lo_open=True))
    elif mb_per_s_per_tib is not None:
        if capacity_bytes is None:
            raise ClusteroptError("capacity_bytes", "a capacity-scaled tier needs the provisioned capacity",
                                  "allowed: > 0 bytes")
        tier = _arr("mb_per_s_per_tib", mb_per_s_per_tib, lo_open=True) * MB * (
            _arr("capacity_bytes", capacity_bytes, lo_open=True) / TIB)
        bw = np.minimum(bw, tier)
    return _out(bw)


def storage_cost_usd(capacity_bytes, usd_per_tb_month, seconds):
    """Rented storage: provisioned TB x $/TB-month x months (1 month = 365.25/12 days)."""
    c = _arr("capacity_bytes", capacity_bytes)
    p = _arr("usd_per_tb_month", usd_per_tb_month)
    s = _arr("seconds", seconds)
    return _out(c / TB * p * s / SECONDS_PER_MONTH)


def egress_cost_usd(n_bytes, usd_per_gb):
    """Data moved out of the provider: GB x $/GB (1 GB = 1e9 bytes, as providers bill)."""
    return _out(_arr("n_bytes", n_bytes) / GB * _arr("usd_per_gb", usd_per_gb))
