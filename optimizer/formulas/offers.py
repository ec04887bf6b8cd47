"""Which layouts an offer can run, and how a commitment is billed (issue 17).

Conventions: counts of GPUs, hours, USD. Arrays broadcast (one row per candidate layout).

An offer gives GPUs in instances of ``gpus_per_instance``. Its interconnect says how far a job
may spread (catalog/README.md, 'Offers'):

* ``single_gpu`` - a one-GPU pod: jobs of one GPU only.
* ``node``       - one instance whose GPUs share the scale-up link (NVLink, or PCIe where the
                   accelerator has none), no multi-node fabric: jobs within one instance, tensor
                   parallelism inside it.
* ``cluster``    - instances on a fabric: multi-instance jobs, up to the offer's largest
                   contiguous allocation ``max_gpus`` (None: no stated limit).

A job of n GPUs that spans several instances is a multi-node job: only a cluster offer can
place it, because its collectives need the fabric that the step-time model assumes. Tensor
parallelism never leaves an instance (TP <= GPUs per instance), as Megatron-LM recommends
(Narayanan et al. 2021, Sec. 3.2: 'tensor model parallelism ... within a multi-GPU server').
"""

from __future__ import annotations

import numpy as np

from optimizer.formulas._checks import as_array as _arr, scalar_or_array as _out

#: Integer codes of the interconnect classes, in increasing reach.
INTERCONNECT_CODES = {"single_gpu": 0, "node": 1, "cluster": 2}
NO_LIMIT = np.iinfo(np.int64).max


def offer_runs_layout(n_gpus, tp, interconnect_code, gpus_per_instance, max_gpus):
    """True where an offer can place a job of ``n_gpus`` GPUs with tensor-parallel degree ``tp``.

    Rules (module docstring): TP <= GPUs per instance; a job larger than one instance needs a
    cluster offer (code 2) and at most ``max_gpus`` GPUs (pass NO_LIMIT or None for no limit).
    Returns a bool array (or bool) broadcast over the inputs.
    """
    n = np.asarray(n_gpus, dtype=np.int64)
    t = np.asarray(tp, dtype=np.int64)
    code = np.asarray(interconnect_code, dtype=np.int64)
    gpi = np.asarray(gpus_per_instance, dtype=np.int64)
    cap = np.asarray(NO_LIMIT if max_gpus is None else max_gpus, dtype=np.int64)
    one_instance = n <= gpi
    ok = (t <= gpi) & (one_instance | ((code == INTERCONNECT_CODES["cluster"]) & (n <= cap)))
    return ok if ok.ndim else bool(ok)


def committed_billed_hours(hours, term_hours):
    """Hours billed under a commitment of ``term_hours`` (0 = none): whole terms,
    ceil(hours / term) x term, since a reservation or committed-use contract is paid for its
    full term whether used or not (AWS Savings Plans and Reserved Instances, GCP committed use
    discounts, Azure reservations: 1- or 3-year terms, billed hourly for the whole term).
    Without a term the hours are billed as used."""
    h = _arr("hours", hours)
    term = _arr("term_hours", term_hours)
    with np.errstate(divide="ignore", invalid="ignore"):
        whole = np.where(term > 0, np.ceil(h / np.where(term > 0, term, 1.0) - 1e-12) * term, h)
    return _out(np.maximum(whole, h))


def commitment_break_even_hours(term_hours, committed_usd_per_hour, on_demand_usd_per_hour):
    """Run length (hours) above which one commitment term costs less than paying on demand:
    term x committed rate / on-demand rate (for runs up to one term; beyond it a second term
    is billed). Committing beats on-demand for runs between this and the term."""
    term = _arr("term_hours", term_hours, lo_open=True)
    c = _arr("committed_usd_per_hour", committed_usd_per_hour, lo_open=True)
    od = _arr("on_demand_usd_per_hour", on_demand_usd_per_hour, lo_open=True)
    return _out(term * c / od)
