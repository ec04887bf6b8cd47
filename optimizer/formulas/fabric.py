"""Scale-out network fabric: switches, links and optics of a fat-tree (folded Clos), with cost
and power (issue 10, 'Network fabric').

Conventions: counts, USD, watts. ``n_nodes`` may be a numpy array (one design per row); the
switch radix, NICs per node and oversubscription are scalars.

Model (the rules NVIDIA's DGX SuperPOD reference architectures follow):

* Leaf switches have k ports: d = floor(k o / (1 + o)) down to nodes and u = k - d up, for a
  leaf oversubscription o (down:up; o = 1 is non-blocking). Upper tiers are non-blocking.
* Rail-optimised: NIC r of every node goes to a leaf of rail r, so each rail needs
  ceil(nodes / d) leaves and leaves = rails x ceil(nodes / d) (a scalable unit, SU, is d nodes
  and one leaf per rail). Not rail-optimised: leaves = ceil(nodes x NICs / d).
* Leaves are provisioned for a full SU: every leaf has all u uplinks cabled ('the fabric should
  be designed to support the full SU, including leaf switches and leaf-spine cables', DGX
  SuperPOD H100 RA, 'Network Fabrics').
* Tiers: 1 when all endpoints fit one switch (nodes x NICs <= k); 2 while leaves <= k (a spine
  must reach every leaf); t while leaves <= k (k/2)^(t-2) (3 tiers: pods of k/2 leaves, up to
  k pods), up to MAX_TIERS.
* Two tiers: spines = the smallest divisor of u that is >= ceil(leaves x u / k), so each leaf
  spreads its uplinks evenly over the spines (the SuperPOD H100 RA's 3-SU design: 24 leaves
  x 32 uplinks fit 12 spines, yet it uses 16).
* Three or more tiers: each middle layer has (links from below) / (k/2) switches (k/2 down,
  k/2 up); the top layer (cores) = (links from below) / k. ``spine`` counts every middle
  layer, ``links_spine_core`` every link above the leaves' uplinks.
* Optics: every switch port in use takes a transceiver port (twin-port modules serve 2);
  every node NIC one single-port module; every link one cable.
Check: DGX SuperPOD H100 RA Table 4 (1-4 SUs of 32 nodes: 8/16/24/32 leaves, 4/8/16/16
spines) and DGX SuperPOD B200 RA (2-64 SUs up to 16,384 GPUs, three tiers from 16 SUs), in
tests/test_system.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.formulas._checks import scalar_or_array as _out

from optimizer.errors import ClusteroptError

MAX_TIERS = 6




@dataclass(frozen=True)
class FabricDesign:
    """Counts, cost (USD) and power (W) of one fat-tree per node count. ``switches`` = leaf +
    spine + core; ``capex_usd`` = switches + transceivers + cables."""

    tiers: object
    leaf: object
    spine: object
    core: object
    switches: object
    links_node_leaf: object
    links_leaf_spine: object
    links_spine_core: object
    switch_transceivers: object
    node_transceivers: object
    cables: object
    capex_usd: object
    power_w: object

    def as_dict(self, i: int | None = None) -> dict:
        """Plain numbers (row ``i`` when the design is per row)."""
        out = {}
        for k, v in self.__dict__.items():
            a = np.asarray(v)
            x = a[i] if (i is not None and a.ndim) else a
            out[k] = float(x) if k in ("capex_usd", "power_w") else int(round(float(x)))
        return out


def leaf_ports(radix: int, oversubscription: float = 1.0) -> tuple[int, int]:
    """(down, up) ports of a leaf of ``radix`` ports at a down:up oversubscription."""
    if int(radix) != radix or radix < 2:
        raise ClusteroptError("radix", f"must be an integer >= 2 (got {radix!r})", "allowed: switch port count")
    if not oversubscription >= 1:
        raise ClusteroptError("oversubscription", f"must be >= 1 (got {oversubscription!r})", "allowed: 1 (non-blocking) or more")
    down = int(np.floor(radix * oversubscription / (1.0 + oversubscription) + 1e-9))
    down = min(max(down, 1), radix - 1)
    return down, radix - down


def fat_tree(n_nodes, nics_per_node: int, radix: int, *, oversubscription: float = 1.0,
             rail_optimized: bool = True, switch_price_usd: float = 0.0, switch_power_w: float = 0.0,
             switch_optic_ports: int = 2, switch_optic_price_usd: float = 0.0, switch_optic_power_w: float = 0.0,
             node_optic_price_usd: float = 0.0, node_optic_power_w: float = 0.0,
             cable_price_usd: float = 0.0) -> FabricDesign:
    """The fat-tree for ``n_nodes`` nodes of ``nics_per_node`` scale-out NICs each (one port
    per NIC at the switch's port speed), from switches of ``radix`` ports; see the module
    docstring for the rules. Raises when more than MAX_TIERS tiers would be needed."""
    n = np.asarray(n_nodes, dtype=np.int64)
    if np.any(n < 1):
        raise ClusteroptError("n_nodes", f"must be >= 1 (got {n_nodes!r})", "allowed: >= 1")
    if int(nics_per_node) != nics_per_node or nics_per_node < 1:
        raise ClusteroptError("nics_per_node", f"must be a positive integer (got {nics_per_node!r})", "allowed: >= 1")
    k = int(radix)
    d, u = leaf_ports(k, oversubscription)
    rails = int(nics_per_node)
    endpoints = n * rails
    if rail_optimized:
        leaf = rails * (-(-n // d))
    else:
        leaf = -(-endpoints // d)
    half = k // 2
    one = endpoints <= k
    # t tiers hold up to k * (k/2)^(t-2) leaves (t >= 2)
    tiers = np.where(one, 1, 2)
    cap = k
    for t in range(3, MAX_TIERS + 1):
        cap *= half
        tiers = np.where(~one & (tiers == t - 1) & (leaf > cap // half), t, tiers)
    if np.any(~one & (leaf > k * half ** (MAX_TIERS - 2))):
        worst = int(np.max(n))
        raise ClusteroptError("n_nodes", f"{worst} nodes x {rails} NICs need more than {MAX_TIERS} tiers of "
                              f"{k}-port switches", "allowed: fewer nodes or a larger radix")
    leaf = np.where(one, 1, leaf)
    up_links = np.where(one, 0, leaf * u)
    # two tiers: smallest divisor of u that is >= ceil(leaf*u/k)
    divisors = np.array([x for x in range(1, u + 1) if u % x == 0], dtype=np.int64)
    need = -(-up_links // k)
    spine2 = divisors[np.minimum(np.searchsorted(divisors, need), len(divisors) - 1)]
    # three or more tiers: each middle layer k/2 down, k/2 up; the top layer k down
    spine_mid = np.zeros_like(up_links)
    spine_core = np.zeros_like(up_links)
    core = np.zeros_like(up_links)
    links = up_links.copy()
    for layer in range(2, MAX_TIERS):
        active = tiers > layer                    # this middle layer exists
        count = np.where(active, -(-links // half), 0)
        spine_mid += count
        links = count * half
        spine_core += np.where(active, links, 0)
        top = active & (tiers == layer + 1)
        core = np.where(top, -(-links // k), core)
    spine = np.where(one, 0, np.where(tiers == 2, spine2, spine_mid))
    switches = leaf + spine + core
    links = endpoints + up_links + spine_core
    switch_ends = endpoints + 2 * up_links + 2 * spine_core
    sw_optics = -(-switch_ends // int(switch_optic_ports))
    node_optics = endpoints
    capex = (switches * switch_price_usd + sw_optics * switch_optic_price_usd
             + node_optics * node_optic_price_usd + links * cable_price_usd)
    power = switches * switch_power_w + sw_optics * switch_optic_power_w + node_optics * node_optic_power_w
    return FabricDesign(tiers=_out(tiers), leaf=_out(leaf), spine=_out(spine), core=_out(core),
                        switches=_out(switches), links_node_leaf=_out(endpoints),
                        links_leaf_spine=_out(up_links), links_spine_core=_out(spine_core),
                        switch_transceivers=_out(sw_optics), node_transceivers=_out(node_optics),
                        cables=_out(links), capex_usd=_out(capex), power_w=_out(power))
